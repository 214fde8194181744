"""Feature extraction: videos -> per-segment backbone features in a resumable cache.

Each video is split into K_v segments (eval-mode sampling of `reslstm_tf.data.sampling`:
centred, deterministic), decoded and centre-cropped as its `ClipSpec` says
(`reslstm_tf.data.reader.read_clip`), run through the 3D CNN, and the (K_v, d_f) features
are written to a TFRecord cache (`reslstm_tf.data.feature_cache`). `extract` is the one
entry point; ``reslstm-extract`` (`reslstm_tf.cli.extract`) maps its flags onto an
`ExtractConfig` and calls it.

Bad videos never stop the run: a missing, empty, truncated-to-nothing or non-video file, a
file without a video stream, or one whose header declares frames larger than
`MAX_FRAME_PIXELS`, more elongated than `MAX_ASPECT_RATIO` (a 4096x2 video would be resized
to 256x524288 pixels a frame) or a clip over `MAX_CLIP_BYTES` once resized, is reported by
name with its reason (in the summary and in ``failures.json``) and skipped; every other
video is extracted. A rerun skips the videos already cached and retries the failed ones. A
container is recognised by its content, not its extension.

Augmented views (``views=V``): besides the centred evaluation view, each video gets V
training-mode views, as fine-tuning cuts its clips (`reslstm_tf.data.clips.VideoClips`,
``mode="train"``): a random window in each of the K_v parts (TSN), the short side resized
to ``frame_size * 256 / 224`` and a random ``frame_size`` crop, and a horizontal flip with
probability 1/2 (flow: mirrored, its x component negated). View v of the video at position
i of the video list (before sharding) is ``VideoClips(videos, ..., seed=seed).load(i,
"train", epoch=v)``: a function of (seed, v, i) only, so reruns, resumed runs and parallel
workers cut the same views. They are stored in the video's one record (`feature_cache`),
written only once all its views are computed; the run costs (V + 1) times the extraction
without views.

Crash safety: the run can be killed at any point (preemption, OOM killer) and resumed by
running it again with the same settings; every video then ends up in the cache exactly
once; the cache is sealed as complete only when the whole run finished (readers refuse it
before). One writer at a time: a second run into the same `out_dir` (and `shard_index`) is
refused with `FolderBusyError` naming the running one's pid. The points the reliability
tests kill it at (``RESLSTM_FAULT=<point>[:N]``, `reslstm_tf.faults`) are:

* ``extract_decoded``: a batch of videos is decoded (their centred clips, or one of their
  views), its features are not yet written;
* ``shard_record_written``: a record is in the temporary shard file, which is not yet
  complete nor renamed (`reslstm_tf.data.feature_cache`);
* ``shard_finalised``: the shard is renamed into place, the index does not list it yet;
* ``index_updated``: the index lists the shard;
* ``extract_finished``: every shard is written and sealed, ``failures.json`` and the report
  are not.

Example:

    from reslstm_tf.clip_spec import ClipSpec
    from reslstm_tf.cli.extract import report
    from reslstm_tf.extract import ExtractConfig, extract

    summary = extract(ExtractConfig(data_dir="clips", out_dir="cache", clip=ClipSpec()))
    report(summary)
"""

import concurrent.futures
import dataclasses
import json
import logging
import os
import time

import cv2
import numpy as np

from reslstm_tf.checks import check_choice, check_positive_int
from reslstm_tf.clip_spec import ClipSpec
from reslstm_tf.data import datasets
from reslstm_tf.data import video as video_lib
from reslstm_tf.data.clips import VideoClips
from reslstm_tf.data.feature_cache import FeatureCacheWriteError, FeatureCacheWriter, check_writable
from reslstm_tf.data.reader import read_clip
from reslstm_tf.data.sampling import sample_segments
from reslstm_tf.data.video import VideoReadError
from reslstm_tf.faults import fault_point
from reslstm_tf.files import atomic_write, folder_lock

logger = logging.getLogger(__name__)

# Frames larger than 8K DCI (8192x4320) are refused before decoding: a corrupt or hostile
# header can declare e.g. 16000x16000, which FFmpeg decodes into gigabytes per frame.
MAX_FRAME_PIXELS = 8192 * 4320
# Long side over short side: 32:9 screens are 3.6, a 360-degree panorama 2; more than this
# is a corrupt or hostile header (resizing the short side would make the long one huge).
MAX_ASPECT_RATIO = 16
# The resized uint8 frames of one video, estimated from the header before decoding: a
# 16:9 video at 256 pixels and 16 segments of 16 frames needs 89 MiB.
MAX_CLIP_BYTES = 2 << 30

