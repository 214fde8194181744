"""`python -m reslstm_tf.cli.extract`: caches per-segment backbone features of a dataset.

Each video is split into ``--segments`` segments (eval-mode sampling: centred, deterministic),
decoded and centre-cropped to the backbone's frame size, run through the 3D CNN, and the
(K_v, d_f) features are written to a resumable TFRecord cache (`reslstm_tf.data.feature_cache`).

Bad videos never stop the run: a missing, empty, truncated-to-nothing or non-video file, a
file without a video stream, or one declaring frames larger than `MAX_FRAME_PIXELS` is
reported by name with its reason (on stdout and in ``failures.json``) and skipped; every
other video is extracted. A rerun skips the videos already cached and retries the failed
ones. A container is recognised by its content, not its extension (an mp4 named ``.avi``
decodes). Exit status: 0 when the run finished (some videos may have failed: they are
listed); 1 when it stopped or nothing could be extracted: bad flags or split files, an
output folder that cannot be written (checked before anything is decoded), a full disk, or
every video failing. After a stop the shards written so far stay readable and the same
command resumes.

Crash safety: the run can be killed at any point (preemption, OOM killer) and resumed by
running the same command; every video then ends up in the cache exactly once. The points
the reliability tests kill it at (``RESLSTM_FAULT=<point>[:N]``, `reslstm_tf.faults`) are:

* ``extract_decoded``: a batch of videos is decoded, its features are not yet written;
* ``shard_record_written``: a record is in the temporary shard file, which is not yet
  complete nor renamed (`reslstm_tf.data.feature_cache`);
* ``shard_finalised``: the shard is renamed into place, the index does not list it yet;
* ``index_updated``: the index lists the shard;
* ``extract_finished``: every shard is written, ``failures.json`` and the report are not.
"""

import concurrent.futures
import json
import logging
import os
import sys
import time

import cv2
import numpy as np
from absl import app, flags

from reslstm_tf.data import datasets
from reslstm_tf.data import video as video_lib
from reslstm_tf.data.feature_cache import (
    FeatureCacheError,
    FeatureCacheWriteError,
    FeatureCacheWriter,
    check_writable,
)
from reslstm_tf.data.pipeline import load_clip
from reslstm_tf.data.video import VideoReadError
from reslstm_tf.faults import fault_point
from reslstm_tf.files import atomic_write

logger = logging.getLogger(__name__)

FLAGS = flags.FLAGS

# Frames larger than 8K DCI (8192x4320) are refused before decoding: a corrupt or hostile
# header can declare e.g. 16000x16000, which FFmpeg decodes into gigabytes per frame.
MAX_FRAME_PIXELS = 8192 * 4320

# How many failures the report prints by name (all of them are in failures.json).
REPORT_FAILURES = 50


def define_flags():
    """Defines the tool's absl flags (at run time, so importing `extract` defines none)."""
    if "segments" in FLAGS:
        return
    flags.DEFINE_enum("dataset", "folder", ["ucf101", "hmdb51", "folder"], "Dataset format.")
    flags.DEFINE_string("data_dir", None, "Folder of the videos (paths in the lists are relative).")
    flags.DEFINE_string(
        "split_dir", None, "ucf101/hmdb51: folder of the split files (default --data_dir)."
    )
    flags.DEFINE_integer(
        "split", 1, "ucf101/hmdb51: official split 1, 2 or 3.", lower_bound=1, upper_bound=3
    )
    flags.DEFINE_string("split_file", None, "folder: optional list of <Class>/<video> lines.")
    flags.DEFINE_enum("subset", "all", ["train", "test", "all"], "ucf101/hmdb51: which videos.")
    flags.DEFINE_enum("backbone", "i3d", ["i3d", "c3d"], "3D CNN feature extractor.")
    flags.DEFINE_string("weights", "kinetics400", "Backbone weights.")
    flags.DEFINE_enum(
        "precision",
        "float32",
        ["float32", "mixed_bfloat16"],
        "Backbone arithmetic: mixed_bfloat16 is ~1.6x faster on CPUs with native bfloat16 "
        "(AVX512_BF16, AMX) and on recent GPUs, with ~1e-2 relative feature change.",
    )
    flags.DEFINE_enum("modality", "rgb", ["rgb", "flow"], "Input stream.")
    flags.DEFINE_enum(
        "flow_method", "tvl1", ["tvl1", "farneback"], "Optical flow for --modality flow."
    )
    flags.DEFINE_integer("segments", 8, "K_v, segments per video.", lower_bound=1)
    flags.DEFINE_integer(
        "segment_len", None, "Frames per segment (default: the backbone's).", lower_bound=1
    )
    flags.DEFINE_string("out_dir", None, "Output folder of the feature cache.")
    flags.DEFINE_integer("batch_size", 4, "Videos per backbone call.", lower_bound=1)
    flags.DEFINE_integer(
        "shard_size", 256, "Videos per TFRecord shard (a crash redoes at most one).", lower_bound=1
    )
    flags.DEFINE_integer("num_shards", 1, "Number of parallel workers.", lower_bound=1)
    flags.DEFINE_integer("shard_index", 0, "This worker's index in [0, num_shards).", lower_bound=0)
    flags.DEFINE_enum(
        "short",
        "loop",
        ["loop", "pad", "overlap"],
        "Videos shorter than K_v windows: loop them, pad with the last frame, or overlap "
        "the windows (best for clips of a few seconds).",
    )
    flags.DEFINE_integer(
        "limit", None, "Process at most this many videos (smoke tests).", lower_bound=1
    )
    flags.DEFINE_integer("decode_workers", 2, "Threads decoding videos.", lower_bound=1)


