"""Input pipeline: decode + sample + resize frames/s against `ffmpeg -f null`, and peak memory.

Both sides decode the same real clips with one thread: ours is `load_clip` (decode,
segment sampling, short-side resize, centre crop, scaling to [-1, 1]); the peer is
the ffmpeg binary of the `imageio-ffmpeg` package (bench extra) decoding every frame
to the null muxer, the floor of any decoder-based pipeline. Then the peak memory
of `load_clip` on synthetic videos of growing length, each in a fresh process: it
must not grow with the video's length.

    python bench/pipeline.py [--videos DIR] [--limit 40]
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_header, print_table  # noqa: E402

DEFAULT_VIDEOS = pathlib.Path(__file__).resolve().parents[1].parent / "shared/data/skateboard"


def ffmpeg_exe():
    """Returns the path of an ffmpeg binary (imageio-ffmpeg's, else one on PATH) or None."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        import shutil

        return shutil.which("ffmpeg")


def ours_frames_per_second(paths, segments=8, segment_len=16):
    """Returns (decoded frames/s, frames delivered/s) of `load_clip` with one thread."""
    import cv2

    from reslstm_tf.data.pipeline import load_clip
    from reslstm_tf.data.video import probe

    cv2.setNumThreads(1)
    total = sum(probe(p).frame_count for p in paths)
    start = time.perf_counter()
    for path in paths:
        load_clip(path, segments, segment_len, short="overlap")
    seconds = time.perf_counter() - start
    return total / seconds, len(paths) * segments * segment_len / seconds


def ffmpeg_frames_per_second(paths, exe):
    """Returns frames/s of `ffmpeg -threads 1 -i f -f null -` over the same files."""
    from reslstm_tf.data.video import probe

    total = sum(probe(p).frame_count for p in paths)
    start = time.perf_counter()
    for path in paths:
        subprocess.run(
            [exe, "-v", "error", "-threads", "1", "-i", str(path), "-f", "null", "-"],
            check=True,
        )
    return total / (time.perf_counter() - start)


_MEMORY_CHILD = """
import resource, sys
from reslstm_tf.data.pipeline import load_clip
load_clip(sys.argv[1], 8, 16)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def synthetic_video(path, frames, size=(320, 240)):
    """Writes an mp4 of `frames` moving-gradient frames (mp4v) and returns its path."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, size)
    base = np.add.outer(np.arange(size[1]), np.arange(size[0])).astype(np.uint8)
    for index in range(frames):
        frame = np.roll(base, index, axis=1)
        writer.write(np.stack([frame, frame[::-1], np.roll(base, index, axis=0)], -1))
    writer.release()
    return path


def peak_memory_mb(path):
    """Returns the peak RSS in MB of a fresh process that runs `load_clip` on `path`."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def run(videos, limit):
    """Runs both measurements and prints them; returns {'pipeline': ours / ffmpeg}."""
    print(machine_header())
    paths = sorted(pathlib.Path(videos).rglob("*.mp4"))[:limit]
    if not paths:
        raise SystemExit(f"no .mp4 files under {videos}; pass --videos")
    exe = ffmpeg_exe()
    decoded, delivered = ours_frames_per_second(paths)
    rows = []
    if exe:
        peer = ffmpeg_frames_per_second(paths, exe)
        rows.append(
            (
                f"decode+sample+resize, {len(paths)} clips (frames/s)",
                f"{decoded:.0f}",
                f"{peer:.0f} (ffmpeg -f null)",
                f"{decoded / peer:.2f}x",
            )
        )
    else:
        peer = float("nan")
        rows.append(
            (
                "decode+sample+resize (frames/s)",
                f"{decoded:.0f}",
                'ffmpeg not found (pip install "reslstm-tf[bench]")',
                "-",
            )
        )
    rows.append(("frames delivered to the network /s", f"{delivered:.0f}", "-", "-"))
    print_table("Input pipeline, one thread each (ratio > 1: ours faster)", rows)

    memory_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for frames in (250, 1000, 4000):
            path = synthetic_video(pathlib.Path(tmp, f"v{frames}.mp4"), frames)
            memory_rows.append(
                (
                    f"{frames} frames ({frames / 25:.0f} s)",
                    f"{peak_memory_mb(path):.0f}",
                    "flat",
                    "",
                )
            )
    base = float(memory_rows[0][1])
    memory_rows = [
        (r[0], r[1], r[2], f"{float(r[1]) / base:.2f}x of 250 frames") for r in memory_rows
    ]
    print_table(
        "Peak memory of load_clip (MB, fresh process each)",
        memory_rows,
        header=("video", "peak RSS MB", "expected", "growth"),
    )
    return {"pipeline": decoded / peer}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default=str(DEFAULT_VIDEOS))
    parser.add_argument("--limit", type=int, default=40)
    args = parser.parse_args()
    result = run(args.videos, args.limit)
    print("ratios: " + " ".join(f"{k}={v:.2f}" for k, v in result.items()))
