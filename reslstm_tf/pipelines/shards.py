"""The feature-cache files a distributed extraction writes: shards from many workers, one index.

`reslstm_tf.data.feature_cache.FeatureCacheWriter` numbers its shards in one process. Workers
of a Beam pipeline cannot share a counter, so each shard they write gets a unique name,
``features-b<16 hex digits>.tfrecord``, and the records in it are the bytes
`reslstm_tf.data.feature_cache.make_example` makes, framed as TFRecords: readers see the same
cache, because they read the files the index lists, whatever their names.

Crash safety, as the single-process writer's:

* a shard is written to a hidden temporary file, synced, its ids written beside it (a hidden
  ``.<shard>.ids.json``), and only then renamed into place: a shard that exists is complete;
* the index (``index.json``) is written last, by `seal_index`, once every worker is done; it
  lists the shards of earlier runs and of this one, marks the cache complete and removes the
  id files;
* a rerun (`committed_shards`) deletes the temporary files and orphaned id files of a crash,
  reads the ids of the shards that made it, and skips those videos; a video written twice
  (a worker's bundle retried by the runner) is kept once (`seal_index` drops or rewrites
  the later shard).
"""

import json
import os
import pathlib
import tempfile
import uuid

import tensorflow as tf

from reslstm_tf.data.feature_cache import (
    INDEX_VERSION,
    FeatureCacheError,
    check_sharding,
    read_index_file,
)
from reslstm_tf.faults import fault_point
from reslstm_tf.files import atomic_write, new_file_mode

SHARD_GLOB = "features-b*.tfrecord"
INDEX_NAME = "index.json"


def _ids_path(shard_path):
    shard_path = pathlib.Path(shard_path)
    return shard_path.with_name(f".{shard_path.name}.ids.json")


def _write_records(path, records):
    """Writes serialised records as a TFRecord file and syncs it."""
    with tf.io.TFRecordWriter(os.fspath(path)) as writer:
        for record in records:
            writer.write(record)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_shard(out_dir, records):
    """Writes one shard atomically; returns its manifest {'file', 'ids', 'feature_shape'}.

    Args:
        out_dir: the cache folder.
        records: a list of (video id, serialised example, feature shape [K_v, d_f]).
    """
    out_dir = pathlib.Path(out_dir)
    name = f"features-b{uuid.uuid4().hex[:16]}.tfrecord"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
    os.fchmod(fd, new_file_mode())
    os.close(fd)
    try:
        _write_records(tmp, [record for _, record, _ in records])
        fault_point("beam_shard_written")
        ids = sorted(video_id for video_id, _, _ in records)
        with atomic_write(_ids_path(out_dir / name), "w") as handle:
            json.dump(ids, handle)
        os.replace(tmp, out_dir / name)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fault_point("beam_shard_finalised")
    return {"file": name, "ids": ids, "feature_shape": [int(v) for v in records[0][2]]}


def _ids_of(shard_path):
    """The ids of a shard: from its id file, else from its records."""
    ids_path = _ids_path(shard_path)
    if ids_path.is_file():
        return json.loads(ids_path.read_text(encoding="utf-8"))
    spec = {"id": tf.io.FixedLenFeature([], tf.string)}
    dataset = tf.data.TFRecordDataset(os.fspath(shard_path))
    return sorted(
        tf.io.parse_single_example(record, spec)["id"].numpy().decode() for record in dataset
    )


def read_previous(out_dir, metadata):
    """The cache index already in `out_dir` (None if there is none), checked against `metadata`.

    Raises:
        FeatureCacheError: the folder holds a cache of other settings, or of parallel
            workers (``index-*-of-*.json``).
    """
    out_dir = pathlib.Path(out_dir)
    check_sharding(out_dir, 1)
    path = out_dir / INDEX_NAME
    if not path.exists():
        return None
    index = read_index_file(path)
    stored = index.get("metadata", {})
    if stored != json.loads(json.dumps(metadata)):
        raise FeatureCacheError(
            f"{path} was written with metadata {stored}, which differs from this run's "
            f"{metadata}; use another out_dir or delete the cache"
        )
    return index


