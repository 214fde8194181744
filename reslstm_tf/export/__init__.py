"""Exporting trained models: SavedModel (TF Serving), LiteRT (phones, edge boxes) and ONNX.

`export` is the one entry point the `reslstm-export` tool calls; each format has its own
module (`saved_model`, `litert`, `onnx`), and `signatures` builds the graphs they share.
LiteRT and ONNX need optional packages (`pip install ".[litert]"` / `".[onnx]"`), imported
only when those formats are asked for.
"""

from reslstm_tf.checks import check_choice
from reslstm_tf.export.saved_model import export_model, export_saved_model, video_to_segments

FORMATS = ("saved_model", "litert", "onnx")
QUANTIZATIONS = ("none", "float16", "dynamic_int8")


def export(
    model,
    export_dir,
    format="saved_model",  # noqa: A002 - the tool's flag name
    *,
    classes=None,
    top_k=5,
    video_signature=True,
    quantization="none",
    streaming=True,
    overwrite=False,
):
    """Exports a zoo entry or `.keras` model in one format; returns the written path(s).

    Args:
        model: a zoo entry name, a `.keras` file or a Keras head.
        export_dir: the output folder.
        format: "saved_model", "litert" or "onnx".
        classes: SavedModel only: a class list file (default: the zoo entry's).
        top_k: SavedModel only: ranked classes returned by the signatures.
        video_signature: SavedModel only: also export `serve_video` (one-stream heads).
        quantization: LiteRT only: "none", "float16" or "dynamic_int8".
        streaming: LiteRT and ONNX: also write the streaming step graph.
        overwrite: replace an existing export.

    Returns:
        The SavedModel folder, or for LiteRT and ONNX a dict {"model": path, "step": path}.
    """
    check_choice("format", format, FORMATS)
    check_choice("quantization", quantization, QUANTIZATIONS)
    if format == "saved_model":
        return export_model(
            model,
            export_dir,
            classes=classes,
            top_k=top_k,
            video_signature=video_signature,
            overwrite=overwrite,
        )
    if format == "litert":
        from reslstm_tf.export.litert import export_litert

        return export_litert(
            model, export_dir, quantization=quantization, streaming=streaming, overwrite=overwrite
        )
    import pathlib

    from reslstm_tf.export.onnx import export_onnx

    folder = pathlib.Path(export_dir)
    step = folder / "step.onnx" if streaming else None
    return export_onnx(model, folder / "model.onnx", step_path=step, overwrite=overwrite)


__all__ = [
    "FORMATS",
    "QUANTIZATIONS",
    "export",
    "export_model",
    "export_saved_model",
    "video_to_segments",
]