def check_frame_size(path, max_pixels=MAX_FRAME_PIXELS):
    """Raises `VideoReadError` if the video's header declares frames over `max_pixels`."""
    info = video_lib.probe(path, decode_first=False)
    if info.width * info.height > max_pixels:
        raise VideoReadError(
            path,
            f"its header declares {info.width}x{info.height} frames "
            f"({info.width * info.height / 1e6:.0f} Mpixel), over the limit of "
            f"{max_pixels / 1e6:.1f} Mpixel (8192x4320); refusing to decode it",
        )
    return info


def _decode(item, data_dir, num_segments, segment_len, frame_size, modality, flow_method, short):
    """Returns (item, clip, sample, info, error) for one video; never raises on bad input."""
    path = os.path.join(os.fspath(data_dir), item.path)
    try:
        check_frame_size(path)
        clip, sample, info = load_clip(
            path,
            num_segments,
            segment_len,
            mode="eval",
            frame_size=frame_size,
            modality=modality,
            flow_method=flow_method,
            short=short,
            return_info=True,
        )
        return item, clip, sample, info, None
    except (VideoReadError, ValueError, OSError, cv2.error, MemoryError) as err:
        return item, None, None, None, f"{type(err).__name__}: {err}"


def _run_extractor(extractor, clips):
    """Runs the extractor on the concatenated segments of several videos; splits the result."""
    sizes = [len(c) for c in clips]
    feats = np.asarray(extractor(np.concatenate(clips, axis=0)), np.float32)
    if feats.shape[0] != sum(sizes) or feats.ndim != 2:
        raise ValueError(
            f"the extractor returned shape {feats.shape} for {sum(sizes)} segments; expected "
            f"({sum(sizes)}, feature_dim)"
        )
    return np.split(feats, np.cumsum(sizes)[:-1])


