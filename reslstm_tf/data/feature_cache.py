"""A resumable TFRecord cache of per-video segment features.

Layout of a cache folder::

    index.json                      # or index-00001-of-00004.json per parallel writer
    features-00000.tfrecord         # or features-00001-of-00004-00000.tfrecord
    ...

Each shard holds one ``tf.train.Example`` per video:

=================  =======  ===============================================================
key                type     content
=================  =======  ===============================================================
``id``             bytes    the video id (its path relative to the data folder)
``label``          int64    0-based class index
``features``       float    the (K_v, d_f) features, flattened row-major
``feature_shape``  int64    [K_v, d_f]
``frame_indices``  int64    the sampled frame indices, flattened (K_v, L)
``index_shape``    int64    [K_v, L]
``num_frames``     int64    frames the sampling was done for
``fps``            float    the video's frame rate
``meta``           bytes    JSON of any extra per-video metadata
``views``          float    optional: V training-mode views (V, K_v, d_f), flattened
``view_shape``     int64    [V, K_v, d_f] ([0, 0, 0]: no views, as in older caches)
=================  =======  ===============================================================

A cache with views (``reslstm-extract --views=V``) stores them in the video's one record,
beside the centred evaluation view (``features``): a video is in the cache with all its
views or not at all. Its index records ``num_views`` (absent: 0).

Crash safety. A shard is written to a hidden temporary file, synced, and renamed into place;
only then does the JSON index (written atomically, the last step) record the shard and the
ids it holds. Readers read only shards listed in an index, so a crash at any point never
exposes a half-written shard, and a rerun skips the ids already listed (no duplicates) and
redoes the rest (nothing lost). A writer that opens a folder deletes its own leftovers of a
crash: temporary files and shard files its index does not list. The crash points the
reliability tests kill a writer at (`reslstm_tf.faults`) are:

* ``shard_record_written``: after each record is written to the temporary shard file,
  before the file is complete and renamed;
* ``shard_finalised``: after the shard is renamed into place, before the index lists it;
* ``index_updated``: after the index lists the shard.

Complete or still written. A writer records ``"complete": false`` in its index with its first
shard, and `FeatureCacheWriter.seal` sets it to true once the whole run finished (the
writer's ``with`` block ended without an error: `reslstm_tf.extract` runs a whole run in
one block). Readers refuse a cache whose writer
still holds the folder's lock or whose index is not sealed, naming the writer's pid; an index
with no ``complete`` field (written before the seal existed) counts as complete when no
writer holds the lock. A writer refuses a folder that holds indexes of another number of
parallel writers (``--num_shards``), so two sharding modes never list a video twice.

Write errors (a read-only or full disk, a path under a regular file) raise
`FeatureCacheWriteError` naming the folder and the cause; the shards indexed before stay
readable, the shard being written is removed, and a rerun resumes. `check_writable` tests a
folder up front, before any expensive work.

The readers (`read_index`, `tfrecord_dataset`, `read_features`) live in
`reslstm_tf.data.feature_cache_read` and are importable from here too. They refuse
non-finite features: `read_features` raises `FeatureCacheError` and `tfrecord_dataset` fails
(``InvalidArgumentError``) naming the video.
"""

import errno
import json
import logging
import os
import pathlib
import tempfile
import uuid

import numpy as np
import tensorflow as tf

from reslstm_tf.data.feature_cache_read import (
    FEATURE_SPEC,
    FeatureCacheError,
    parse_example,
    read_features,
    read_index,
    read_index_file,
    sharding_of,
    tfrecord_dataset,
    tfrecord_ids,
)
from reslstm_tf.faults import fault_point
from reslstm_tf.files import atomic_write, new_file_mode

logger = logging.getLogger(__name__)

INDEX_VERSION = 1

