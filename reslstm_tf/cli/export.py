"""`reslstm-export`: writes a zoo entry or a `.keras` model for serving: SavedModel, LiteRT, ONNX.

`--format=saved_model` (default, TF Serving), `litert` (model.tflite and step.tflite, float32
or `--quantization=float16|dynamic_int8`) or `onnx` (model.onnx and step.onnx); see
docs/export.md. For the SavedModel:

One-stream and two-stream heads: `serving_default` on the feature sequence(s), `serve_step`
one segment at a time with the LSTM states, and for one-stream heads `serve_video` on raw
frames. `--overwrite` keeps the old version serving until the new one is complete:
`reslstm_tf.export.saved_model.export_model`.
"""

from absl import flags

from reslstm_tf.cli import define_once, flag_values, run_tool

NAME = "reslstm-export"
FLAGS = flags.FLAGS


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    define_once(
        flags.DEFINE_string,
        "model",
        None,
        "A zoo entry name or a .keras model file.",
        required=True,
    )
    define_once(
        flags.DEFINE_string,
        "export_dir",
        None,
        "Output SavedModel directory; must not exist (it is created at once, so a second "
        "export into it is refused) unless --overwrite.",
        required=True,
    )
    define_once(
        flags.DEFINE_string,
        "classes",
        None,
        "Class list file (one per line; a relative path is read from the current "
        "directory); default: the zoo entry's.",
    )
    define_once(
        flags.DEFINE_integer,
        "top_k",
        5,
        "Ranked classes returned by the signatures.",
        lower_bound=1,
    )
    define_once(
        flags.DEFINE_bool,
        "video_signature",
        True,
        "Also export serve_video (raw uint8 frames through the I3D backbone; one-stream only).",
    )
    define_once(flags.DEFINE_bool, "overwrite", False, "Replace an existing export_dir.")
    define_once(
        flags.DEFINE_enum, "format", "saved_model", ["saved_model", "litert", "onnx"], "Format."
    )
    define_once(
        flags.DEFINE_enum,
        "quantization",
        "none",
        ["none", "float16", "dynamic_int8"],
        "LiteRT weights: float32 (none), float16 or dynamic-range int8.",
    )
    define_once(
        flags.DEFINE_bool,
        "streaming",
        True,
        "LiteRT and ONNX: also write the streaming step (features and LSTM states in and out).",
    )


def main(argv):
    """Maps the flags onto `reslstm_tf.export.export` and prints where the files went."""
    del argv
    from reslstm_tf.export import export

    written = export(
        FLAGS.model,
        FLAGS.export_dir,
        FLAGS.format,
        **flag_values(
            "classes", "top_k", "video_signature", "quantization", "streaming", "overwrite"
        ),
    )
    if isinstance(written, dict):
        for kind, path in written.items():
            print(f"{FLAGS.format} {kind} written to {path}")
    else:
        print(f"SavedModel written to {written}")


def run():
    """Console-script entry point."""
    run_tool(NAME, main, define_flags, doc=__doc__)


if __name__ == "__main__":
    run()
