r"""`reslstm-ablate`: the paper's ablations of the Res-LSTM head on a cached feature set.

Usage:
    reslstm-ablate --features_dir=cache/skateboard_i3d_rgb \
        --flow_features_dir=cache/skateboard_i3d_flow --out_dir=runs/skateboard_ablation

Writes runs.csv (one row per run), results.json, results.md and PNG plots into --out_dir;
see `reslstm_tf.experiments` for the protocol. The experiments run through the one experiment
runner (`reslstm_tf.experiments.runner`) that `reslstm-study` uses too; this tool maps its
flags onto an `AblationConfig` (training flags onto its `TrainOptions`).
"""

import shlex
import sys

from absl import app, flags

from reslstm_tf.cli import define_once, refuse_arguments, run_tool
from reslstm_tf.experiments.config import (
    EXPERIMENTS,
    AblationConfig,
    AblationError,
    head_options,
)

FLAGS = flags.FLAGS
NAME = "reslstm-ablate"


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    defaults = AblationConfig()
    train = defaults.train
    define_once(
        flags.DEFINE_string, "features_dir", None, "RGB feature cache (from reslstm-extract)."
    )
    define_once(
        flags.DEFINE_string,
        "flow_features_dir",
        None,
        "Optical-flow feature cache; needed by --experiments=fusion.",
    )
    define_once(
        flags.DEFINE_string, "out_dir", None, "Output folder: runs.csv, results.json/.md, *.png."
    )
    define_once(
        flags.DEFINE_list,
        "experiments",
        list(EXPERIMENTS),
        "Any of baselines, depth, hidden, steps, fusion (fusion is skipped with a note "
        "when no --flow_features_dir is given and the default list is used).",
    )
    define_once(
        flags.DEFINE_integer, "seeds", defaults.seeds, "Seeds of the cross-validated experiments."
    )
    define_once(
        flags.DEFINE_integer, "folds", defaults.folds, "Folds of the stratified cross-validation."
    )
    define_once(
        flags.DEFINE_enum,
        "sweep_protocol",
        defaults.sweep_protocol,
        ["holdout", "cv"],
        "Protocol of the hidden/steps/fusion sweeps: a fixed stratified hold-out or the CV "
        "(then on the same folds and seeds as the baselines: seeds 0..--sweep_seeds-1).",
    )
    define_once(flags.DEFINE_integer, "sweep_seeds", defaults.sweep_seeds, "Seeds of the sweeps.")
    define_once(
        flags.DEFINE_float,
        "holdout_fraction",
        defaults.holdout_fraction,
        "Share of each class held out.",
    )
    define_once(
        flags.DEFINE_integer, "split_seed", defaults.split_seed, "Seed of the folds / hold-out."
    )
    define_once(
        flags.DEFINE_list, "hidden", [str(h) for h in defaults.hidden], "Hidden sizes of the sweep."
    )
    define_once(
        flags.DEFINE_list,
        "depths",
        [str(d) for d in defaults.depths],
        "Depths L of the depth experiment (1-4 in the paper's figure; a Res-LSTM of depth 1 "
        "has no shortcut between layers, only the first layer's from its input).",
    )
    define_once(
        flags.DEFINE_list,
        "hidden_depths",
        [str(d) for d in defaults.hidden_depths],
        "Depths of the hidden-size sweep (default: every one of --depths).",
    )
    define_once(
        flags.DEFINE_list, "steps", [str(t) for t in defaults.steps], "LSTM steps T of the sweep."
    )
    define_once(
        flags.DEFINE_integer, "base_hidden", defaults.base_hidden, "Hidden size outside the sweep."
    )
    define_once(
        flags.DEFINE_integer, "base_depth", defaults.base_depth, "Depth of the T and fusion sweeps."
    )
    define_once(flags.DEFINE_integer, "base_steps", defaults.base_steps, "T outside the T sweep.")
    define_once(
        flags.DEFINE_enum,
        "fusion_arch",
        defaults.fusion_arch,
        ["res", "lstm"],
        "Head of the fusion experiment.",
    )
    define_once(
        flags.DEFINE_integer, "epochs", train.epochs, "Training epochs (fixed, no early stopping)."
    )
    define_once(flags.DEFINE_integer, "batch_size", train.batch_size, "Mini-batch size.")
    define_once(flags.DEFINE_float, "learning_rate", train.learning_rate, "Adam learning rate.")
    define_once(flags.DEFINE_float, "dropout", defaults.dropout, "Dropout before the classifier.")
    define_once(flags.DEFINE_bool, "progress", True, "Show a progress bar with ETA.")


def _ints(name, values):
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise app.UsageError(
            f"--{name} must be a comma-separated list of integers. Received: {','.join(values)}"
        ) from None


def config_from_flags():
    """Returns the `AblationConfig` the flags describe."""
    experiments = tuple(e.strip() for e in FLAGS.experiments if e.strip())
    if (
        "fusion" in experiments
        and not FLAGS.flow_features_dir
        and FLAGS["experiments"].using_default_value
    ):
        experiments = tuple(e for e in experiments if e != "fusion")
        print("note: no --flow_features_dir, so the fusion experiment is skipped", file=sys.stderr)
    return AblationConfig(
        experiments=experiments,
        seeds=FLAGS.seeds,
        folds=FLAGS.folds,
        sweep_protocol=FLAGS.sweep_protocol,
        sweep_seeds=FLAGS.sweep_seeds,
        holdout_fraction=FLAGS.holdout_fraction,
        split_seed=FLAGS.split_seed,
        hidden=_ints("hidden", FLAGS.hidden),
        depths=_ints("depths", FLAGS.depths),
        hidden_depths=_ints("hidden_depths", FLAGS.hidden_depths),
        steps=_ints("steps", FLAGS.steps),
        base_hidden=FLAGS.base_hidden,
        base_depth=FLAGS.base_depth,
        base_steps=FLAGS.base_steps,
        fusion_arch=FLAGS.fusion_arch,
        train=head_options(
            epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate
        ),
        dropout=FLAGS.dropout,
    )


def main(argv):
    """Maps the flags onto `reslstm_tf.experiments.run_ablation` and prints the best head."""
    refuse_arguments(argv)
    missing = [f for f in ("features_dir", "out_dir") if not getattr(FLAGS, f)]
    if missing:
        raise app.UsageError(f"{NAME} needs --{', --'.join(missing)}")
    from reslstm_tf.experiments.ablation import run_ablation

    results = run_ablation(
        FLAGS.features_dir,
        FLAGS.out_dir,
        config_from_flags(),
        flow_features_dir=FLAGS.flow_features_dir,
        progress=FLAGS.progress,
        command=f"{NAME} " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    best = results["best"]
    print(f"{results['timings']['runs']} runs in {results['timings']['total_s'] / 60:.1f} min")
    for verdict in results["verdicts"].values():
        print(verdict)
    if best:
        print(
            f"best head: {best['arch']}{best['depth']} H={best['hidden']} "
            f"{100 * best['mean']:.1f} ± {100 * best['std']:.1f} % ({best['protocol']})"
        )
    print(f"results: {FLAGS.out_dir}/results.md")


def run():
    """Console-script entry point."""
    run_tool(NAME, main, define_flags, doc=__doc__, user_errors=(AblationError,))


if __name__ == "__main__":
    run()
