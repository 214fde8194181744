"""`reslstm-export`: writes a zoo entry or a `.keras` model as a SavedModel for TF Serving."""

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    if "export_dir" in FLAGS:
        return
    flags.DEFINE_string("model", None, "A zoo entry name or a .keras model file.", required=True)
    flags.DEFINE_string(
        "export_dir", None, "Output SavedModel directory (must not exist).", required=True
    )
    flags.DEFINE_string(
        "classes", None, "Class list file (one per line); default: the zoo entry's."
    )
    flags.DEFINE_integer("top_k", 5, "Ranked classes returned by the signatures.", lower_bound=1)
    flags.DEFINE_bool(
        "video_signature",
        True,
        "Also export serve_video (raw uint8 frames through the I3D backbone).",
    )
    flags.DEFINE_bool("overwrite", False, "Replace an existing export_dir.")


def export(
    model_name_or_path, export_dir, classes=None, top_k=5, video_signature=True, overwrite=False
):
    """Exports a zoo entry or `.keras` model; returns the export directory."""
    from reslstm_tf import zoo
    from reslstm_tf.export.saved_model import export_saved_model
    from reslstm_tf.models import load_model

    if str(model_name_or_path).endswith(".keras"):
        model = load_model(model_name_or_path)
        if classes is None:
            raise ValueError("--classes is needed when exporting a .keras file")
    else:
        model = zoo.load(model_name_or_path)
    class_names = zoo.read_class_names(classes) if classes else zoo.class_names(model_name_or_path)
    top_k = min(top_k, len(class_names))  # The default 5 on a 2-class model means all.
    backbone, spec = None, {}
    if video_signature:
        from reslstm_tf.backbones.extractor import feature_model

        entry = getattr(model, "zoo_entry", None) or {}
        spec = entry.get("features", {}).get("rgb", {})
        backbone = feature_model(spec.get("backbone", "i3d"), "rgb")
    return export_saved_model(
        model,
        export_dir,
        class_names,
        top_k=top_k,
        backbone=backbone,
        segment_len=spec.get("segment_len", 16),
        frame_size=spec.get("frame_size", 224),
        overwrite=overwrite,
    )


def main(argv):
    del argv
    path = export(
        FLAGS.model,
        FLAGS.export_dir,
        FLAGS.classes,
        FLAGS.top_k,
        FLAGS.video_signature,
        FLAGS.overwrite,
    )
    print(f"SavedModel written to {path}")


def run():
    """Console-script entry point."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