# errno -> what it means for a cache folder
_WRITE_PROBLEMS = {
    getattr(errno, name): problem
    for name, problem in (
        ("ENOSPC", "the disk is full (no space left on device)"),
        ("EDQUOT", "the disk quota is exceeded"),
        ("EROFS", "the file system is read-only"),
        ("EACCES", "permission denied"),
        ("EPERM", "permission denied"),
        ("ENOTDIR", "a component of the path is a regular file, not a folder"),
        ("EEXIST", "the path exists and is not a folder"),
    )
    if hasattr(errno, name)
}


# The causes that are the user's choice of folder, not the machine's failure (command-line
# tools exit 2 for these, 1 for a full disk).
_USER_PROBLEMS = {
    getattr(errno, name) for name in ("EROFS", "EACCES", "EPERM", "ENOTDIR", "EEXIST")
}


class FeatureCacheWriteError(FeatureCacheError):
    """A cache folder cannot be written: not a folder, read-only, no permission, disk full.

    Attributes:
        out_dir: the cache folder.
        errno: the OS error number (e.g. ``errno.ENOSPC``), or None.
        problem: a short description of the cause.
        cached: how many videos are safely in the cache (indexed shards) despite the error.
        user_mistake: the folder the user chose cannot be written (read-only, no permission,
            under a regular file), as opposed to a full disk or an I/O failure.
    """

    def __init__(self, out_dir, error, action, cached=0):
        self.out_dir = os.fspath(out_dir)
        self.errno = getattr(error, "errno", None)
        self.problem = _WRITE_PROBLEMS.get(self.errno) or str(error)
        self.cached = int(cached)
        self.user_mistake = self.errno in _USER_PROBLEMS
        detail = getattr(error, "strerror", None) or str(error)
        message = f"cannot write the feature cache in {self.out_dir}: {self.problem}"
        if detail and detail.lower() not in self.problem.lower():
            message += f" ({detail})"
        message += f", while {action}."
        if self.cached:
            message += (
                f" The {self.cached} videos already in the cache are intact; fix the cause and "
                "run the same command again to resume."
            )
        super().__init__(message)


def check_writable(out_dir, num_shards=None):
    """Creates `out_dir` if needed and checks that a file can be created in it.

    With `num_shards`, also that the folder holds no cache of another number of parallel
    writers (`check_sharding`).

    Raises:
        FeatureCacheWriteError: naming the folder and the cause (a parent is a regular file,
            read-only file system, permission denied, ...).
        FeatureCacheError: the folder holds a cache written with another `num_shards`.
    """
    path = pathlib.Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path, prefix=".write-check-", suffix=".tmp")
        os.close(fd)
        os.unlink(name)
    except OSError as error:
        raise FeatureCacheWriteError(path, error, "checking that the folder is writable") from None
    if num_shards is not None:
        check_sharding(path, num_shards)
    return path


def check_sharding(out_dir, num_shards):
    """Raises `FeatureCacheError` if `out_dir` holds indexes of another --num_shards."""
    for path in sorted(pathlib.Path(out_dir).glob("index*.json")):
        found = sharding_of(path.name)
        if found is not None and found != num_shards:
            raise FeatureCacheError(
                f"{out_dir} already holds a feature cache written with --num_shards={found} "
                f"({path.name}); extract with --num_shards={found}, or into another folder"
            )


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _check_finite(values, video_id, what):
    if not np.all(np.isfinite(values)):
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise FeatureCacheError(
            f"{what} of {video_id!r} hold {bad} NaN or infinite values; refusing to cache them"
        )


def _check_views(views, feats, video_id):
    """Returns float32 views (V, K_v, d_f) of one video, checked against its features."""
    views = np.asarray(views, np.float32)
    if views.ndim != 3 or views.shape[1:] != feats.shape or views.shape[0] == 0:
        raise FeatureCacheError(
            f"views must be (V, K_v, d_f) with V >= 1 and (K_v, d_f) = {feats.shape}, the "
            f"features' shape. Received views of shape {views.shape} for {video_id!r}"
        )
    _check_finite(views, video_id, "views")
    return views


