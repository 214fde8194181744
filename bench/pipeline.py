"""Input pipeline and feature extraction: frames/s against ffmpeg, videos/s, peak memory.

1. Decoding, one thread each, the same real clips: ours is `load_clip` (header probe,
   segment sampling, sparse decode, short-side resize, centre crop, scaling to
   [-1, 1]); the peers are the ffmpeg binary of the `imageio-ffmpeg` package (bench
   extra) decoding every frame to the null muxer (`-f null`: no colour conversion, the
   floor of any decoder-based pipeline) and decoding to RGB (`-pix_fmt rgb24 -f
   rawvideo`), each timed by ffmpeg's own `-benchmark` (process start-up excluded).
2. Decoding only the frames used: `load_clip` against decoding and converting every
   frame, on the two full-resolution originals and a 1000-frame video.
3. Parallel decode and prefetch: `video_dataset` clips/s with one decode call at a time
   against `num_parallel_calls=AUTOTUNE`.
4. Feature extraction (`reslstm-extract`, I3D RGB, K_v=8 segments of 16 frames):
   videos/s and peak RSS, against the backbone alone on the same segments (the limit
   when decoding overlaps the network).
5. Peak memory `load_clip` adds (over the process after its imports) on synthetic
   videos of growing length, each in a fresh process: it must not grow with the length.

    python bench/pipeline.py [--videos DIR] [--limit 30] [--extract-limit 12]
"""

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_header, report, time_call  # noqa: E402

DEFAULT_VIDEOS = pathlib.Path(__file__).resolve().parents[1].parent / "shared/data/skateboard"


def ffmpeg_exe():
    """Returns the path of an ffmpeg binary (imageio-ffmpeg's, else one on PATH) or None."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        import shutil

        return shutil.which("ffmpeg")


def announced_frames(paths):
    """Returns the total frame count the containers announce."""
    from reslstm_tf.data.video import probe

    return sum(probe(p, decode_first=False).frame_count for p in paths)


def ours_seconds(paths, segments=8, segment_len=16, all_frames=False):
    """Returns the seconds `load_clip` (or a decode-every-frame variant) takes, one thread."""
    import cv2
    import numpy as np

    from reslstm_tf.data import video
    from reslstm_tf.data.pipeline import load_clip

    cv2.setNumThreads(1)
    start = time.perf_counter()
    for path in paths:
        if all_frames:
            count = video.probe(path, decode_first=False).frame_count
            frames = video.read_frames(path, np.arange(count), on_missing="last")
            video.transform_frames(frames, short_side=256, crop_size=224)
        else:
            load_clip(path, segments, segment_len, short="overlap")
    return time.perf_counter() - start


def ffmpeg_seconds(paths, exe, rgb=False):
    """Returns ffmpeg's own decode time (-benchmark rtime, start-up excluded), one thread."""
    total = 0.0
    for path in paths:
        output = ["-pix_fmt", "rgb24", "-f", "rawvideo", "-y", os.devnull] if rgb else []
        output = output or ["-f", "null", "-"]
        command = [exe, "-hide_banner", "-nostats", "-benchmark", "-threads", "1", "-i", str(path)]
        command += output
        result = subprocess.run(command, check=True, capture_output=True, text=True)
        match = re.search(r"rtime=([0-9.]+)s", result.stdout + result.stderr)
        total += float(match.group(1))
    return total


def dataset_clips_per_second(paths, parallel):
    """Returns clips/s of `video_dataset` (8x16 frames, 224) with 1 or AUTOTUNE decoders."""
    import tensorflow as tf

    from reslstm_tf.data.pipeline import video_dataset

    items = [(str(p), 0) for p in paths]
    ds = video_dataset(
        items, "", 8, 16, short="overlap", num_parallel_calls=None if parallel else 1
    )
    if not parallel:
        ds = ds.prefetch(0)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 0 if parallel else 1
    ds = ds.with_options(options)
    start = time.perf_counter()
    count = sum(1 for _ in ds)
    return count / (time.perf_counter() - start)


_EXTRACT_CHILD = """
import atexit, resource, sys
atexit.register(lambda: print("PEAK_RSS_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                / 1024, file=sys.stderr))
sys.argv = ["reslstm-extract", *sys.argv[1:]]
from reslstm_tf.cli.extract import run
run()
"""


def extraction(videos_dir, split_file, out_dir, limit, decode_workers):
    """Runs reslstm-extract in a fresh process; returns (videos/s, peak RSS MB)."""
    command = [
        sys.executable,
        "-c",
        _EXTRACT_CHILD,
        f"--data_dir={videos_dir}",
        f"--split_file={split_file}",
        f"--out_dir={out_dir}",
        f"--limit={limit}",
        "--segments=8",
        "--short=overlap",
        f"--decode_workers={decode_workers}",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"reslstm-extract failed:\n{result.stderr[-2000:]}")
    seconds = float(re.search(r"failed \d+ .*?, ([0-9.]+) s", result.stdout).group(1))
    peak = float(re.search(r"PEAK_RSS_MB ([0-9.]+)", result.stderr).group(1))
    return limit / seconds, peak


