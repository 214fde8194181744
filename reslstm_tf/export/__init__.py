"""Exporting trained models for serving: SavedModel (TF Serving)."""

from reslstm_tf.export.saved_model import export_saved_model

__all__ = ["export_saved_model"]
