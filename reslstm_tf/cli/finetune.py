r"""`reslstm-finetune`: fine-tunes a 3D CNN and the Res-LSTM head end to end, from videos.

Usage (HMDB-51 split 1, RGB I3D from Kinetics-400, two GPUs):
    reslstm-finetune --dataset=hmdb51 --data_dir=hmdb51 --split_dir=hmdb51_splits \
        --model_dir=runs/hmdb51_rgb --strategy=mirrored --mixed_precision=float16 \
        --jit_compile --num_segments=8 --segment_len=64 --frame_size=224 --eval_subset=test

Flow streams fill --flow_cache_dir once (resumable) before training. Checkpoints go to
--model_dir; the same command resumes a stopped run. See `reslstm_tf.training.finetune`.
"""

from absl import app, flags

from reslstm_tf.cli import define_once, run_tool

FLAGS = flags.FLAGS
NAME = "reslstm-finetune"
HEAD_FLAGS = ("units", "num_layers", "dropout")

_S, _I, _F, _B = flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float, flags.DEFINE_bool
_FLAGS = [
    (_S, "data_dir", None, "Folder of the videos (paths in the lists are relative)."),
    (_S, "model_dir", None, "Run folder: checkpoints, final weights, eval_<split>/."),
    (_S, "dataset", "folder", "folder, ucf101 or hmdb51."),
    (_S, "split_dir", None, "ucf101/hmdb51: folder of the split files (default --data_dir)."),
    (_I, "split", 1, "ucf101/hmdb51: official split 1, 2 or 3."),
    (_S, "split_file", None, "folder: optional list of <Class>/<video> lines to train on."),
    (_S, "eval_subset", "", "ucf101/hmdb51: subset scored after training (e.g. test)."),
    (_S, "eval_split_file", None, "folder: list of the videos scored after training."),
    (_S, "modality", "rgb", "rgb, flow or two_stream."),
    (_S, "flow_method", "tvl1", "tvl1 or farneback."),
    (_S, "flow_cache_dir", None, "Flow cache folder, filled once (flow streams)."),
    (_I, "flow_short_side", None, "Shorter side of cached flow (default S * 256 / 224)."),
    (_I, "num_segments", 8, "T, segments per video (the LSTM steps)."),
    (_I, "segment_len", 16, "L, frames per segment."),
    (_I, "frame_size", 224, "S, the square crop side."),
    (_S, "backbone", "i3d", "i3d or c3d."),
    (_S, "backbone_weights", "kinetics400", "kinetics400, none or a .weights.h5 path."),
    (_S, "trainable_from", "Mixed_4f", "First fine-tuned I3D endpoint; 'all' trains all."),
    (_B, "frozen_batchnorm", True, "Keep BatchNorm statistics fixed (small batches)."),
    (_B, "recompute", False, "Recompute backbone activations in backward (less memory)."),
    (_S, "preset", "res3", "Head preset (res2..res4, lstm2..lstm4)."),
    (_I, "units", None, "Head override: LSTM units."),
    (_I, "num_layers", None, "Head override: LSTM layers."),
    (_F, "dropout", None, "Head override: input dropout."),
    (_S, "fusion", "product", "two_stream: sum, product, weighted or concat."),
    (_S, "level", "late", "two_stream: mid or late fusion."),
    (_B, "trunk_cache", False, "Train on cached trunk outputs (frozen BatchNorm, I3D)."),
    (_I, "trunk_views", 1, "Clip views cached per video with --trunk_cache."),
    (_S, "trunk_cache_dir", None, "Keep trunk views here, shared by runs (e.g. folds)."),
    (_I, "epochs", 10, "Passes over the training videos."),
    (_I, "batch_size", 8, "Global batch (videos) over all replicas."),
    (_S, "optimizer", "sgd", "sgd, adam or adamw."),
    (_F, "learning_rate", 1e-3, "Initial learning rate."),
    (_S, "schedule", "constant", "constant, cosine or step."),
    (_F, "weight_decay", 0.0, "Decoupled weight decay."),
    (_F, "momentum", 0.9, "SGD momentum."),
    (_I, "seed", 0, "Seeds weights, order and augmentation."),
    (_S, "mixed_precision", "none", "none, float16 or bfloat16."),
    (_B, "jit_compile", False, "Compile the forward and backward pass with XLA (GPU)."),
    (_I, "checkpoint_every_steps", 0, "Checkpoint every N steps (0: epoch ends only)."),
    (_I, "max_steps", None, "Stop (with a checkpoint) at this global step."),
    (_S, "strategy", "default", "default, mirrored or multi_worker (TF_CONFIG)."),
    (_I, "limit", None, "Use only the first N videos (smoke tests)."),
    (_B, "progress", True, "Show progress bars."),
]


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    for definer, name, default, help_text in _FLAGS:
        define_once(definer, name, default, help_text)


def config_from_flags():
    """The `FinetuneConfig` of the flags."""
    from reslstm_tf.training import finetune as finetune_lib

    values = {name: FLAGS[name].value for name in finetune_lib.settings() if name in FLAGS}
    values["head"] = {k: FLAGS[k].value for k in HEAD_FLAGS if FLAGS[k].value is not None}
    if str(values["backbone_weights"]).lower() == "none":
        values["backbone_weights"] = None
    if values["trainable_from"] in ("", "all"):
        values["trainable_from"] = None
    return finetune_lib.from_flat(values)


def main(argv):
    """Maps the flags onto `finetune`, prints the history and the evaluation."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.data_dir:
        raise app.UsageError(f"{NAME} needs --data_dir")
    from reslstm_tf.training.finetune import finetune

    result = finetune(config_from_flags())
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
