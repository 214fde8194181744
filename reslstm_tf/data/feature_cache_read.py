"""Reading a feature cache: its merged index, its records as `tf.data`, or all of it in numpy.

The layout, the record keys and the crash-safety rules are described in
`reslstm_tf.data.feature_cache`, which writes caches and re-exports these names.
"""

import glob
import json
import os
import pathlib
import re

import numpy as np
import tensorflow as tf

from reslstm_tf.files import lock_holder, printable

# How a record is parsed: the keys of the table in `reslstm_tf.data.feature_cache`.
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
    "views": tf.io.VarLenFeature(tf.float32),
    "view_shape": tf.io.FixedLenFeature([3], tf.int64, default_value=[0, 0, 0]),
}


class FeatureCacheError(ValueError):
    """A feature cache is missing, inconsistent, or was given inconsistent features."""


def read_index_file(path):
    """Reads an index file, raising `FeatureCacheError` naming it if it is not valid JSON."""
    try:
        index = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise FeatureCacheError(
            f"the feature cache index {path} is corrupt ({error}); delete the cache folder and "
            "extract again"
        ) from None
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        raise FeatureCacheError(
            f"the feature cache index {path} is not an index written by FeatureCacheWriter "
            "(no 'shards' list)"
        )
    return index


def sharding_of(index_name):
    """The --num_shards an index file's name says: 1 for index.json, N for index-*-of-N.json."""
    match = re.fullmatch(r"index(?:-(\d{5})-of-(\d{5}))?\.json", index_name)
    if match is None:
        return None
    return int(match.group(2)) if match.group(2) else 1


def _lock_name(index_name):
    """The writer's lock file of an index: .lock, or .lock-00001-of-00004 for a worker."""
    return ".lock" + index_name[len("index") : -len(".json")]


def check_complete(cache_dir, path, index):
    """Raises `FeatureCacheError` if the index at `path` is being written or was not sealed.

    An index with no ``complete`` field predates the seal and counts as complete unless a
    writer holds the folder's lock.
    """
    path = pathlib.Path(path)
    holder = lock_holder(cache_dir, _lock_name(path.name))
    shown = printable(cache_dir)
    if holder is not None:
        raise FeatureCacheError(
            f"the feature cache in {shown} is still being written by {holder}; wait for "
            "reslstm-extract to finish, then run again"
        )
    if index.get("complete", True) is not True:
        writer = printable(index.get("writer") or "its writer")
        raise FeatureCacheError(
            f"the feature cache in {shown} is incomplete: {path.name} is not sealed, its "
            f"writer ({writer}) stopped before finishing; run the same reslstm-extract "
            "command again to finish it"
        )


def read_index(cache_dir, partial=False):
    """Merges the JSON index files of a cache folder.

    Args:
        cache_dir: the cache folder.
        partial: also read a cache that is being written or was not sealed (its indexed
            shards, which are safe to read), to inspect it; training and evaluation never do.

    Returns:
        dict with 'files' (shard paths), 'ids' (list), 'feature_shape' [K_v, d_f],
        'num_views' (training-mode views per video, 0 without) and 'metadata' (of the
        first index).

    Raises:
        FeatureCacheError: no index, a corrupt index, a listed shard missing, duplicate ids,
            inconsistent shapes or numbers of views, or a cache still being written or not
            sealed as complete (`check_complete`).
    """
    cache_dir = pathlib.Path(cache_dir)
    index_files = sorted(glob.glob(os.path.join(glob.escape(os.fspath(cache_dir)), "index*.json")))
    if not index_files:
        raise FeatureCacheError(f"no feature cache index (index*.json) in {cache_dir}")
    files, ids, shape, views, metadata = [], [], None, None, None
    for path in index_files:
        index = read_index_file(path)
        if not partial:
            check_complete(cache_dir, path, index)
        if index.get("feature_shape") is None:
            continue
        if shape is not None and index["feature_shape"] != shape:
            raise FeatureCacheError(
                f"{path} holds features of shape {index['feature_shape']}, others {shape}"
            )
        if views is not None and index.get("num_views", 0) != views:
            raise FeatureCacheError(
                f"{path} holds {index.get('num_views', 0)} views per video, others {views}"
            )
        shape, views = index["feature_shape"], index.get("num_views", 0)
        metadata = index.get("metadata", {}) if metadata is None else metadata
        for shard in index["shards"]:
            shard_path = cache_dir / shard["file"]
            if not shard_path.is_file():
                raise FeatureCacheError(
                    f"{path} lists shard {shard['file']}, which is missing from {cache_dir}"
                )
            files.append(os.fspath(shard_path))
            ids.extend(shard["ids"])
    if len(set(ids)) != len(ids):
        raise FeatureCacheError(f"the cache in {cache_dir} lists some video ids twice")
    if shape is None:
        raise FeatureCacheError(f"the cache in {cache_dir} holds no finished shard")
    return {
        "files": files,
        "ids": ids,
        "feature_shape": shape,
        "num_views": views,
        "metadata": metadata or {},
    }


