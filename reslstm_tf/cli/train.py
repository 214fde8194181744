"""`reslstm-train`: trains a Res-LSTM classifier on cached segment features.

One custom training loop for every strategy (one device, local mirrored devices,
multi-worker from TF_CONFIG), TensorBoard summaries, checkpoints every N steps and
each epoch, and automatic exact resume from --model_dir. --config=FILE reads the settings
from a JSON or YAML file (a run's train_config.json reproduces that run), which the flags
given override. See docs/training.md.

Example:

    reslstm-train --features_npz=train.npz --model_dir=runs/res3 --preset=res3 \\
        --epochs=30 --batch_size=64 --optimizer=adam --learning_rate=1e-4
"""

import shlex

from absl import flags

from reslstm_tf import training as train_lib
from reslstm_tf.cli import (
    build_config,
    config_values,
    define_config_flags,
    refuse_arguments,
    require_model_dir,
    run_tool,
)
from reslstm_tf.files import printable
from reslstm_tf.runs import RunDir

FLAGS = flags.FLAGS
NAME = "reslstm-train"


# The command line's own defaults: XLA on (as model.fit by default; 1.4x faster for res3 on
# CPU), and Adam at 1e-4 for the default res3 head on I3D features (bench/default_lr.py: on
# 10 real clips 1e-3 collapsed 2 runs of 5 onto one class, 1e-4 none, and scored best).
CLI_DEFAULTS = {"jit_compile": True, "learning_rate": 1e-4}
HELPS = {
    "learning_rate": "Initial learning rate (reslstm-train's default 1e-4; the Python "
    "TrainOptions' 1e-3). On 10 real clips 1e-3 made 2 of 5 runs predict one class.",
    "jit_compile": "XLA-compile the forward/backward pass (as model.fit does by default; 1.4x "
    "faster for res3 on CPU). --nojit_compile for plain graph mode.",
    "restart": "Delete the previous run in --model_dir (checkpoints, summaries, history, final "
    "weights, model, eval_*) and start over. Without it a run resumes, and refuses flags "
    "that change the result.",
}


RECORD_HELP = "A run's train_config.json (with another --model_dir) trains that run again."


def _table():
    return train_lib.RunConfig.settings(defaults=CLI_DEFAULTS, helps=HELPS)


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    define_config_flags(_table(), RECORD_HELP)


def config_from_flags():
    """The `RunConfig` of `--config` (e.g. a run's train_config.json) and the flags."""
    from reslstm_tf import configs
    from reslstm_tf.training import run as run_lib

    table = _table()
    values = config_values(
        train_lib.RunConfig, table, sections=run_lib.RECORD_SECTIONS, ignore=run_lib.RECORD_ONLY
    )

    def build(flat):
        config = configs.from_flat(train_lib.RunConfig, flat, table)
        config.validate()
        return config

    return require_model_dir(build_config(build, table, values), NAME)


def main(argv):
    """Maps the flags onto a `RunConfig` and calls `reslstm_tf.training.run_training`."""
    refuse_arguments(argv)
    config = config_from_flags()
    result = train_lib.run_training(config)
    if result.is_chief:
        last = result.history[-1] if result.history else {}
        size = RunDir(config.model_dir).size_bytes() / 2**20
        rate = result.steps_per_second
        speed = f"{rate:.1f} steps/s" if rate == rate else "no steps left to train"
        print(
            f"done: step {result.global_step}, {speed}, "
            f"last epoch loss {last.get('loss', float('nan')):.4f} "
            f"accuracy {last.get('accuracy', float('nan')):.4f}; "
            f"outputs in {printable(config.model_dir)} ({size:.1f} MiB)"
        )
        run = RunDir(config.model_dir)
        if run.model_file.is_file():
            model_dir = shlex.quote(str(config.model_dir))
            print(
                f"next: reslstm-eval --model_dir={model_dir} --split=test (or --features_dir="
                f"<a test cache>); reslstm-classify --model={shlex.quote(str(run.model_file))} "
                "<video.mp4>"
            )


def run():
    """Console-script entry point."""
    run_tool(NAME, main, define_flags, doc=__doc__, user_errors=(NotImplementedError,))


if __name__ == "__main__":
    run()
