"""Exporting trained models for serving: SavedModel (TF Serving)."""

from reslstm_tf.export.saved_model import export_model, export_saved_model, video_to_segments

__all__ = ["export_model", "export_saved_model", "video_to_segments"]