DATASETS = ("ucf101", "hmdb51", "folder")
SUBSETS = ("train", "test", "all")
PRECISIONS = ("float32", "mixed_bfloat16")


class ExtractError(Exception):
    """The run cannot start: there is nothing to extract."""


class ExtractInputError(ValueError):
    """The settings or the split files are wrong: the user's mistake, nothing was decoded."""


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """What to extract, how, and where to.

    Attributes:
        data_dir: folder of the videos (the paths in the lists are relative to it).
        out_dir: folder of the feature cache.
        clip: the `ClipSpec` of the clips (segments, frames, size, short-video policy,
            modality, flow method, backbone and its weights); recorded in the cache.
        dataset: 'folder' (a folder per class), 'ucf101' or 'hmdb51'.
        split_dir: ucf101/hmdb51: folder of the split files (default `data_dir`).
        split: ucf101/hmdb51: official split 1, 2 or 3.
        split_file: folder: optional list of ``<Class>/<video>`` lines.
        subset: ucf101/hmdb51: 'train', 'test' or 'all' videos.
        precision: 'float32' or 'mixed_bfloat16' backbone arithmetic.
        batch_size: videos per backbone call.
        shard_size: videos per TFRecord shard (a crash redoes at most one shard).
        num_shards: parallel workers; this one takes every `num_shards`-th video.
        shard_index: this worker's index in [0, num_shards).
        limit: at most this many videos of this worker's share (None: all).
        decode_workers: decoding threads (OpenCV releases the GIL).
        metadata: extra JSON-serialisable settings stored in the cache index.
        views: V, training-mode views per video stored beside the centred one (module
            docstring); 0 (the default) stores the centred view only.
        seed: the seed of the views' random choices.
    """

    data_dir: str
    out_dir: str
    clip: ClipSpec = dataclasses.field(default_factory=ClipSpec)
    dataset: str = "folder"
    split_dir: str = None
    split: int = 1
    split_file: str = None
    subset: str = "all"
    precision: str = "float32"
    batch_size: int = 4
    shard_size: int = 256
    num_shards: int = 1
    shard_index: int = 0
    limit: int = None
    decode_workers: int = 2
    metadata: dict = None
    views: int = 0
    seed: int = 0

    def __post_init__(self):
        """Checks every setting; raises `ExtractInputError` naming the bad one."""
        if not self.data_dir or not self.out_dir:
            raise ExtractInputError("data_dir and out_dir are required")
        if not isinstance(self.clip, ClipSpec):
            raise ExtractInputError(
                f"clip must be a ClipSpec. Received: clip={type(self.clip).__name__}"
            )
        for name, allowed in (
            ("dataset", DATASETS),
            ("subset", SUBSETS),
            ("precision", PRECISIONS),
        ):
            check_choice(name, getattr(self, name), allowed, error=ExtractInputError)
        check_choice("split", self.split, (1, 2, 3), error=ExtractInputError)
        for name in ("batch_size", "shard_size", "num_shards", "decode_workers"):
            check_positive_int(name, getattr(self, name), error=ExtractInputError)
        if self.limit is not None:
            check_positive_int("limit", self.limit, error=ExtractInputError)
        for name in ("shard_index", "views", "seed"):
            check_positive_int(name, getattr(self, name), allow_zero=True, error=ExtractInputError)
        if self.shard_index >= self.num_shards:
            raise ExtractInputError(
                f"shard_index must be in [0, num_shards). Received: shard_index="
                f"{self.shard_index}, num_shards={self.num_shards}"
            )


def check_frame_size(path, max_pixels=MAX_FRAME_PIXELS, max_aspect=MAX_ASPECT_RATIO):
    """Raises `VideoReadError` if the video's header declares frames too large or elongated.

    Returns:
        The header's `VideoInfo`.
    """
    info = video_lib.probe(path, decode_first=False)
    if info.width * info.height > max_pixels:
        raise VideoReadError(
            path,
            f"its header declares {info.width}x{info.height} frames "
            f"({info.width * info.height / 1e6:.0f} Mpixel), over the limit of "
            f"{max_pixels / 1e6:.1f} Mpixel (8192x4320); refusing to decode it",
        )
    short, long = sorted((info.width, info.height))
    if short > 0 and long / short > max_aspect:
        raise VideoReadError(
            path,
            f"its header declares {info.width}x{info.height} frames, an aspect ratio of "
            f"{long / short:.0f}:1, over the limit of {max_aspect}:1; refusing to decode it",
        )
    return info