def _parse_unchecked(serialized):
    """`parse_example` without the finiteness check."""
    parsed = tf.io.parse_single_example(serialized, FEATURE_SPEC)
    for key in ("features", "frame_indices", "views"):
        parsed[key] = tf.sparse.to_dense(parsed[key])
    return parsed


def parse_example(serialized):
    """Parses a serialised example into dense tensors (features flat; see `FEATURE_SPEC`).

    Fails (``tf.errors.InvalidArgumentError`` when the dataset is read) naming the video if
    its features or views are not finite. Without views, ``views`` is empty.
    """
    parsed = _parse_unchecked(serialized)
    for key in ("features", "views"):
        finite = tf.debugging.Assert(
            tf.reduce_all(tf.math.is_finite(parsed[key])),
            [f"feature cache: the {key} of video", parsed["id"], "hold NaN or infinite values"],
        )
        with tf.control_dependencies([finite]):
            parsed[key] = tf.identity(parsed[key])
    return parsed


def tfrecord_dataset(cache_dir, index=None):
    """Returns a tf.data.Dataset of parsed examples (dicts) from a cache's indexed shards."""
    index = index if index is not None else read_index(cache_dir)
    ds = tf.data.TFRecordDataset(index["files"])
    return ds.map(parse_example, num_parallel_calls=tf.data.AUTOTUNE)


def tfrecord_ids(cache_dir, index=None):
    """A tf.data.Dataset of a cache's video ids (bytes), in `tfrecord_dataset`'s order."""
    index = index if index is not None else read_index(cache_dir)
    spec = {"id": FEATURE_SPEC["id"]}
    ds = tf.data.TFRecordDataset(index["files"])
    return ds.map(lambda record: tf.io.parse_single_example(record, spec)["id"])


def read_features(cache_dir):
    """Reads a whole cache into numpy.

    Args:
        cache_dir: the cache folder.

    Returns:
        A list of dicts: 'id' (str), 'label' (int), 'features' float32 (K_v, d_f),
        'frame_indices' int64 (K_v, L), 'num_frames', 'fps', 'meta' (dict), 'views'
        float32 (V, K_v, d_f) or None (a cache without views).

    Raises:
        FeatureCacheError: a video's features or views are not finite (naming it), or see
            `read_index`.
    """
    records = []
    dataset = tf.data.TFRecordDataset(read_index(cache_dir)["files"])
    dataset = dataset.map(_parse_unchecked, num_parallel_calls=tf.data.AUTOTUNE)
    for example in dataset.as_numpy_iterator():
        for key in ("features", "views"):
            if not np.all(np.isfinite(example[key])):
                raise FeatureCacheError(
                    f"the feature cache in {cache_dir} holds NaN or infinite {key} for video "
                    f"{example['id'].decode()!r}; extract it again"
                )
        view_shape = [int(v) for v in example["view_shape"]]
        records.append(
            {
                "id": example["id"].decode(),
                "label": int(example["label"]),
                "features": example["features"].reshape(example["feature_shape"]),
                "frame_indices": example["frame_indices"].reshape(example["index_shape"]),
                "num_frames": int(example["num_frames"]),
                "fps": float(example["fps"]),
                "meta": json.loads(example["meta"].decode()),
                "views": example["views"].reshape(view_shape) if view_shape[0] else None,
            }
        )
    return records
