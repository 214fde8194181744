"""Fine-tuning cost: one training step of I3D + Res-LSTM over the forward pass alone.

On one batch of clips (default 2 videos x T=4 segments x 16 frames x 112 px, RGB), in the
same run, alternately timed: the forward pass alone (inference, as in evaluation) and one
full fine-tuning step (forward in training mode, backward, SGD update), as the `Trainer`
runs it, for `trainable_from="Mixed_4f"` (the default) and None (all of I3D), plus the
step of trunk caching (`--trunk_from`, default Mixed_5b): the upper I3D blocks and the head
trained on cached trunk outputs, with the trunk's forward counted once per clip.

The ratio step / forward is the summary `finetune=` (Mixed_4f); a backward pass costs about
two forward passes, so an ideal step is ~3x the forward; the target is at most 3.5.
Random weights (no download): the cost does not depend on their values.

    python bench/finetune.py [--batch 2 --segments 4 --frames 16 --size 112] [--json out.json]
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    clip_parser,
    keras_step_and_forward,
    machine_header,
    paired_best,
    report,
    set_threads,
)

TARGET = 3.5


def _config(args, trainable_from):
    from reslstm_tf.clip_spec import ClipSpec
    from reslstm_tf.training.finetune import FinetuneConfig

    clip = ClipSpec(num_segments=args.segments, segment_len=args.frames, frame_size=args.size)
    return FinetuneConfig(
        data_dir=".",
        clip=clip.replace(backbone_weights=None),
        trainable_from=trainable_from,
        preset="res2",
        head={"units": 256},
    )


def step_and_forward(model, x, y):
    """Returns (train_step, forward) tf.functions of `model` on one fixed batch."""
    import keras

    optimizer = keras.optimizers.SGD(1e-3, momentum=0.9)
    return keras_step_and_forward(model, optimizer, x, y)


def measure(args, trainable_from):
    """Returns (step s, forward s, trainable parameter count) for one freeze."""
    import keras

    from reslstm_tf.training.finetune import build_classifier

    keras.utils.set_random_seed(0)
    model = build_classifier(_config(args, trainable_from), args.classes)
    rng = np.random.default_rng(0)
    shape = (args.batch, args.segments, args.frames, args.size, args.size, 3)
    x = rng.uniform(-1, 1, shape).astype("float32")
    y = rng.integers(0, args.classes, args.batch)
    step, forward = step_and_forward(model, x, y)
    step_s, forward_s = paired_best(step, forward, warmup=args.warmup, repeat=args.repeat)
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    return step_s, forward_s, params


def measure_trunk(args, trainable_from):
    """Returns (upper step s, trunk forward s) of trunk caching at `trainable_from`."""
    import keras

    from reslstm_tf.training.finetune import build_classifier, trunk_split
    from reslstm_tf.video_classifier import SegmentEncoder

    keras.utils.set_random_seed(0)
    trunk, upper = trunk_split(build_classifier(_config(args, trainable_from), args.classes),
                               trainable_from)  # fmt: skip
    rng = np.random.default_rng(0)
    shape = (args.batch, args.segments, args.frames, args.size, args.size, 3)
    x = rng.uniform(-1, 1, shape).astype("float32")
    y = rng.integers(0, args.classes, args.batch)
    features = np.asarray(SegmentEncoder(trunk)(x))
    step, trunk_forward = step_and_forward(upper, features, y)
    encoder = SegmentEncoder(trunk)
    import tensorflow as tf

    trunk_fn = tf.function(lambda: encoder(x, training=False))
    return paired_best(step, lambda: trunk_fn().numpy(), warmup=args.warmup, repeat=args.repeat)


def main():
    """Times the steps and forward passes; prints the table and the ratios line."""
    from reslstm_tf.clip_spec import PRESETS

    parser = clip_parser(__doc__)  # --batch, --frames, --size, --warmup, --repeat
    # The study's clips (4 segments of 16 frames at 112 px); one warm-up, 3 timed steps.
    study_clip = PRESETS["cpu_small"]
    parser.set_defaults(size=study_clip.frame_size, warmup=1, repeat=3)
    parser.add_argument("--segments", type=int, default=study_clip.num_segments)
    parser.add_argument("--classes", type=int, default=51)
    parser.add_argument("--trunk_from", default="Mixed_5b")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: all)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    print(machine_header(), flush=True)
    clips = f"{args.batch}x{args.segments}x{args.frames}x{args.size}px"
    rows, ratios = [], {}
    for name, freeze in (("Mixed_4f", "Mixed_4f"), ("all", None)):
        step_s, forward_s, params = measure(args, freeze)
        ratio = step_s / forward_s
        rows.append((f"finetune step / forward, trainable_from={name} ({clips}, "
                     f"{params / 1e6:.1f} M trained)",
                     f"{step_s:.2f} s / {forward_s:.2f} s = {ratio:.2f}",
                     f"<= {TARGET}", f"{ratio:.2f}"))  # fmt: skip
        ratios.setdefault("finetune", ratio)
        ratios[f"finetune_{name}"] = ratio
        print(rows[-1], flush=True)
    upper_s, trunk_s = measure_trunk(args, args.trunk_from)
    full_s = measure(args, args.trunk_from)[0]
    rows.append((f"trunk-cached step, trainable_from={args.trunk_from} (vs full step)",
                 f"{upper_s:.3f} s (+ trunk {trunk_s:.2f} s once per view)",
                 f"{full_s:.2f} s", f"{full_s / upper_s:.1f}x"))  # fmt: skip
    ratios["finetune_trunk_speedup"] = full_s / upper_s
    report({"title": "Fine-tuning: step over forward (target <= 3.5)", "rows": rows,
            "ratios": ratios}, args.json)  # fmt: skip


if __name__ == "__main__":
    main()