def check_clip_memory(path, info, config, max_bytes=MAX_CLIP_BYTES):
    """Raises `VideoReadError` if the video's resized frames would need over `max_bytes`.

    The estimate, from the header: frames read (at most K_v segments of `segment_len`, or
    `segment_len + 1` for flow) x the frame resized to the spec's short side x 3.
    """
    short, long = sorted((info.width, info.height))
    if short <= 0:
        return
    side, spec = config.clip.short_side, config.clip
    frames = spec.num_segments * spec.frames_per_segment
    if info.frame_count > 0:
        frames = min(frames, info.frame_count)
    needed = frames * side * -(-side * long // short) * 3
    if needed > max_bytes:
        raise VideoReadError(
            path,
            f"its {frames} frames of {info.width}x{info.height} resized to a {side}-pixel "
            f"short side need {needed / 2**30:.1f} GiB, over the limit of "
            f"{max_bytes / 2**30:.1f} GiB; refusing to decode it",
        )


def load_videos(config):
    """Returns the `datasets.VideoList` the config names (bad split lines are skipped).

    Raises:
        ExtractInputError: a split file is missing or malformed, or the folder is unreadable.
    """
    try:
        if config.dataset == "folder":
            return datasets.folder(config.data_dir, config.split_file, on_error="skip")
        return datasets.load_dataset(
            config.dataset,
            data_dir=config.data_dir,
            split_dir=config.split_dir or config.data_dir,
            split=config.split,
            subset=config.subset,
            on_error="skip",
        )
    except (datasets.SplitFileError, OSError, ValueError) as error:
        raise ExtractInputError(str(error)) from None


def build_extractor(config):
    """Returns the `SegmentFeatureExtractor` of the config's backbone, modality and weights."""
    from reslstm_tf.backbones.extractor import SegmentFeatureExtractor

    spec = config.clip
    return SegmentFeatureExtractor(
        backbone=spec.backbone,
        modality=spec.modality,
        weights=spec.backbone_weights,
        segment_len=spec.segment_len,
        precision=config.precision,
    )


def backbone_metadata(config, extractor, videos):
    """Returns the backbone settings a cache index records: backbone, weights, feature_dim.

    For a cache whose extractor was built from `config` (`extractor` needs only its
    `feature_dim`); adds the precision when not float32 and the video list's classes if any.
    """
    metadata = {
        "backbone": config.clip.backbone,
        "weights": config.clip.backbone_weights,
        # recorded only when not the default, so older caches still resume
        **({"precision": config.precision} if config.precision != "float32" else {}),
        "feature_dim": int(extractor.feature_dim),
    }
    if getattr(videos, "classes", None) is not None:
        metadata["classes"] = videos.classes
    return metadata


def extract(config, *, videos=None, extractor=None, progress=True):
    """Extracts and caches the segment features of the config's videos; returns a summary.

    Args:
        config: an `ExtractConfig`.
        videos: the videos to extract, a `datasets.VideoList` or `datasets.VideoItem`s
            (default: `load_videos(config)`).
        extractor: callable float32 (N, L, H, W, C) in [-1, 1] -> (N, d_f) with attributes
            `segment_len` and `frame_size` (default: `build_extractor(config)`, whose
            settings are then recorded in the cache index).
        progress: show a tqdm progress bar (videos/s, ETA).

    Returns:
        dict: done, skipped (already cached), failed, failures (list of {'id', 'error'}),
        problems (skipped split-file lines), seconds, out_dir, failures_file.

    Raises:
        ExtractInputError: a bad split file (nothing was decoded).
        ExtractError: the video list is empty.
        FeatureCacheWriteError: the output folder cannot be written (checked before any
            decoding) or the disk filled up; the shards written before stay readable.
        FeatureCacheError: `out_dir` holds a cache made with other settings.
        FolderBusyError: another run is writing the same files of `out_dir`.
    """
    if videos is None:
        videos = load_videos(config)
    problems = [str(problem) for problem in getattr(videos, "problems", [])]
    for problem in problems:
        logger.warning("split list: %s", problem)
    if not len(videos):
        skipped = f" ({len(problems)} split-file lines skipped)" if problems else ""
        raise ExtractError(f"no videos to extract: the video list is empty{skipped}")
    # before building the backbone or decoding anything; another sharding's cache is refused
    check_writable(config.out_dir, config.num_shards)
    with folder_lock(config.out_dir, "feature cache", lock_name=f".lock{_suffix(config)}"):
        return _extract_locked(config, videos, extractor, progress, problems)


def _suffix(config):
    """The file-name suffix of this worker's files: '' or '-00001-of-00004'."""
    if config.num_shards == 1:
        return ""
    return f"-{config.shard_index:05d}-of-{config.num_shards:05d}"


def _extract_locked(config, videos, extractor, progress, problems):
    """`extract` once this worker holds the lock of its files in `out_dir`."""
    metadata = dict(config.metadata or {})
    if extractor is None:
        extractor = build_extractor(config)
        metadata.update(backbone_metadata(config, extractor, videos))
    config = dataclasses.replace(config, metadata=metadata)
    summary = _extract_share(config, list(videos), extractor, progress)
    summary["problems"] = problems
    return summary


def cache_settings(config):
    """Returns the settings a cache index stores and a resumed run is checked against.

    The clip spec's fields, the views if any, and `config.metadata` (e.g. from
    `backbone_metadata`).
    """
    spec = config.clip
    return {
        "num_segments": spec.num_segments,
        "segment_len": spec.segment_len,
        "frame_size": spec.frame_size,
        "modality": spec.modality,
        "flow_method": spec.flow_method if spec.modality == "flow" else None,
        "sampling": "eval",
        "short": spec.short,
        # recorded only when set, so caches made before it resume as before
        **({"resize_short_side": spec.resize_short_side} if spec.resize_short_side else {}),
        # recorded only with views, so caches without them resume as before
        **({"views": config.views, "view_seed": config.seed} if config.views else {}),
        **(config.metadata or {}),
    }


def _extract_share(config, videos, extractor, progress):
    """Extracts this worker's share of `videos`; writes failures.json; returns the summary."""
    # (position in the list, video): the position seeds the video's views
    items = list(enumerate(videos))[config.shard_index :: config.num_shards]
    if config.limit is not None:
        items = items[: config.limit]
    start = time.monotonic()
    failures = []
    failures_file = os.path.join(os.fspath(config.out_dir), f"failures{_suffix(config)}.json")
    writer = FeatureCacheWriter(
        config.out_dir,
        shard_size=config.shard_size,
        metadata=cache_settings(config),
        num_shards=config.num_shards,
        shard_index=config.shard_index,
    )
    views = _view_clips(videos, config) if config.views else None
    try:
        done, skipped = _extract_into(writer, items, extractor, failures, config, progress, views)
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
            config.out_dir, error, "writing failures.json", done + skipped
        ) from None
    seconds, out_dir = round(time.monotonic() - start, 2), os.fspath(config.out_dir)
    summary = dict(done=done, skipped=skipped, failed=len(failures), failures=failures)
    summary.update(seconds=seconds, out_dir=out_dir, failures_file=failures_file)
    logger.info("extract summary: %s", {k: v for k, v in summary.items() if k != "failures"})
    return summary