def extract(
    videos,
    data_dir,
    out_dir,
    extractor,
    *,
    num_segments=8,
    segment_len=None,
    frame_size=None,
    modality="rgb",
    flow_method="tvl1",
    short="loop",
    batch_size=4,
    num_shards=1,
    shard_index=0,
    limit=None,
    decode_workers=2,
    shard_size=256,
    metadata=None,
    progress=True,
):
    """Extracts and caches the segment features of `videos`; returns a summary dict.

    Args:
        videos: a `datasets.VideoList` (or iterable of `datasets.VideoItem`).
        data_dir: the folder the video paths are relative to.
        out_dir: the feature cache folder.
        extractor: callable float32 (N, L, H, W, C) in [-1, 1] -> (N, d_f), with attributes
            `segment_len` and `frame_size` (e.g. `SegmentFeatureExtractor`).
        num_segments: K_v.
        segment_len: frames per segment (default `extractor.segment_len`).
        frame_size: crop size (default `extractor.frame_size`).
        modality: 'rgb' or 'flow'.
        flow_method: 'tvl1' or 'farneback'.
        short: 'loop', 'pad' or 'overlap', for videos shorter than K_v windows
            (`reslstm_tf.data.sampling`).
        batch_size: videos per extractor call.
        num_shards: parallel workers; this one takes every `num_shards`-th video.
        shard_index: this worker's index.
        limit: at most this many videos of this worker's share.
        decode_workers: decoding threads (OpenCV releases the GIL).
        shard_size: videos per TFRecord shard.
        metadata: extra JSON-serialisable run settings stored in the cache index.
        progress: show a tqdm progress bar (videos/s, ETA).

    Returns:
        dict: done, skipped (already cached), failed, failures (list of {'id', 'error'}),
        seconds, out_dir, failures_file.

    Raises:
        FeatureCacheWriteError: the output folder cannot be written (checked before any
            decoding) or the disk filled up; the shards written before stay readable.
        FeatureCacheError: `out_dir` holds a cache made with other settings.
    """
    segment_len = segment_len or extractor.segment_len
    frame_size = frame_size or extractor.frame_size
    items = list(videos)[shard_index::num_shards]
    if limit is not None:
        items = items[:limit]
    settings = {
        "num_segments": num_segments,
        "segment_len": segment_len,
        "frame_size": frame_size,
        "modality": modality,
        "flow_method": flow_method if modality == "flow" else None,
        "sampling": "eval",
        "short": short,
        **(metadata or {}),
    }
    start = time.monotonic()
    failures = []
    suffix = "" if num_shards == 1 else f"-{shard_index:05d}-of-{num_shards:05d}"
    failures_file = os.path.join(os.fspath(out_dir), f"failures{suffix}.json")
    try:
        done, skipped = _extract_into(
            FeatureCacheWriter(
                out_dir,
                shard_size=shard_size,
                metadata=settings,
                num_shards=num_shards,
                shard_index=shard_index,
            ),
            items,
            extractor,
            failures,
            (data_dir, num_segments, segment_len, frame_size, modality, flow_method, short),
            batch_size=batch_size,
            decode_workers=decode_workers,
            progress=progress,
        )
    except FeatureCacheWriteError:
        try:  # best effort: the disk may be full
            _write_failures(failures_file, failures)
        except OSError:
            pass
        raise
    fault_point("extract_finished")
    try:
        _write_failures(failures_file, failures)
    except OSError as error:
        raise FeatureCacheWriteError(
            out_dir, error, "writing failures.json", done + skipped
        ) from None
    summary = {
        "done": done,
        "skipped": skipped,
        "failed": len(failures),
        "failures": failures,
        "seconds": round(time.monotonic() - start, 2),
        "out_dir": os.fspath(out_dir),
        "failures_file": failures_file,
    }
    logger.info("extract summary: %s", {k: v for k, v in summary.items() if k != "failures"})
    return summary


def _write_failures(path, failures):
    with atomic_write(path, "w") as handle:
        json.dump({"failures": failures}, handle, indent=1)


def _extract_into(
    writer, items, extractor, failures, decode_args, *, batch_size, decode_workers, progress
):
    """The decode -> backbone -> cache loop; returns (done, skipped), appends to failures."""
    from tqdm.auto import tqdm

    done = 0
    with writer:
        todo = [item for item in items if not writer.is_done(item.path)]
        skipped = len(items) - len(todo)
        bar = tqdm(total=len(todo), unit="video", disable=not progress, desc="extract")
        with bar, concurrent.futures.ThreadPoolExecutor(decode_workers) as pool:
            pending = [pool.submit(_decode, item, *decode_args) for item in todo[:batch_size]]
            position = len(pending)
            while pending:
                batch = [future.result() for future in pending]
                fault_point("extract_decoded")
                pending = [
                    pool.submit(_decode, item, *decode_args)
                    for item in todo[position : position + batch_size]
                ]
                position += len(pending)
                good = [entry for entry in batch if entry[4] is None]
                failures.extend({"id": e[0].path, "error": e[4]} for e in batch if e[4])
                try:
                    outputs = _run_extractor(extractor, [e[1] for e in good]) if good else []
                except Exception as err:  # noqa: BLE001 - isolate the failing video
                    logger.warning("batch failed (%s); retrying video by video", err)
                    outputs = []
                    for entry in list(good):
                        try:
                            outputs.append(_run_extractor(extractor, [entry[1]])[0])
                        except Exception as single:  # noqa: BLE001
                            failures.append(
                                {"id": entry[0].path, "error": f"{type(single).__name__}: {single}"}
                            )
                            good.remove(entry)
                for (item, _, sample, info, _), feats in zip(good, outputs):
                    if not np.all(np.isfinite(feats)):
                        failures.append(
                            {
                                "id": item.path,
                                "error": "ValueError: the backbone returned NaN or infinite "
                                "features",
                            }
                        )
                        continue
                    added = writer.add(
                        item.path,
                        item.label,
                        feats,
                        frame_indices=sample.indices,
                        num_frames=sample.num_frames,
                        fps=info.fps,
                        meta={"class_name": item.class_name},
                    )
                    done += int(added)  # False for a video listed twice
                bar.update(len(batch))
                bar.set_postfix(failed=len(failures))
    return done, skipped


