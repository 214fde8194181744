"""Online recognition: latency against accuracy for segment length and frame size.

Streams DeepMind's cricket clip (79 frames, 25 fps) through `stream_video` with the
Kinetics-400 I3D at several segment lengths and crop sizes, not paced (compute
only), and prints per setting: compute per segment, the real-time factor (video
time per segment over compute time), and the final probability of the true class
"playing cricket" with its rank.

    python bench/streaming.py [--clip PATH]
"""

import argparse
import os
import pathlib
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_header, print_table  # noqa: E402

DEFAULT_CLIP = (
    pathlib.Path(__file__).resolve().parents[1].parent
    / "shared/data/kinetics_i3d/v_CricketShot_g04_c01_rgb.gif"
)
TRUE_CLASS = "playing cricket"


def run(clip, settings=((9, 224), (16, 193), (16, 224), (16, 256), (32, 224))):
    """Measures each (segment_len, frame_size); returns the rows printed."""
    from reslstm_tf import zoo
    from reslstm_tf.streaming import stream_video

    print(machine_header())
    model = zoo.load("kinetics400_i3d")
    rows = []
    for segment_len, frame_size in settings:
        events = list(stream_video(clip, model, segment_len, frame_size, realtime=False, top_k=400))
        compute = np.mean([e.compute_ms for e in events[1:] or events])
        budget = segment_len / events[0].fps * 1e3
        names = [name for name, _ in events[-1].ranked]
        p_true = dict(events[-1].ranked)[TRUE_CLASS]
        rows.append(
            (
                f"L={segment_len:2d}, {frame_size}px",
                f"{len(events)}",
                f"{compute:.0f} ms / {budget:.0f} ms",
                f"{budget / compute:.1f}x",
                f"{p_true:.3f} (rank {names.index(TRUE_CLASS) + 1})",
            )
        )
    print_table(
        f"Streaming {pathlib.Path(clip).name}: latency vs accuracy",
        rows,
        header=(
            "setting",
            "segments",
            "compute / video per segment",
            "real-time factor",
            f"p({TRUE_CLASS}) at the end",
        ),
    )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default=str(DEFAULT_CLIP))
    run(parser.parse_args().clip)