def make_example(
    video_id,
    label,
    features,
    *,
    frame_indices=None,
    num_frames=0,
    fps=0.0,
    meta=None,
    views=None,
):
    """Serialises one video's features as a `tf.train.Example` (see the module table).

    Args:
        video_id: a unique string id.
        label: int class index.
        features: float array (K_v, d_f), the centred (evaluation) view.
        frame_indices: int array (K_v, L) of sampled frames, or None.
        num_frames: the frame count the sampling used.
        fps: the video's frame rate.
        meta: JSON-serialisable dict of extra metadata.
        views: optional float array (V, K_v, d_f) of training-mode views.

    Returns:
        The serialised example (bytes).
    """
    feats = np.asarray(features, np.float32)
    if feats.ndim != 2:
        raise FeatureCacheError(
            f"features must be 2-D (K_v, d_f). Received shape {feats.shape} for {video_id!r}"
        )
    _check_finite(feats, video_id, "features")
    views = None if views is None else _check_views(views, feats, video_id)
    indices = np.zeros((0, 0), np.int64) if frame_indices is None else np.asarray(frame_indices)
    indices = indices.reshape(indices.shape[0], -1) if indices.ndim != 2 else indices
    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                "id": _bytes(str(video_id).encode()),
                "label": _ints([label]),
                "features": _floats(feats.reshape(-1)),
                "feature_shape": _ints(feats.shape),
                "frame_indices": _ints(indices.reshape(-1)),
                "index_shape": _ints(indices.shape),
                "num_frames": _ints([num_frames]),
                "fps": _floats([float(fps)]),
                "meta": _bytes(json.dumps(meta or {}, sort_keys=True).encode()),
            }
        )
    )
    if views is not None:  # absent otherwise: a cache without views is as before
        example.features.feature["views"].CopyFrom(_floats(views.reshape(-1)))
        example.features.feature["view_shape"].CopyFrom(_ints(views.shape))
    return example.SerializeToString()


def _frame_records(records):
    """Returns each record framed as in a TFRecord file (length, data and their masked CRCs).

    TensorFlow frames the records (in its in-memory file system); the caller writes the bytes
    with Python file I/O, so write errors are `OSError`s with their errno (ENOSPC, EROFS, ...)
    and the file can be synced before it is renamed.
    """
    path = f"ram://reslstm_features/{uuid.uuid4().hex}.tfrecord"
    try:
        with tf.io.TFRecordWriter(path) as writer:
            for record in records:
                writer.write(record)
        with tf.io.gfile.GFile(path, "rb") as handle:
            data = handle.read()
    finally:
        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
    frames, offset = [], 0
    for record in records:
        size = len(record) + 16  # uint64 length, uint32 CRC, data, uint32 CRC
        frames.append(data[offset : offset + size])
        offset += size
    if offset != len(data):
        raise RuntimeError(f"TFRecord framing of {len(records)} records has an unexpected size")
    return frames


