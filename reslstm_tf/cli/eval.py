"""`reslstm-eval`: evaluates a trained run on features; writes metrics, CSV and figures.

Writes metrics.json (top-1, top-5, mean class accuracy), per_class_accuracy.csv,
confusion_matrix.png, predictions.npz and, for chosen videos, top5_predictions.png.
See docs/training.md.

Example:

    reslstm-eval --model_dir=runs/res3 --features_npz=test.npz --num_clips=1
"""

from absl import app, flags, logging

from reslstm_tf import evaluate as evaluate_lib
from reslstm_tf.cli import define_feature_input_flags, define_once, run_tool
from reslstm_tf.runs import RunDir

FLAGS = flags.FLAGS
NAME = "reslstm-eval"


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    define_once(flags.DEFINE_string, "model_dir", None, "Folder of a reslstm-train run.")
    define_once(
        flags.DEFINE_string,
        "weights",
        None,
        "A .weights.h5 to evaluate (default: the run's final).",
    )
    define_feature_input_flags("test", "evaluate", npz_shapes="(N, T, d_f) or (N, clips, T, d_f)")
    define_once(
        flags.DEFINE_string, "out_dir", None, "Output folder (default: <model_dir>/eval_<split>)."
    )
    define_once(
        flags.DEFINE_integer,
        "num_clips",
        1,
        "Clips per video; probabilities are averaged.",
        lower_bound=1,
    )
    define_once(flags.DEFINE_integer, "batch_size", 32, "Videos per forward pass.", lower_bound=1)
    define_once(flags.DEFINE_string, "class_names", None, "Text file of class names, one per line.")
    define_once(flags.DEFINE_list, "top5_videos", [], "Video indices for the top-5 figure.")
    define_once(
        flags.DEFINE_string,
        "frames_npz",
        None,
        ".npz of frames per video index for the top-5 figure.",
    )
    define_once(flags.DEFINE_boolean, "progress", True, "Show a progress bar.")
    flags.mark_flag_as_required("model_dir")


def main(argv):
    """Maps the flags onto an `EvalConfig`, runs `reslstm_tf.evaluate.run_evaluation`, prints."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    try:
        videos = [int(v) for v in FLAGS.top5_videos]
    except ValueError as error:
        raise app.UsageError(
            f"--top5_videos must be comma-separated integers. Received: {FLAGS.top5_videos}"
        ) from error
    config = evaluate_lib.EvalConfig(
        model_dir=FLAGS.model_dir,
        features_npz=FLAGS.features_npz,
        features_dir=FLAGS.features_dir,
        flow_features_dir=FLAGS.flow_features_dir,
        split=FLAGS.split,
        out_dir=FLAGS.out_dir,
        weights=FLAGS.weights,
        num_clips=FLAGS.num_clips,
        batch_size=FLAGS.batch_size,
        class_names_file=FLAGS.class_names,
        top5_videos=videos or None,
        frames_npz=FLAGS.frames_npz,
        progress=FLAGS.progress,
    )
    metrics = evaluate_lib.run_evaluation(config)
    top5 = f"  top-5 {metrics['top5']:.4f}" if "top5" in metrics else ""
    print(
        f"top-1 {metrics['top1']:.4f}{top5}  "
        f"mean class accuracy {metrics['mean_class_accuracy']:.4f}  "
        f"({metrics['num_videos']} videos, {metrics['num_clips']} clip(s) each)"
    )
    out_dir = FLAGS.out_dir or RunDir(FLAGS.model_dir).eval_dir(FLAGS.split).path
    figures = "confusion_matrix.png" + (", top5_predictions.png" if videos else "")
    print(f"outputs in {out_dir}: metrics.json, per_class_accuracy.csv, predictions.npz, {figures}")


def run():
    """Console-script entry point."""
    run_tool(NAME, main, define_flags, doc=__doc__, user_errors=(NotImplementedError,))


if __name__ == "__main__":
    run()