def _write_failures(path, failures):
    """Writes the failures list atomically as JSON."""
    with atomic_write(path, "w") as handle:
        json.dump({"failures": failures}, handle, indent=1)


def _view_clips(videos, config):
    """The `VideoClips` whose train-mode clips of epoch v are the videos' views v."""
    return VideoClips(
        videos, config.data_dir, config.clip, flip=True, seed=config.seed, num_parallel_calls=1
    )


@dataclasses.dataclass
class _Decoded:
    """One clip of one video: the centred one (view None) or a view; or why it failed."""

    position: int
    item: object
    clip: np.ndarray = None
    sample: object = None
    info: object = None
    error: str = None


def _decode(position, item, config, view=None, views=None):
    """Decodes the centred clip (view None) or view `view` of a video; never raises on bad input.

    The header checks (frame size, clip memory) come first, for views too: they are cheap,
    and no decoding ever starts without them.
    """
    path = os.path.join(os.fspath(config.data_dir), item.path)
    try:
        check_clip_memory(path, check_frame_size(path), config)
        if view is not None:
            (clip,) = views.load(position, "train", epoch=view)
            return _Decoded(position, item, clip)
        clip = read_clip(path, config.clip, "eval")
        return _Decoded(position, item, clip.as_float(), clip.sample, clip.info)
    except (VideoReadError, ValueError, OSError, cv2.error, MemoryError) as err:
        where = "" if view is None else f"view {view}: "
        return _Decoded(position, item, error=f"{where}{type(err).__name__}: {err}")


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


def embed_batch(extractor, good, failures, where=""):
    """Embeds the decoded clips `good` in one backbone call; a failing batch is retried one by one.

    Returns {position: features} of the clips the extractor succeeds on, and records the
    others in `failures` (their error prefixed with `where`, e.g. "view 2: ").
    """
    try:
        outputs = _run_extractor(extractor, [entry.clip for entry in good]) if good else []
        return {entry.position: feats for entry, feats in zip(good, outputs)}
    except Exception as err:  # noqa: BLE001 - isolate the failing video
        logger.warning("batch failed (%s); retrying video by video", err)
    outputs = {}
    for entry in good:
        try:
            outputs[entry.position] = _run_extractor(extractor, [entry.clip])[0]
        except Exception as single:  # noqa: BLE001
            error = f"{where}{type(single).__name__}: {single}"
            failures.append({"id": entry.item.path, "error": error})
    return outputs


