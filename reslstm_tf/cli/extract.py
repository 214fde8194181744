"""`python -m reslstm_tf.cli.extract`: caches per-segment backbone features of a dataset.

Each video is split into ``--segments`` segments (eval-mode sampling: centred, deterministic),
decoded and centre-cropped to the backbone's frame size, run through the 3D CNN, and the
(K_v, d_f) features are written to a resumable TFRecord cache (`reslstm_tf.data.features`).
Unreadable videos are listed in ``failures.json`` and never stop the run; a rerun skips the
videos already cached and retries the failed ones.
"""

import concurrent.futures
import json
import logging
import os
import time

import cv2
import numpy as np
from absl import app, flags

from reslstm_tf.cache import atomic_write
from reslstm_tf.data import datasets
from reslstm_tf.data.features import FeatureCacheWriter
from reslstm_tf.data.pipeline import load_clip
from reslstm_tf.data.video import VideoReadError

logger = logging.getLogger(__name__)

FLAGS = flags.FLAGS


def define_flags():
    """Defines the tool's absl flags (at run time, so importing `extract` defines none)."""
    if "segments" in FLAGS:
        return
    flags.DEFINE_enum("dataset", "folder", ["ucf101", "hmdb51", "folder"], "Dataset format.")
    flags.DEFINE_string("data_dir", None, "Folder of the videos (paths in the lists are relative).")
    flags.DEFINE_string(
        "split_dir", None, "ucf101/hmdb51: folder of the split files (default --data_dir)."
    )
    flags.DEFINE_integer("split", 1, "ucf101/hmdb51: official split 1, 2 or 3.")
    flags.DEFINE_string("split_file", None, "folder: optional list of <Class>/<video> lines.")
    flags.DEFINE_enum("subset", "all", ["train", "test", "all"], "ucf101/hmdb51: which videos.")
    flags.DEFINE_enum("backbone", "i3d", ["i3d", "c3d"], "3D CNN feature extractor.")
    flags.DEFINE_string("weights", "kinetics400", "Backbone weights.")
    flags.DEFINE_enum("modality", "rgb", ["rgb", "flow"], "Input stream.")
    flags.DEFINE_enum(
        "flow_method", "tvl1", ["tvl1", "farneback"], "Optical flow for --modality flow."
    )
    flags.DEFINE_integer("segments", 8, "K_v, segments per video.", lower_bound=1)
    flags.DEFINE_integer("segment_len", None, "Frames per segment (default: the backbone's).")
    flags.DEFINE_string("out_dir", None, "Output folder of the feature cache.")
    flags.DEFINE_integer("batch_size", 4, "Videos per backbone call.", lower_bound=1)
    flags.DEFINE_integer("num_shards", 1, "Number of parallel workers.", lower_bound=1)
    flags.DEFINE_integer("shard_index", 0, "This worker's index in [0, num_shards).", lower_bound=0)
    flags.DEFINE_enum(
        "short",
        "loop",
        ["loop", "pad", "overlap"],
        "Videos shorter than K_v windows: loop them, pad with the last frame, or overlap "
        "the windows (best for clips of a few seconds).",
    )
    flags.DEFINE_integer("limit", None, "Process at most this many videos (smoke tests).")
    flags.DEFINE_integer("decode_workers", 2, "Threads decoding videos.", lower_bound=1)


def _decode(item, data_dir, num_segments, segment_len, frame_size, modality, flow_method, short):
    """Returns (item, clip, sample, info, error) for one video; never raises on bad input."""
    path = os.path.join(os.fspath(data_dir), item.path)
    try:
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
    except (VideoReadError, ValueError, OSError, cv2.error) as err:
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
        dict: done, skipped (already cached), failed, seconds, out_dir, failures_file.
    """
    from tqdm.auto import tqdm

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
    done, failures = 0, []
    suffix = "" if num_shards == 1 else f"-{shard_index:05d}-of-{num_shards:05d}"
    failures_file = os.path.join(os.fspath(out_dir), f"failures{suffix}.json")
    with FeatureCacheWriter(
        out_dir,
        shard_size=shard_size,
        metadata=settings,
        num_shards=num_shards,
        shard_index=shard_index,
    ) as writer:
        todo = [item for item in items if not writer.is_done(item.path)]
        skipped = len(items) - len(todo)
        bar = tqdm(total=len(todo), unit="video", disable=not progress, desc="extract")
        decode_args = (
            data_dir,
            num_segments,
            segment_len,
            frame_size,
            modality,
            flow_method,
            short,
        )
        with concurrent.futures.ThreadPoolExecutor(decode_workers) as pool:
            pending = [pool.submit(_decode, item, *decode_args) for item in todo[:batch_size]]
            position = len(pending)
            while pending:
                batch = [future.result() for future in pending]
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
                        failures.append({"id": item.path, "error": "non-finite features"})
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
        bar.close()
    with atomic_write(failures_file, "w") as handle:
        json.dump({"failures": failures}, handle, indent=1)
    summary = {
        "done": done,
        "skipped": skipped,
        "failed": len(failures),
        "seconds": round(time.monotonic() - start, 2),
        "out_dir": os.fspath(out_dir),
        "failures_file": failures_file,
    }
    logger.info("extract summary: %s", summary)
    return summary


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


def main(argv):
    """Maps the flags onto `extract` and prints the summary."""
    del argv
    if not FLAGS.data_dir or not FLAGS.out_dir:
        raise app.UsageError("--data_dir and --out_dir are required")
    from reslstm_tf.backbones.features import SegmentFeatureExtractor

    videos = _load_videos()
    for problem in videos.problems:
        logger.warning("split list: %s", problem)
    extractor = SegmentFeatureExtractor(
        backbone=FLAGS.backbone, modality=FLAGS.modality, weights=FLAGS.weights
    )
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
        num_shards=FLAGS.num_shards,
        shard_index=FLAGS.shard_index,
        limit=FLAGS.limit,
        decode_workers=FLAGS.decode_workers,
        metadata={
            "backbone": FLAGS.backbone,
            "weights": FLAGS.weights,
            "feature_dim": int(extractor.feature_dim),
            "classes": videos.classes,
        },
    )
    print(
        f"done {summary['done']}, skipped {summary['skipped']} (already cached), "
        f"failed {summary['failed']} (see {summary['failures_file']}), "
        f"{summary['seconds']:.1f} s"
    )


def run():
    """Console-script entry point."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