def committed_shards(out_dir, previous):
    """Cleans a crash's leftovers; returns the manifests of shards written but not indexed."""
    out_dir = pathlib.Path(out_dir)
    listed = {shard["file"] for shard in (previous or {}).get("shards", [])}
    for leftover in out_dir.glob(".features-b*.tfrecord.*.tmp"):
        leftover.unlink(missing_ok=True)
    manifests = []
    for path in sorted(out_dir.glob(SHARD_GLOB)):
        if path.name not in listed and path.is_file():
            manifests.append({"file": path.name, "ids": _ids_of(path), "feature_shape": None})
    for ids_path in out_dir.glob(".features-b*.tfrecord.ids.json"):
        if not (out_dir / ids_path.name[1 : -len(".ids.json")]).is_file():
            ids_path.unlink(missing_ok=True)
    return manifests


def mark_incomplete(out_dir, previous, writer):
    """Rewrites an existing index as not sealed, before a run adds shards to its cache."""
    if previous is None:
        return
    index = {**previous, "complete": False, "writer": writer}
    with atomic_write(pathlib.Path(out_dir) / INDEX_NAME, "w") as handle:
        json.dump(index, handle, indent=1)


def _drop_ids(out_dir, manifest, drop):
    """Rewrites a shard without the records of `drop`; returns its new manifest or None."""
    path = pathlib.Path(out_dir) / manifest["file"]
    keep = [i for i in manifest["ids"] if i not in drop]
    if keep:
        spec = {"id": tf.io.FixedLenFeature([], tf.string)}
        records = [
            (tf.io.parse_single_example(r, spec)["id"].numpy().decode(), r.numpy(), None)
            for r in tf.data.TFRecordDataset(os.fspath(path))
        ]
        kept = [(i, r, [0, 0]) for i, r, _ in records if i not in drop]
        new = write_shard(out_dir, kept)
        new["feature_shape"] = manifest["feature_shape"]
    _ids_path(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    return new if keep else None


def seal_index(out_dir, metadata, previous, manifests):
    """Writes the sealed index of the earlier shards and `manifests`; returns it.

    A video listed in two shards (a retried bundle) is kept in the first of `manifests` (in
    the order given); the later shard is rewritten without it, or deleted. The id files are
    removed once the index is written.
    """
    out_dir = pathlib.Path(out_dir)
    shards = [{"file": s["file"], "ids": s["ids"]} for s in (previous or {}).get("shards", [])]
    shape = (previous or {}).get("feature_shape")
    seen = {i for shard in shards for i in shard["ids"]}
    for manifest in manifests:
        duplicate = seen.intersection(manifest["ids"])
        if duplicate:
            manifest = _drop_ids(out_dir, manifest, duplicate)
            if manifest is None:
                continue
        shape = shape or manifest["feature_shape"]
        shards.append({"file": manifest["file"], "ids": manifest["ids"]})
        seen.update(manifest["ids"])
    if shape is None and shards:
        shape = shard_feature_shape(out_dir / shards[-1]["file"])
    if not shards:
        return None
    index = {
        "version": INDEX_VERSION,
        "metadata": metadata,
        "feature_shape": shape,
        "shards": shards,
        "complete": True,
    }
    with atomic_write(out_dir / INDEX_NAME, "w") as handle:
        json.dump(index, handle, indent=1)
    for shard in shards:
        _ids_path(out_dir / shard["file"]).unlink(missing_ok=True)
    return index


def shard_feature_shape(shard_path):
    """Returns the [K_v, d_f] feature shape of a shard's first record."""
    spec = {"feature_shape": tf.io.FixedLenFeature([2], tf.int64)}
    for record in tf.data.TFRecordDataset(os.fspath(shard_path)).take(1):
        return [int(v) for v in tf.io.parse_single_example(record, spec)["feature_shape"]]
    raise FeatureCacheError(f"shard {shard_path} holds no record")
