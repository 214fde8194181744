"""Input pipeline and feature extraction: frames/s against ffmpeg, videos/s, peak memory.

1. Decoding, one thread each, the same real clips: ours is `load_clip` (header probe,
   segment sampling, sparse decode, short-side resize, centre crop) with its decoder on
   one thread, returning uint8 clips (the GPU input path: scaled to [-1, 1] on the device)
   and float32 clips (the default); the peers are the ffmpeg binary (of the
   `imageio-ffmpeg` package of the bench extra, else on PATH) decoding every frame to the
   null muxer (`-f null`: no colour conversion, the floor of any decoder-based pipeline)
   and decoding to RGB (`-pix_fmt rgb24 -f rawvideo`), each timed by ffmpeg's own
   `-benchmark` (process start-up excluded). `pipeline=` is the uint8 path over
   `ffmpeg -f null`. The same with every decoder on its own thread choice, and
   `load_clip` with OpenCV as the decoder against PyAV, side by side. Ours and the peers
   run alternately, best of `--rounds` (the machine is shared).
2. Decoding only the frames used: `load_clip` against decoding and converting every
   frame, on the two full-resolution originals and a 1000-frame video.
3. Parallel decode and prefetch: `video_dataset` clips/s with one decode call at a time
   against `num_parallel_calls=AUTOTUNE`.
4. Feature extraction (`reslstm-extract`, I3D RGB, K_v=8 segments of 16 frames):
   videos/s and peak RSS, against the backbone alone on the same segments (the limit
   when decoding overlaps the network).
5. Peak memory `load_clip` adds (over the process after its imports) on synthetic
   videos of growing length, each in a fresh process: it must not grow with the length.

    python bench/pipeline.py [--videos DIR] [--limit 30] [--extract-limit 12] [--rounds 5]
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


def ours_seconds(paths, all_frames=False, dtype="float32", threads=1):
    """Returns the seconds `load_clip` (or a decode-every-frame variant) takes.

    Args:
        paths: the videos.
        all_frames: decode and transform every frame instead (`read_frames` + transform).
        dtype: `load_clip`'s output, 'float32' or 'uint8'.
        threads: decoder threads (1: one thread, None: OpenCV's choice).
    """
    import cv2
    import numpy as np

    from reslstm_tf.data import video
    from reslstm_tf.data.pipeline import load_clip

    cv2.setNumThreads(1 if threads == 1 else cv2.getNumberOfCPUs())
    start = time.perf_counter()
    for path in paths:
        if all_frames:
            count = video.probe(path, decode_first=False).frame_count
            frames = video.read_frames(path, np.arange(count), on_missing="last")
            video.transform_frames(frames, short_side=256, crop_size=224)
        else:
            load_clip(path, 8, 16, short="overlap", dtype=dtype, threads=threads)
    return time.perf_counter() - start


def pyav_seconds(paths, threads=1):
    """Returns the seconds PyAV takes for `load_clip`'s uint8 work (8 x 16 frames, 224).

    The same steps: the header's frame count, segment sampling, decoding up to the last
    sampled frame, swscale to RGB (one converter per file, on one thread) for the sampled
    frames only, a centre crop of each (no resize: the clips' short side is 256), the clip
    stacked in sampling order. The RGB bytes equal OpenCV's on these clips.
    """
    import av
    import av.video.reformatter
    import numpy as np

    from reslstm_tf.data import sampling

    start = time.perf_counter()
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "SLICE" if threads == 1 else "AUTO"
            stream.codec_context.thread_count = threads or 0
            sample = sampling.sample_segments(stream.frames, 8, 16, short="overlap")
            want, crops = set(sample.indices.flat), {}
            reformatter = av.video.reformatter.VideoReformatter()
            for index, frame in enumerate(container.decode(stream)):
                if index in want:
                    rgb = reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()
                    top, left = (rgb.shape[0] - 224) // 2, (rgb.shape[1] - 224) // 2
                    crops[index] = rgb[top : top + 224, left : left + 224].copy()
                    if len(crops) == len(want):
                        break
        np.stack([crops[i] for i in sample.indices.flat])
    return time.perf_counter() - start


def ffmpeg_seconds(paths, exe, rgb=False, threads=1):
    """Returns ffmpeg's own decode time (-benchmark rtime, start-up excluded).

    Args:
        paths: the videos.
        exe: the ffmpeg binary.
        rgb: convert to rgb24 (else decode to the null muxer).
        threads: decoder threads (0: ffmpeg's choice).
    """
    total = 0.0
    for path in paths:
        output = ["-pix_fmt", "rgb24", "-f", "rawvideo", "-y", os.devnull] if rgb else []
        output = output or ["-f", "null", "-"]
        command = [exe, "-hide_banner", "-nostats", "-benchmark", "-threads", str(threads)]
        command += ["-i", str(path), *output]
        result = subprocess.run(command, check=True, capture_output=True, text=True)
        match = re.search(r"rtime=([0-9.]+)s", result.stdout + result.stderr)
        total += float(match.group(1))
    return total


def alternate_best(timers, rounds):
    """Returns {name: best seconds} over `rounds` rounds calling every timer in turn.

    Alternating exposes each to the same machine load; the best drops the calls that
    other processes slowed down. Each timer returns its own seconds.
    """
    best = {name: float("inf") for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            best[name] = min(best[name], timer())
    return best


def decode_rows(paths, exe, rounds):
    """Returns (rows, ratios) of the decoding measurements (item 1 of the docstring)."""
    frames = announced_frames(paths)
    timers = {
        "uint8": lambda: ours_seconds(paths, dtype="uint8"),
        "float32": lambda: ours_seconds(paths, dtype="float32"),
        "uint8 auto": lambda: ours_seconds(paths, dtype="uint8", threads=None),
    }
    try:
        import av  # noqa: F401  (bench extra)

        timers["pyav"] = lambda: pyav_seconds(paths)
        timers["pyav auto"] = lambda: pyav_seconds(paths, threads=None)
    except ImportError:
        pass
    if exe:
        timers["null"] = lambda: ffmpeg_seconds(paths, exe)
        timers["rgb"] = lambda: ffmpeg_seconds(paths, exe, rgb=True)
        timers["null auto"] = lambda: ffmpeg_seconds(paths, exe, threads=0)
    ours_seconds(paths[:3], dtype="uint8")  # warm-up: imports, first decoder set-up
    rate = {name: frames / seconds for name, seconds in alternate_best(timers, rounds).items()}
    label = f"load_clip frames/s, {len(paths)} real clips"
    rows = []
    for name, note in (("uint8", "1 thread"), ("uint8 auto", "decoder threads")):
        peer = name.replace("uint8", "pyav")
        if peer in rate:
            ratio = f"{rate[name] / rate[peer]:.2f}x"
            rows.append(
                (f"{label}, {note}, uint8", f"{rate[name]:.0f}", f"{rate[peer]:.0f} (PyAV)", ratio)
            )
    if not exe:
        rows.append((f"{label}, 1 thread, uint8", f"{rate['uint8']:.0f}", "no ffmpeg", "-"))
        return rows, {}
    for name, peer, note in (
        ("uint8", "null", "1 thread, uint8"),
        ("uint8", "rgb", "1 thread, uint8"),
        ("float32", "null", "1 thread, float32"),
        ("uint8 auto", "null auto", "decoder threads, uint8"),
    ):
        what = {"null": "ffmpeg -f null", "rgb": "ffmpeg to rgb24"}[peer.split()[0]]
        what += ", its threads" if peer.endswith("auto") else ""
        ratio = rate[name] / rate[peer]
        rows.append(
            (f"{label}, {note}", f"{rate[name]:.0f}", f"{rate[peer]:.0f} ({what})", f"{ratio:.2f}x")
        )
    ratios = {
        "pipeline": rate["uint8"] / rate["null"],
        "pipeline_float32": rate["float32"] / rate["null"],
    }
    return rows, ratios


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
    """Runs every measurement; returns the result (`pipeline`: ours over `ffmpeg -f null`)."""
    print(machine_header())
    videos = pathlib.Path(args.videos)
    paths = sorted(videos.rglob("*.mp4"))[:: max(1, len(list(videos.rglob("*.mp4"))) // 30)]
    paths = paths[: args.limit]
    if not paths:
        raise SystemExit(f"no .mp4 files under {videos}; pass --videos")
    load = os.getloadavg()[0]
    rows, ratios = decode_rows(paths, ffmpeg_exe(), args.rounds)
    load = f"{load:.1f} -> {os.getloadavg()[0]:.1f}"
    rows.append(
        (f"load average (1 min) over the decode rows, {os.cpu_count()} cores", load, "-", "-")
    )
    if args.only_decode:
        return {"title": "Input pipeline and extraction", "rows": rows, "ratios": ratios}
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
    return {"title": "Input pipeline and extraction", "rows": rows, "ratios": ratios}


def parse_args(argv=None):
    """Parses the benchmark's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default=str(DEFAULT_VIDEOS))
    parser.add_argument("--limit", type=int, default=30, help="clips for the decode rows")
    parser.add_argument("--extract-limit", type=int, default=24, help="videos to extract")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds, best kept")
    parser.add_argument("--only-decode", action="store_true", help="item 1 only")
    parser.add_argument("--json", help="also write the result to this JSON file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    report(run(arguments), arguments.json)