def backbone_videos_per_second(segments=8):
    """Returns videos/s of the I3D alone on K_v segments per video (16x224x224, batch 8)."""
    import numpy as np

    from reslstm_tf.backbones.extractor import SegmentFeatureExtractor

    extractor = SegmentFeatureExtractor(backbone="i3d", modality="rgb")
    clip = np.random.default_rng(0).uniform(-1, 1, (segments, 16, 224, 224, 3))
    clip = clip.astype(np.float32)
    return 1.0 / time_call(lambda: extractor(clip), warmup=1, repeat=3)


_MEMORY_CHILD = """
import sys
from reslstm_tf.data.pipeline import load_clip
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as handle:  # reset the peak (VmHWM) to now
    handle.write("5")
load_clip(sys.argv[1], 8, 16)
print(status("VmHWM:") - before)
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
    """Returns how much `load_clip` on `path` raises a fresh process's peak RSS, in MB."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def run(args):
    """Runs every measurement; returns the result (ratio: ours over `ffmpeg -f null`)."""
    print(machine_header())
    videos = pathlib.Path(args.videos)
    paths = sorted(videos.rglob("*.mp4"))[:: max(1, len(list(videos.rglob("*.mp4"))) // 30)]
    paths = paths[: args.limit]
    if not paths:
        raise SystemExit(f"no .mp4 files under {videos}; pass --videos")
    frames = announced_frames(paths)
    ours = frames / ours_seconds(paths)
    rows = []
    exe = ffmpeg_exe()
    pipeline_ratio = None
    if exe:
        null = frames / ffmpeg_seconds(paths, exe)
        rgb = frames / ffmpeg_seconds(paths, exe, rgb=True)
        pipeline_ratio = ours / null
        label = f"load_clip frames/s, {len(paths)} real clips, 1 thread"
        rows.append((label, f"{ours:.0f}", f"{null:.0f} (ffmpeg -f null)", f"{ours / null:.2f}x"))
        rows.append((label, f"{ours:.0f}", f"{rgb:.0f} (ffmpeg to rgb24)", f"{ours / rgb:.2f}x"))
    else:
        rows.append(("load_clip frames/s", f"{ours:.0f}", "ffmpeg not found", "-"))
    serial = dataset_clips_per_second(paths, parallel=False)
    parallel = dataset_clips_per_second(paths, parallel=True)
    rows.append(
        (
            "video_dataset clips/s: parallel decode + prefetch",
            f"{parallel:.2f}",
            f"{serial:.2f} (1 decode call at a time)",
            f"{parallel / serial:.2f}x",
        )
    )
    limit = backbone_videos_per_second()
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (2,):
            rate, peak = extraction(
                videos,
                videos / "trainlist.txt",
                pathlib.Path(tmp, f"w{workers}"),
                args.extract_limit,
                workers,
            )
            rows.append(
                (
                    f"reslstm-extract videos/s (I3D, 8x16 frames, {workers} decode threads)",
                    f"{rate:.2f}",
                    f"{limit:.2f} (I3D alone)",
                    f"{rate / limit:.2f}x",
                )
            )
            rows.append(
                (f"reslstm-extract peak RSS MB ({workers} decode threads)", f"{peak:.0f}", "-", "-")
            )
        long_videos = sorted((videos / "originals").glob("*.mov"))
        long_videos.append(synthetic_video(pathlib.Path(tmp, "long.mp4"), 1000))
        for path in long_videos:
            sparse = ours_seconds([path])
            every = ours_seconds([path], all_frames=True)
            rows.append(
                (
                    f"load_clip s, decoding only the 128 sampled frames: {path.name}",
                    f"{sparse:.2f}",
                    f"{every:.2f} (convert every frame)",
                    f"{every / sparse:.2f}x",
                )
            )
        for count in (250, 1000, 4000):
            path = synthetic_video(pathlib.Path(tmp, f"v{count}.mp4"), count)
            rows.append(
                (
                    f"load_clip peak RSS increase MB, {count}-frame video",
                    f"{peak_memory_mb(path):.0f}",
                    "flat in length",
                    "-",
                )
            )
    ratios = {"pipeline": pipeline_ratio} if pipeline_ratio else {}
    return {"title": "Input pipeline and extraction", "rows": rows, "ratios": ratios}


def parse_args(argv=None):
    """Parses the benchmark's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default=str(DEFAULT_VIDEOS))
    parser.add_argument("--limit", type=int, default=30, help="clips for the decode rows")
    parser.add_argument("--extract-limit", type=int, default=24, help="videos to extract")
    parser.add_argument("--json", help="also write the result to this JSON file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    report(run(arguments), arguments.json)
