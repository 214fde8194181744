"""`reslstm-eval`: evaluates a trained run on features; writes metrics, CSV and figures.

Writes metrics.json (top-1, top-5, mean class accuracy), per_class_accuracy.csv,
confusion_matrix.png, predictions.npz and, for chosen videos, top5_predictions.png.
--config=FILE reads the settings from a JSON or YAML file, which the flags given override.
See docs/training.md.

Example:

    reslstm-eval --model_dir=runs/res3 --features_npz=test.npz --num_clips=1
"""

import sys

from absl import app, flags

from reslstm_tf import evaluate as evaluate_lib
from reslstm_tf.cli import (
    config_values,
    define_config_flags,
    refuse_arguments,
    require_model_dir,
    run_tool,
)
from reslstm_tf.files import printable
from reslstm_tf.runs import RunDir

FLAGS = flags.FLAGS
NAME = "reslstm-eval"


RENAMES = {"class_names_file": "class_names"}
HELPS = {
    "model_dir": "Folder of a reslstm-train run.",
    "weights": "A .weights.h5 to evaluate (default: the run's final).",
    "features_dir": "Feature cache folder (sharded TFRecords).",
    "flow_features_dir": "two_stream: folder of the flow caches (default: inside --features_dir).",
    "split": "Split of the feature cache to evaluate.",
    "features_npz": "Alternative input: a .npz with 'features' (N, T, d_f) or (N, clips, T, d_f) "
    "(or 'rgb' and 'flow'), 'labels' (N,) and optionally 'class_names'.",
    "out_dir": "Output folder (default: <model_dir>/eval_<split>).",
    "num_clips": "Clips per video; probabilities are averaged.",
    "batch_size": "Videos per forward pass.",
    "class_names": "Text file of class names, one per line.",
    "top5_videos": "Video indices for the top-5 figure.",
    "frames_npz": ".npz of frames per video index for the top-5 figure.",
    "progress": "Show a progress bar.",
}


def _table():
    from reslstm_tf import configs

    return configs.settings(
        evaluate_lib.EvalConfig, renames=RENAMES, defaults={"top5_videos": []}, helps=HELPS
    )


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    define_config_flags(_table())


def config_from_flags():
    """The `EvalConfig` of `--config` and the flags."""
    from reslstm_tf import configs

    table = _table()
    values = config_values(evaluate_lib.EvalConfig, table)
    try:
        videos = [int(v) for v in values.get("top5_videos") or []]
    except (TypeError, ValueError) as error:
        raise app.UsageError(
            f"--top5_videos must be comma-separated integers. Received: {values.get('top5_videos')}"
        ) from error
    values["top5_videos"] = videos or None
    return require_model_dir(configs.from_flat(evaluate_lib.EvalConfig, values, table), NAME)


def main(argv):
    """Maps the flags onto an `EvalConfig`, runs `reslstm_tf.evaluate.run_evaluation`, prints."""
    refuse_arguments(argv)
    config = config_from_flags()
    metrics = evaluate_lib.run_evaluation(config)
    top5 = f"  top-5 {metrics['top5']:.4f}" if "top5" in metrics else ""
    print(
        f"top-1 {metrics['top1']:.4f}{top5}  "
        f"mean class accuracy {metrics['mean_class_accuracy']:.4f}  "
        f"({metrics['num_videos']} videos, {metrics['num_clips']} clip(s) each)"
    )
    out_dir = printable(config.out_dir or RunDir(config.model_dir).eval_dir(config.split).path)
    figures = "confusion_matrix.png" + (", top5_predictions.png" if config.top5_videos else "")
    print(f"outputs in {out_dir}: metrics.json, per_class_accuracy.csv, predictions.npz, {figures}")
    if metrics["collapsed"]:
        print(
            f"{NAME}: warning: every one of the {metrics['num_videos']} videos is predicted as "
            "the same class: the model has collapsed onto one class (its training diverged, "
            "or had too few steps); retrain with a lower --learning_rate",
            file=sys.stderr,
        )


def run():
    """Console-script entry point."""
    run_tool(NAME, main, define_flags, doc=__doc__, user_errors=(NotImplementedError,))


if __name__ == "__main__":
    run()
