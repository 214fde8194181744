"""Tiny synthetic video sets for the fine-tuning tests: two classes anyone can tell apart."""

import cv2
import numpy as np

SMALL = dict(
    num_segments=2,
    segment_len=8,
    frame_size=32,
    backbone_weights=None,
    trainable_from="Mixed_4f",
    preset="res2",
    head={"units": 16, "dropout": 0.0},
    flow_method="farneback",
    progress=False,
)
CLASSES = ("Bright", "Dark")


def write_video(path, level, frames=20, size=(48, 40), seed=0, shift=0):
    """An FFV1 video of a noisy texture around grey `level` moving `shift` px per frame."""
    rng = np.random.default_rng(seed)
    width, height = size
    base = rng.normal(level, 25, (height // 4, (width + shift * frames) // 4 + 1))
    big = cv2.resize(np.clip(base, 0, 255).astype(np.float32), None, fx=4, fy=4)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10, (width, height))
    assert writer.isOpened()
    for i in range(frames):
        start = shift * (frames - i)
        gray = np.clip(big[:height, start : start + width], 0, 255).astype(np.uint8)
        writer.write(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def write_dataset(root, per_class=2, frames=20):
    """Writes `per_class` videos of each class under root/<Class>/; returns the root.

    Bright videos move right, dark ones do not move: RGB and flow both separate them.
    """
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            level = 200 if label == 0 else 50
            shift = 2 if label == 0 else 0
            write_video(
                root / name / f"{name}{i}.avi", level, frames, seed=10 * label + i, shift=shift
            )
    return root