def _load_videos():
    """Builds the video list from the flags."""
    if FLAGS.dataset == "folder":
        return datasets.folder(FLAGS.data_dir, FLAGS.split_file, on_error="skip")
    return datasets.load_dataset(
        FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        split_dir=FLAGS.split_dir or FLAGS.data_dir,
        split=FLAGS.split,
        subset=FLAGS.subset,
        on_error="skip",
    )


def _error(message):
    """Prints a one-paragraph error for the user; returns the exit status 1."""
    print(f"reslstm-extract: error: {message}", file=sys.stderr)
    return 1


def report(summary, problems=(), limit=REPORT_FAILURES, file=None):
    """Prints the failed videos and skipped split lines by name with their reason, and totals."""
    file = file or sys.stdout
    failures = summary.get("failures", [])
    for failure in failures[:limit]:
        print(f"failed: {failure['id']}: {failure['error']}", file=file)
    if len(failures) > limit:
        print(f"... and {len(failures) - limit} more failures", file=file)
    for problem in list(problems)[:limit]:
        print(f"skipped split line: {problem}", file=file)
    if len(problems) > limit:
        print(f"... and {len(problems) - limit} more split-file problems", file=file)
    print(
        f"done {summary['done']}, skipped {summary['skipped']} (already cached), "
        f"failed {summary['failed']} (see {summary['failures_file']}), "
        f"{summary['seconds']:.1f} s",
        file=file,
    )


def main(argv):
    """Maps the flags onto `extract`, prints the report; returns the exit status."""
    del argv
    if not FLAGS.data_dir or not FLAGS.out_dir:
        raise app.UsageError("--data_dir and --out_dir are required")
    if FLAGS.shard_index >= FLAGS.num_shards:
        raise app.UsageError(
            f"--shard_index must be in [0, --num_shards). Received: --shard_index="
            f"{FLAGS.shard_index}, --num_shards={FLAGS.num_shards}"
        )
    try:
        videos = _load_videos()
    except (datasets.SplitFileError, OSError, ValueError) as error:
        raise app.UsageError(str(error)) from None
    for problem in videos.problems:
        logger.warning("split list: %s", problem)
    if not len(videos):
        skipped = f" ({len(videos.problems)} split-file lines skipped)" if videos.problems else ""
        return _error(f"no videos to extract: the video list is empty{skipped}")
    try:
        check_writable(FLAGS.out_dir)  # before building the backbone or decoding anything
    except FeatureCacheWriteError as error:
        return _error(error)
    from reslstm_tf.backbones.extractor import SegmentFeatureExtractor

    extractor = SegmentFeatureExtractor(
        backbone=FLAGS.backbone,
        modality=FLAGS.modality,
        weights=FLAGS.weights,
        precision=FLAGS.precision,
    )
    try:
        summary = extract(
            videos,
            FLAGS.data_dir,
            FLAGS.out_dir,
            extractor,
            num_segments=FLAGS.segments,
            segment_len=FLAGS.segment_len,
            modality=FLAGS.modality,
            flow_method=FLAGS.flow_method,
            short=FLAGS.short,
            batch_size=FLAGS.batch_size,
            shard_size=FLAGS.shard_size,
            num_shards=FLAGS.num_shards,
            shard_index=FLAGS.shard_index,
            limit=FLAGS.limit,
            decode_workers=FLAGS.decode_workers,
            metadata={
                "backbone": FLAGS.backbone,
                "weights": FLAGS.weights,
                # recorded only when not the default, so older caches still resume
                **({"precision": FLAGS.precision} if FLAGS.precision != "float32" else {}),
                "feature_dim": int(extractor.feature_dim),
                "classes": videos.classes,
            },
        )
    except FeatureCacheError as error:  # unwritable or full output, or another cache's folder
        return _error(error)
    report(summary, videos.problems)
    if summary["failed"] and not summary["done"] and not summary["skipped"]:
        return _error(f"no video could be extracted: all {summary['failed']} failed (see above)")
    return 0


def run():
    """Console-script entry point."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
