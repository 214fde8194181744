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
=================  =======  ===============================================================

Shards are written to a temporary file and renamed into place, then the JSON index (also
written atomically) records the shard and the ids it holds. Readers only read shards listed
in an index, so a crash never exposes a half-written shard, and a rerun skips the ids
already listed (no duplicates).
"""

import glob
import json
import os
import pathlib

import numpy as np
import tensorflow as tf

from reslstm_tf.cache import atomic_path, atomic_write

INDEX_VERSION = 1

FEATURE_SPEC = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "features": tf.io.VarLenFeature(tf.float32),
    "feature_shape": tf.io.FixedLenFeature([2], tf.int64),
    "frame_indices": tf.io.VarLenFeature(tf.int64),
    "index_shape": tf.io.FixedLenFeature([2], tf.int64),
    "num_frames": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "fps": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
    "meta": tf.io.FixedLenFeature([], tf.string, default_value=b"{}"),
}


class FeatureCacheError(ValueError):
    """A feature cache is missing, inconsistent, or was given inconsistent features."""


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def make_example(
    video_id, label, features, *, frame_indices=None, num_frames=0, fps=0.0, meta=None
):
    """Serialises one video's features as a `tf.train.Example` (see the module table).

    Args:
        video_id: a unique string id.
        label: int class index.
        features: float array (K_v, d_f).
        frame_indices: int array (K_v, L) of sampled frames, or None.
        num_frames: the frame count the sampling used.
        fps: the video's frame rate.
        meta: JSON-serialisable dict of extra metadata.

    Returns:
        The serialised example (bytes).
    """
    feats = np.asarray(features, np.float32)
    if feats.ndim != 2:
        raise FeatureCacheError(
            f"features must be 2-D (K_v, d_f). Received shape {feats.shape} for {video_id!r}"
        )
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
    return example.SerializeToString()


class FeatureCacheWriter:
    """Writes features to sharded TFRecords with a resumable JSON index.

    Use as a context manager; `flush` runs every `shard_size` videos and on exit. Ids already
    in the index (from an earlier, interrupted run) are reported by `is_done` and ignored by
    `add`.

    Args:
        out_dir: the cache folder (created).
        shard_size: videos per shard file.
        metadata: JSON-serialisable dict saved in the index (backbone, sampling settings);
            must equal the stored one when resuming.
        num_shards: with `shard_index`, one of several parallel writers into one folder.
        shard_index: this writer's index in [0, num_shards).
    """

    def __init__(self, out_dir, *, shard_size=256, metadata=None, num_shards=1, shard_index=0):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1. Received: shard_size={shard_size!r}")
        if not 0 <= shard_index < num_shards:
            raise ValueError(
                "shard_index must be in [0, num_shards). "
                f"Received: shard_index={shard_index!r}, num_shards={num_shards!r}"
            )
        self.out_dir = pathlib.Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shard_size = int(shard_size)
        self._suffix = "" if num_shards == 1 else f"-{shard_index:05d}-of-{num_shards:05d}"
        self.index_path = self.out_dir / f"index{self._suffix}.json"
        self._buffer = []
        self._pending_ids = set()
        if self.index_path.exists():
            self._index = json.loads(self.index_path.read_text())
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
        self._done = {i for shard in self._index["shards"] for i in shard["ids"]}

    @property
    def done_ids(self):
        """The ids written (in a finished shard) or buffered in this writer."""
        return self._done | self._pending_ids

    def is_done(self, video_id):
        """Whether `video_id` is already in the cache (or buffered)."""
        return video_id in self._done or video_id in self._pending_ids

    def add(self, video_id, label, features, **kwargs):
        """Buffers one video (see `make_example` for kwargs); returns False if already done."""
        if self.is_done(video_id):
            return False
        shape = list(np.shape(features))
        expected = self._index.get("feature_shape")
        if expected is None:
            self._index["feature_shape"] = shape
        elif shape != expected:
            raise FeatureCacheError(
                f"features of {video_id!r} have shape {tuple(shape)}; the cache holds "
                f"{tuple(expected)}"
            )
        self._buffer.append(make_example(video_id, label, features, **kwargs))
        self._pending_ids.add(video_id)
        if len(self._buffer) >= self.shard_size:
            self.flush()
        return True

    def flush(self):
        """Writes the buffered videos as one shard (atomically) and updates the index."""
        if not self._buffer:
            return None
        name = f"features{self._suffix}-{len(self._index['shards']):05d}.tfrecord"
        tmp = atomic_path(self.out_dir / name)
        try:
            with tf.io.TFRecordWriter(os.fspath(tmp)) as writer:
                for record in self._buffer:
                    writer.write(record)
            os.replace(tmp, self.out_dir / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        ids = sorted(self._pending_ids)
        self._index["shards"].append({"file": name, "ids": ids})
        with atomic_write(self.index_path, "w") as handle:
            json.dump(self._index, handle, indent=1)
        self._done.update(ids)
        self._buffer, self._pending_ids = [], set()
        return self.out_dir / name

    def close(self):
        """Flushes the last partial shard."""
        self.flush()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False


def read_index(cache_dir):
    """Merges the JSON index files of a cache folder.

    Args:
        cache_dir: the cache folder.

    Returns:
        dict with 'files' (shard paths), 'ids' (list), 'feature_shape' [K_v, d_f] and
        'metadata' (of the first index).

    Raises:
        FeatureCacheError: no index, duplicate ids, or inconsistent shapes.
    """
    cache_dir = pathlib.Path(cache_dir)
    index_files = sorted(glob.glob(os.path.join(glob.escape(os.fspath(cache_dir)), "index*.json")))
    if not index_files:
        raise FeatureCacheError(f"no feature cache index (index*.json) in {cache_dir}")
    files, ids, shape, metadata = [], [], None, None
    for path in index_files:
        index = json.loads(pathlib.Path(path).read_text())
        if index.get("feature_shape") is None:
            continue
        if shape is not None and index["feature_shape"] != shape:
            raise FeatureCacheError(
                f"{path} holds features of shape {index['feature_shape']}, others {shape}"
            )
        shape = index["feature_shape"]
        metadata = index.get("metadata", {}) if metadata is None else metadata
        for shard in index["shards"]:
            files.append(os.fspath(cache_dir / shard["file"]))
            ids.extend(shard["ids"])
    if len(set(ids)) != len(ids):
        raise FeatureCacheError(f"the cache in {cache_dir} lists some video ids twice")
    if shape is None:
        raise FeatureCacheError(f"the cache in {cache_dir} holds no finished shard")
    return {"files": files, "ids": ids, "feature_shape": shape, "metadata": metadata or {}}


def parse_example(serialized):
    """Parses a serialised example into dense tensors (features flat; see `FEATURE_SPEC`)."""
    parsed = tf.io.parse_single_example(serialized, FEATURE_SPEC)
    for key in ("features", "frame_indices"):
        parsed[key] = tf.sparse.to_dense(parsed[key])
    return parsed


def tfrecord_dataset(cache_dir, index=None):
    """Returns a tf.data.Dataset of parsed examples (dicts) from a cache's indexed shards."""
    index = index if index is not None else read_index(cache_dir)
    ds = tf.data.TFRecordDataset(index["files"])
    return ds.map(parse_example, num_parallel_calls=tf.data.AUTOTUNE)


def read_features(cache_dir):
    """Reads a whole cache into numpy.

    Args:
        cache_dir: the cache folder.

    Returns:
        A list of dicts: 'id' (str), 'label' (int), 'features' float32 (K_v, d_f),
        'frame_indices' int64 (K_v, L), 'num_frames', 'fps', 'meta' (dict).
    """
    records = []
    for example in tfrecord_dataset(cache_dir).as_numpy_iterator():
        records.append(
            {
                "id": example["id"].decode(),
                "label": int(example["label"]),
                "features": example["features"].reshape(example["feature_shape"]),
                "frame_indices": example["frame_indices"].reshape(example["index_shape"]),
                "num_frames": int(example["num_frames"]),
                "fps": float(example["fps"]),
                "meta": json.loads(example["meta"].decode()),
            }
        )
    return records
