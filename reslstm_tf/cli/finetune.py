r"""`reslstm-finetune`: fine-tunes a 3D CNN and the Res-LSTM head end to end, from videos.

Usage (HMDB-51 split 1, RGB I3D from Kinetics-400, two GPUs):
    reslstm-finetune --dataset=hmdb51 --data_dir=hmdb51 --split_dir=hmdb51_splits \
        --model_dir=runs/hmdb51_rgb --strategy=mirrored --mixed_precision=float16 \
        --jit_compile --num_segments=8 --segment_len=64 --frame_size=224 --eval_subset=test

Flow streams fill --flow_cache_dir once (resumable) before training. Checkpoints go to
--model_dir; the same command resumes a stopped run. --config=FILE reads the settings from a
JSON or YAML file (e.g. a run's train_config.json), which the flags given override. See
`reslstm_tf.training.finetune`.
"""

from absl import app, flags

from reslstm_tf.cli import (
    build_config,
    config_values,
    define_config_flags,
    define_once,
    refuse_arguments,
    run_tool,
)

FLAGS = flags.FLAGS
NAME = "reslstm-finetune"
HEAD_FLAGS = (
    (flags.DEFINE_integer, "units", "Head override: LSTM units."),
    (flags.DEFINE_integer, "num_layers", "Head override: LSTM layers."),
    (flags.DEFINE_float, "dropout", "Head override: input dropout."),
)
# What train_config.json holds beside the settings (under "finetune").
RECORD_SECTIONS, RECORD_ONLY = ("finetune",), ("class_names", "num_examples", "steps_per_epoch")
RECORD_HELP = "A run's train_config.json (with another --model_dir) fine-tunes that run again."
# Help texts of the command line where the docstrings' do not say how a flag is written.
HELPS = {
    "backbone_weights": "kinetics400, none or a .weights.h5 path.",
    "trainable_from": "First fine-tuned I3D endpoint; 'all' trains all.",
    "flow_short_side": "Shorter side frames (and cached flow) are resized to before "
    "cropping (default S * 256 / 224).",
}


def _table():
    from reslstm_tf.training import finetune as finetune_lib

    return finetune_lib.settings(helps=HELPS)


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    define_config_flags(_table(), RECORD_HELP)
    for definer, name, help_text in HEAD_FLAGS:
        define_once(definer, name, None, help_text)


def config_from_flags():
    """The `FinetuneConfig` of `--config` and the flags."""
    from reslstm_tf.training import finetune as finetune_lib

    table = _table()
    values = config_values(
        finetune_lib.FinetuneConfig, table, sections=RECORD_SECTIONS, ignore=RECORD_ONLY
    )
    head = dict(values.get("head") or {})
    head.update({name: FLAGS[name].value for _, name, _ in HEAD_FLAGS if FLAGS[name].present})
    values["head"] = head
    if str(values.get("backbone_weights", "")).lower() == "none":
        values["backbone_weights"] = None
    if values.get("trainable_from") in ("", "all"):
        values["trainable_from"] = None

    def build(flat):
        config = finetune_lib.from_flat(flat)
        config.validate()
        return config

    return build_config(build, table, values)


def main(argv):
    """Maps the flags onto `finetune`, prints the history and the evaluation."""
    refuse_arguments(argv)
    from reslstm_tf.training.finetune import finetune

    config = config_from_flags()
    if not config.data_dir:
        raise app.UsageError(f"{NAME} needs --data_dir (or data_dir in --config)")
    result = finetune(config)
    for entry in result.train.history:
        print(f"epoch {entry['epoch']}: loss {entry['loss']:.4f} accuracy {entry['accuracy']:.3f}")
    if result.evaluation is not None:
        scored = result.evaluation
        print(f"top-1 {100 * scored['top1']:.1f} % on {scored['num_videos']} videos")
    return 0


def run():
    """Console-script entry point."""
    from reslstm_tf.training.errors import TrainingInputError

    run_tool(NAME, main, define_flags, doc=__doc__, user_errors=(TrainingInputError,))


if __name__ == "__main__":
    run()