def _write_batch(writer, batch, features, failures, config):
    """Adds the finite features of a batch to the cache; returns how many were new.

    Args:
        batch: the batch's centred `_Decoded` clips.
        features: {position: [centred features, view 0, ..., view V-1]} of the videos
            whose clips all made it through the backbone.
    """
    done = 0
    for entry in batch:
        feats = features.get(entry.position)
        if feats is None or len(feats) != config.views + 1:
            continue  # failed (recorded) in one of its clips
        item, sample = entry.item, entry.sample
        if not all(np.all(np.isfinite(f)) for f in feats):
            error = "ValueError: the backbone returned NaN or infinite features"
            failures.append({"id": item.path, "error": error})
            continue
        meta = {"class_name": item.class_name}
        if config.views:
            meta["view_index"] = entry.position
        added = writer.add(
            item.path,
            item.label,
            feats[0],
            frame_indices=sample.indices,
            num_frames=sample.num_frames,
            fps=entry.info.fps,
            meta=meta,
            views=np.stack(feats[1:]) if config.views else None,
        )
        done += int(added)  # False for a video listed twice
    return done


def _extract_into(writer, items, extractor, failures, config, progress, views):
    """The decode -> backbone -> cache loop; returns (done, skipped), appends to failures.

    Work goes in steps of one clip per video of a batch: the centred clips, then view 0,
    ..., view V-1 of the same videos, then the next batch. The next step is decoded while
    the backbone runs on this one, so at most two steps of clips are in memory. A video
    is written once all its clips are embedded; one failing clip fails the video.
    """
    from tqdm.auto import tqdm

    done, size = 0, config.batch_size
    with writer:
        todo = [(pos, item) for pos, item in items if not writer.is_done(item.path)]
        skipped = len(items) - len(todo)
        batches = [todo[start : start + size] for start in range(0, len(todo), size)]
        steps = [(b, view) for b in range(len(batches)) for view in [None, *range(config.views)]]
        bar = tqdm(total=len(todo), unit="video", disable=not progress, desc="extract")
        with bar, concurrent.futures.ThreadPoolExecutor(config.decode_workers) as pool:

            def submit(step, alive):
                b, view = step
                return [
                    pool.submit(_decode, pos, item, config, view, views)
                    for pos, item in batches[b]
                    if alive is None or pos in alive
                ]

            pending = submit(steps[0], None) if steps else []
            for number, (b, view) in enumerate(steps):
                decoded = [future.result() for future in pending]
                fault_point("extract_decoded")
                if view is None:  # a new batch: its centred clips
                    features, centred = {}, decoded
                    alive = {entry.position for entry in decoded}
                decoded = [entry for entry in decoded if entry.position in alive]
                failures.extend({"id": e.item.path, "error": e.error} for e in decoded if e.error)
                good = [entry for entry in decoded if entry.error is None]
                alive = {entry.position for entry in good}
                following = steps[number + 1] if number + 1 < len(steps) else None
                same_batch = following is not None and following[0] == b
                if following is not None:
                    pending = submit(following, alive if same_batch else None)
                where = "" if view is None else f"view {view}: "
                embedded = embed_batch(extractor, good, failures, where)
                for position, feats in embedded.items():
                    features.setdefault(position, []).append(feats)
                alive = set(embedded)
                if not same_batch:
                    done += _write_batch(writer, centred, features, failures, config)
                    bar.update(len(batches[b]))
                    bar.set_postfix(failed=len(failures))
    return done, skipped


def segment_features(extractor, frames, num_segments, *, short):
    """Features of the segments extraction would cut from already decoded, scaled frames.

    Args:
        extractor: a `SegmentFeatureExtractor` (its `segment_len` frames per segment).
        frames: float32 array (N, H, W, C) in [-1, 1], N >= 1.
        num_segments: K_v.
        short: the short-video policy of the sampler.

    Returns:
        float32 numpy array (K_v, feature_dim).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise ValueError(
            "frames must be a non-empty clip of rank 4 (frames, height, width, channels). "
            f"Received: frames with shape {frames.shape}"
        )
    sample = sample_segments(
        len(frames), num_segments, extractor.segment_len, mode="eval", short=short
    )
    return extractor(frames[sample.indices])
