"""The Beam pipeline against reslstm-extract: videos/s on the same clips and spec, one run.

Both extract the same real clips with the same `ClipSpec` and the same backbone (an I3D with
random weights saved to a file, so the cost is the real one and no download is needed):
`reslstm_tf.extract.extract` in this process, then `reslstm_tf.pipelines.extract.run_extract`
on the DirectRunner (``--direct_running_mode``, ``--direct_num_workers``). Each writes its
own cache; the Beam time includes starting its worker processes and loading a model in each
(the fixed cost a cluster pays once per worker). `beam=` is Beam's videos/s over
reslstm-extract's. The per-video seconds are what docs/beam.md's estimates start from.

    python bench/beam.py [--videos DIR] [--limit 24] [--segments 8] [--frame_size 224]
        [--mode multi_processing] [--workers 2]
"""

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_header  # noqa: E402

DEFAULT_VIDEOS = pathlib.Path(__file__).resolve().parents[1].parent / "shared/data/skateboard"


def _dataset(videos, limit, root):
    """A folder dataset of the first `limit` clips (linked), alternating the classes."""
    classes = sorted(p.name for p in videos.iterdir() if p.is_dir())
    lists = [sorted((videos / name).glob("*.mp4")) for name in classes]
    data = root / "videos"
    count = 0
    for rank in range(max(len(clips) for clips in lists)):
        for name, clips in zip(classes, lists):
            if count < limit and rank < len(clips):
                (data / name).mkdir(parents=True, exist_ok=True)
                (data / name / clips[rank].name).symlink_to(clips[rank])
                count += 1
    return data, count


def main():
    from reslstm_tf.clip_spec import PRESETS

    paper = PRESETS["paper"]  # its segments at 224 px, 8 of them a clip (half the paper's)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=pathlib.Path, default=DEFAULT_VIDEOS)
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--segments", type=int, default=paper.num_segments // 2)
    parser.add_argument("--segment_len", type=int, default=paper.segment_len)
    parser.add_argument("--frame_size", type=int, default=paper.frame_size)
    parser.add_argument("--mode", default="multi_processing")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    from reslstm_tf.backbones.extractor import feature_model
    from reslstm_tf.clip_spec import ClipSpec
    from reslstm_tf.extract import ExtractConfig, extract
    from reslstm_tf.pipelines.extract import pipeline_options, run_extract

    print(machine_header())
    root = pathlib.Path(tempfile.mkdtemp(prefix="beam-bench-"))
    try:
        data, count = _dataset(args.videos, args.limit, root)
        weights = root / "i3d.weights.h5"
        feature_model("i3d", "rgb", weights=None).save_weights(weights)
        spec = ClipSpec(
            num_segments=args.segments,
            segment_len=args.segment_len,
            frame_size=args.frame_size,
            backbone_weights=os.fspath(weights),
        )

        def config(name):
            return ExtractConfig(
                data_dir=os.fspath(data), out_dir=os.fspath(root / name), clip=spec
            )

        start = time.monotonic()
        extract(config("extract"), progress=False)
        extract_s = time.monotonic() - start
        options = pipeline_options(
            "direct",
            [f"--direct_running_mode={args.mode}", f"--direct_num_workers={args.workers}"],
        )
        start = time.monotonic()
        run_extract(config("beam"), options)
        beam_s = time.monotonic() - start
    finally:
        shutil.rmtree(root, ignore_errors=True)
    spec_text = f"{args.segments}x{args.segment_len} frames at {args.frame_size} px"
    print(f"{count} clips, I3D RGB, {spec_text}")
    print("| | seconds | videos/s | s per video |")
    print("|---|---|---|---|")
    for name, seconds in (("reslstm-extract", extract_s), (f"Beam {args.mode}", beam_s)):
        print(f"| {name} | {seconds:.1f} | {count / seconds:.3f} | {seconds / count:.2f} |")
    print(f"beam={extract_s / beam_s:.2f}")


if __name__ == "__main__":
    main()
