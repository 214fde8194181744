"""`reslstm-train`: trains a Res-LSTM classifier on cached segment features.

One custom training loop for every strategy (one device, local mirrored devices,
multi-worker from TF_CONFIG), TensorBoard summaries, checkpoints every N steps and
each epoch, and automatic exact resume from --model_dir. See docs/training.md.

Example:

    reslstm-train --features_npz=train.npz --model_dir=runs/res3 --preset=res3 \\
        --epochs=30 --batch_size=64 --optimizer=adam --learning_rate=1e-4
"""

from absl import app, flags, logging

from reslstm_tf import training as train_lib
from reslstm_tf.cli import define_feature_input_flags, define_once, run_tool
from reslstm_tf.models import MODALITIES
from reslstm_tf.runs import RunDir
from reslstm_tf.training.run import TRAIN_VIEWS

FLAGS = flags.FLAGS
NAME = "reslstm-train"


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    _define_input_flags()
    _define_model_flags()
    _define_optimisation_flags()
    _define_run_flags()
    flags.mark_flag_as_required("model_dir")


def _define_input_flags():
    """The features to train on."""
    define_feature_input_flags("train", "train on")
    define_once(
        flags.DEFINE_integer,
        "num_classes",
        None,
        "Classes C; default: the class names of the input.",
    )
    define_once(
        flags.DEFINE_enum,
        "train_views",
        "auto",
        list(TRAIN_VIEWS),
        "auto: when the training cache holds augmented views (reslstm-extract --views), "
        "each epoch feeds every video one of them; off: the centred view only.",
    )


def _define_model_flags():
    """The architecture."""
    define_once(flags.DEFINE_string, "preset", "res3", "Architecture preset (res2-4, lstm2-4).")
    define_once(flags.DEFINE_enum, "modality", "rgb", list(MODALITIES), "Stream(s) to train on.")
    define_once(
        flags.DEFINE_enum,
        "fusion",
        "product",
        ["sum", "product", "weighted", "concat"],
        "2-stream fusion.",
    )
    define_once(flags.DEFINE_enum, "level", "late", ["mid", "late"], "Two-stream fusion level.")
    define_once(
        flags.DEFINE_integer, "feature_dim", 1024, "d_f of the (rgb) features.", lower_bound=1
    )
    define_once(
        flags.DEFINE_integer,
        "flow_dim",
        None,
        "d_f of the flow stream (two_stream; default feature_dim).",
    )
    define_once(
        flags.DEFINE_integer, "units", None, "Override the preset's LSTM width.", lower_bound=1
    )
    define_once(
        flags.DEFINE_integer,
        "num_steps",
        None,
        "Override the preset's T (segments).",
        lower_bound=1,
    )
    define_once(
        flags.DEFINE_float, "dropout", None, "Override the preset's dropout rate, in [0, 1)."
    )
    define_once(flags.DEFINE_boolean, "masking", True, "Mask all-zero (padding) time steps.")


def _define_optimisation_flags():
    """The optimiser, its schedule and the seed."""
    define_once(flags.DEFINE_integer, "epochs", 10, "Passes over the training data.", lower_bound=1)
    define_once(
        flags.DEFINE_integer, "batch_size", 32, "Global batch size (all replicas).", lower_bound=1
    )
    define_once(flags.DEFINE_enum, "optimizer", "adam", list(train_lib.OPTIMIZERS), "Optimizer.")
    define_once(
        flags.DEFINE_float, "learning_rate", 1e-3, "Initial learning rate.", lower_bound=0.0
    )
    define_once(
        flags.DEFINE_enum,
        "schedule",
        "constant",
        list(train_lib.SCHEDULES),
        "Learning-rate schedule.",
    )
    define_once(
        flags.DEFINE_integer, "lr_decay_epochs", None, "Period of the step schedule (epochs)."
    )
    define_once(flags.DEFINE_float, "lr_decay_rate", 0.1, "Factor of the step schedule.")
    define_once(flags.DEFINE_float, "weight_decay", 0.0, "Decoupled weight decay.", lower_bound=0.0)
    define_once(flags.DEFINE_float, "momentum", 0.9, "SGD momentum.", lower_bound=0.0)
    define_once(flags.DEFINE_integer, "seed", 0, "Seed of weights, dropout and shuffles.")


def _define_run_flags():
    """The output folder, the strategy, checkpoints and logging."""
    define_once(
        flags.DEFINE_string,
        "model_dir",
        None,
        "Output folder: checkpoints, summaries, final weights.",
    )
    define_once(
        flags.DEFINE_enum,
        "strategy",
        "default",
        list(train_lib.STRATEGIES),
        "Distribution strategy.",
    )
    define_once(
        flags.DEFINE_enum,
        "mixed_precision",
        "none",
        list(train_lib.MIXED_PRECISION),
        "Mixed-precision policy.",
    )
    define_once(
        flags.DEFINE_integer,
        "checkpoint_every_steps",
        0,
        "Checkpoint every N steps (0: epoch ends only).",
        lower_bound=0,
    )
    define_once(
        flags.DEFINE_integer,
        "max_checkpoints",
        1,
        "Checkpoints to keep (resuming needs the latest; each is 3x the weights with Adam).",
        lower_bound=1,
    )
    define_once(
        flags.DEFINE_integer,
        "max_steps",
        None,
        "Stop (checkpointed) at this global step.",
        lower_bound=1,
    )
    define_once(
        flags.DEFINE_integer, "log_every_steps", 10, "Step summaries every N steps.", lower_bound=1
    )
    define_once(
        flags.DEFINE_integer,
        "shuffle_buffer",
        None,
        "Shuffle buffer (default: the whole dataset).",
        lower_bound=1,
    )
    define_once(
        flags.DEFINE_boolean,
        "jit_compile",
        True,
        "XLA-compile the forward/backward pass (as model.fit does by default; 1.4x faster "
        "for res3 on CPU). --nojit_compile for plain graph mode.",
    )
    define_once(flags.DEFINE_boolean, "progress", True, "Show a progress bar.")
    define_once(
        flags.DEFINE_boolean,
        "restart",
        False,
        "Delete the previous run in --model_dir (checkpoints, summaries, history, final "
        "weights, model, eval_*) and start over. Without it a run resumes, and refuses flags "
        "that change the result.",
    )
    define_once(
        flags.DEFINE_boolean,
        "save_worker_weights",
        False,
        "Non-chief workers also save their final weights.",
    )


def main(argv):
    """Maps the flags onto a `RunConfig` and calls `reslstm_tf.training.run_training`."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    values = {
        name: FLAGS[name].value for name in train_lib.RunConfig.field_names() if name in FLAGS
    }
    result = train_lib.run_training(train_lib.RunConfig.from_kwargs(**values))
    if result.is_chief:
        last = result.history[-1] if result.history else {}
        size = RunDir(FLAGS.model_dir).size_bytes() / 2**20
        rate = result.steps_per_second
        speed = f"{rate:.1f} steps/s" if rate == rate else "no steps left to train"
        print(
            f"done: step {result.global_step}, {speed}, "
            f"last epoch loss {last.get('loss', float('nan')):.4f} "
            f"accuracy {last.get('accuracy', float('nan')):.4f}; outputs in {FLAGS.model_dir} "
            f"({size:.1f} MiB)"
        )


def run():
    """Console-script entry point."""
    run_tool(NAME, main, define_flags, doc=__doc__, user_errors=(NotImplementedError,))


if __name__ == "__main__":
    run()