class FeatureCacheWriter:
    """Writes features to sharded TFRecords with a resumable JSON index.

    Use as a context manager; `flush` runs every `shard_size` videos and on exit (also when
    the block raises, so the finished videos are kept); a block that ends without an error
    seals the cache as complete (`seal`). Ids already in the index (from an
    earlier, interrupted run) are reported by `is_done` and ignored by `add`. Opening a
    folder deletes this writer's leftovers of a crash (temporary files, shards its index does
    not list); two writers must not use the same folder and `shard_index` at once.

    Args:
        out_dir: the cache folder (created).
        shard_size: videos per shard file.
        metadata: JSON-serialisable dict saved in the index (backbone, sampling settings);
            must equal the stored one when resuming.
        num_shards: with `shard_index`, one of several parallel writers into one folder.
        shard_index: this writer's index in [0, num_shards).

    Raises:
        FeatureCacheWriteError: the folder cannot be created or written.
        FeatureCacheError: the folder holds a cache of other metadata or a corrupt index.
    """

    def __init__(self, out_dir, *, shard_size=256, metadata=None, num_shards=1, shard_index=0):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1. Received: shard_size={shard_size!r}")
        if not 0 <= shard_index < num_shards:
            raise ValueError(
                "shard_index must be in [0, num_shards). "
                f"Received: shard_index={shard_index!r}, num_shards={num_shards!r}"
            )
        self.out_dir = check_writable(out_dir, num_shards)
        self.shard_size = int(shard_size)
        self._suffix = "" if num_shards == 1 else f"-{shard_index:05d}-of-{num_shards:05d}"
        self.index_path = self.out_dir / f"index{self._suffix}.json"
        self._buffer = []
        self._pending_ids = set()
        if self.index_path.exists():
            self._index = read_index_file(self.index_path)
            stored = self._index.get("metadata", {})
            if metadata is not None and stored != json.loads(json.dumps(metadata)):
                raise FeatureCacheError(
                    f"{self.index_path} was written with metadata {stored}, which differs from "
                    f"this run's {metadata}; use another out_dir or delete the cache"
                )
        else:
            self._index = {
                "version": INDEX_VERSION,
                "metadata": metadata or {},
                "feature_shape": None,
                "shards": [],
            }
        # Unsealed until `seal`: readers refuse the cache while it is written (see
        # `feature_cache_read.read_index`); the first flush records it.
        self._index["complete"] = False
        self._index["writer"] = f"pid {os.getpid()}"
        self._done = {i for shard in self._index["shards"] for i in shard["ids"]}
        self.removed = self._remove_leftovers()

    def _remove_leftovers(self):
        """Deletes temporary files and unindexed shards of this writer; returns their names."""
        listed = {shard["file"] for shard in self._index["shards"]}
        digits = "[0-9]" * 5
        patterns = (
            f"features{self._suffix}-{digits}.tfrecord",
            f".features{self._suffix}-{digits}.tfrecord.*.tmp",
            f".index{self._suffix}.json.*.tmp",
            ".write-check-*.tmp",
        )
        removed = []
        for pattern in patterns:
            for path in sorted(self.out_dir.glob(pattern)):
                if path.name in listed or not path.is_file():
                    continue
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                except OSError as error:
                    raise FeatureCacheWriteError(
                        self.out_dir, error, f"removing the leftover {path.name} of a crash"
                    ) from None
                removed.append(path.name)
        if removed:
            logger.warning(
                "removed %d leftover files of an interrupted run from %s: %s",
                len(removed),
                self.out_dir,
                ", ".join(removed),
            )
        return removed

    @property
    def done_ids(self):
        """The ids written (in a finished shard) or buffered in this writer."""
        return self._done | self._pending_ids

    @property
    def cached_ids(self):
        """The ids in indexed shards (safe on disk)."""
        return set(self._done)

    def is_done(self, video_id):
        """Whether `video_id` is already in the cache (or buffered)."""
        return video_id in self._done or video_id in self._pending_ids

    def add(self, video_id, label, features, **kwargs):
        """Buffers one video (see `make_example` for kwargs); returns False if already done.

        Raises:
            FeatureCacheError: the features are not 2-D, not finite, or of another shape
                than the cache's; or its views (`views=`) are not finite, not of the
                features' shape, or another number of views than the cache's.
            FeatureCacheWriteError: writing the full shard failed (see `flush`).
        """
        if self.is_done(video_id):
            return False
        shape = list(np.shape(features))
        expected = self._index.get("feature_shape")
        if expected is not None and shape != expected:
            raise FeatureCacheError(
                f"features of {video_id!r} have shape {tuple(shape)}; the cache holds "
                f"{tuple(expected)}"
            )
        views = kwargs.get("views")
        num_views = 0 if views is None else len(views)
        if expected is not None and num_views != self._index.get("num_views", 0):
            raise FeatureCacheError(
                f"{video_id!r} comes with {num_views} views; the cache holds "
                f"{self._index.get('num_views', 0)} per video"
            )
        record = make_example(video_id, label, features, **kwargs)
        if expected is None:
            self._index["feature_shape"] = shape
            if num_views:  # recorded only with views, so older caches resume unchanged
                self._index["num_views"] = num_views
        self._buffer.append(record)
        self._pending_ids.add(video_id)
        if len(self._buffer) >= self.shard_size:
            self.flush()
        return True

    def flush(self):
        """Writes the buffered videos as one shard (atomically), then records it in the index.

        Returns:
            The shard's path, or None if nothing was buffered.

        Raises:
            FeatureCacheWriteError: the disk is full or the folder became unwritable. The
                partial shard is removed, the index is unchanged (earlier shards stay
                readable) and the videos stay buffered.
        """
        if not self._buffer:
            return None
        name = f"features{self._suffix}-{len(self._index['shards']):05d}.tfrecord"
        final = self.out_dir / name
        ids = sorted(self._pending_ids)
        index = {**self._index, "shards": [*self._index["shards"], {"file": name, "ids": ids}]}
        frames = _frame_records(self._buffer)
        tmp = renamed = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.out_dir, prefix=f".{name}.", suffix=".tmp")
            os.fchmod(fd, new_file_mode())  # mkstemp's 0600 -> the umask's, as other files
            with os.fdopen(fd, "wb") as handle:
                for frame in frames:
                    handle.write(frame)
                    handle.flush()
                    fault_point("shard_record_written")
                os.fsync(handle.fileno())
            os.replace(tmp, final)
            tmp, renamed = None, final
            fault_point("shard_finalised")
            with atomic_write(self.index_path, "w") as handle:
                json.dump(index, handle, indent=1)
            renamed = None
        except OSError as error:
            for leftover in (tmp, renamed):  # nothing half-written or unindexed stays
                if leftover is not None:
                    try:
                        os.unlink(leftover)
                    except OSError:
                        pass
            raise FeatureCacheWriteError(
                self.out_dir, error, f"writing shard {name} ({len(ids)} videos)", len(self._done)
            ) from None
        fault_point("index_updated")
        self._index = index
        self._done.update(ids)
        self._buffer, self._pending_ids = [], set()
        return final

    def close(self):
        """Flushes the last partial shard."""
        self.flush()

    def seal(self):
        """Flushes, then marks the index complete: the whole run finished, readers may read it.

        The context manager calls it when its block ends without an error (`reslstm_tf.extract`
        runs a whole run in one block); `close` and a block that raises or is killed leave the
        cache unsealed, and readers refuse it.
        """
        self.flush()
        if not self._index["shards"]:
            return  # nothing cached: no index to seal
        index = {**self._index, "complete": True}
        index.pop("writer", None)
        try:
            with atomic_write(self.index_path, "w") as handle:
                json.dump(index, handle, indent=1)
        except OSError as error:
            raise FeatureCacheWriteError(
                self.out_dir, error, "marking the cache complete", len(self._done)
            ) from None
        self._index = index

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.seal()  # the block finished: the cache is complete
            return False
        if issubclass(exc_type, FeatureCacheWriteError):
            return False  # writing failed already: do not try again
        # The block failed: keep the finished videos if possible, but never mask its error.
        try:
            self.close()
        except Exception as error:  # noqa: BLE001
            logger.warning("could not save the buffered videos after an error: %s", error)
        return False


# The reading side lives in `feature_cache_read`; its names stay importable from here.
__all__ = [
    "FEATURE_SPEC",
    "INDEX_VERSION",
    "FeatureCacheError",
    "FeatureCacheWriteError",
    "FeatureCacheWriter",
    "check_sharding",
    "check_writable",
    "make_example",
    "parse_example",
    "read_features",
    "read_index",
    "read_index_file",
    "tfrecord_dataset",
    "tfrecord_ids",
]
