"""The TFRecord feature cache: round trip, resume without duplicates, atomic shards."""

import json

import numpy as np
import pytest
import tensorflow as tf

from reslstm_tf.data import feature_cache as features
from reslstm_tf.data.feature_cache import FeatureCacheError, FeatureCacheWriter


def fake_video(i, k=4, d=6):
    rng = np.random.default_rng(i)
    return {
        "video_id": f"Class{i % 2}/v{i}.mp4",
        "label": i % 2,
        "features": rng.standard_normal((k, d)).astype(np.float32),
        "frame_indices": np.arange(k * 3).reshape(k, 3) + i,
        "num_frames": 40 + i,
        "fps": 25.0 + i,
        "meta": {"source": "test", "i": i},
    }


def write(out_dir, ids, **kwargs):
    with FeatureCacheWriter(out_dir, **kwargs) as writer:
        added = [writer.add(**fake_video(i)) for i in ids]
    return added


def test_round_trip(tmp_path):
    write(tmp_path, range(7), shard_size=3, metadata={"backbone": "fake"})
    index = features.read_index(tmp_path)
    assert len(index["files"]) == 3 and index["feature_shape"] == [4, 6]
    assert index["metadata"] == {"backbone": "fake"}
    records = {r["id"]: r for r in features.read_features(tmp_path)}
    assert len(records) == 7
    for i in range(7):
        expected = fake_video(i)
        got = records[expected["video_id"]]
        np.testing.assert_array_equal(got["features"], expected["features"])
        np.testing.assert_array_equal(got["frame_indices"], expected["frame_indices"])
        assert got["label"] == expected["label"] and got["num_frames"] == expected["num_frames"]
        assert got["fps"] == pytest.approx(expected["fps"])
        assert got["meta"] == expected["meta"]
    # an independent reader: plain TFRecordDataset + tf.train.Example
    raw = next(iter(tf.data.TFRecordDataset(index["files"][0])))
    example = tf.train.Example.FromString(raw.numpy())
    feature = example.features.feature
    first = records[feature["id"].bytes_list.value[0].decode()]
    np.testing.assert_allclose(feature["features"].float_list.value, first["features"].ravel())


def test_resume_skips_done_ids_and_never_duplicates(tmp_path):
    write(tmp_path, range(5), shard_size=2)
    added = write(tmp_path, range(8), shard_size=2)
    assert added == [False] * 5 + [True] * 3
    ids = features.read_index(tmp_path)["ids"]
    assert sorted(ids) == sorted(fake_video(i)["video_id"] for i in range(8))
    assert len(features.read_features(tmp_path)) == 8


def test_crash_leaves_no_partial_shard(tmp_path):
    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom):
        with FeatureCacheWriter(tmp_path, shard_size=2) as writer:
            for i in range(3):
                writer.add(**fake_video(i))
            raise Boom()
    # exiting flushed the finished videos; no temporary files remain
    assert not list(tmp_path.glob(".*tmp"))
    # a shard file that is not in the index (crash between rename and index) is ignored
    (tmp_path / "features-00009.tfrecord").write_bytes(b"garbage")
    # the run stopped early: readers refuse the unsealed cache until a rerun finishes it
    with pytest.raises(FeatureCacheError, match="incomplete.*not sealed"):
        features.read_features(tmp_path)
    with FeatureCacheWriter(tmp_path, shard_size=2) as writer:
        assert not writer.add(**fake_video(0))
    assert len(features.read_features(tmp_path)) == 3


def test_parallel_writers_merge(tmp_path):
    for shard_index in range(2):
        ids = [i for i in range(6) if i % 2 == shard_index]
        write(tmp_path, ids, num_shards=2, shard_index=shard_index)
    assert len(list(tmp_path.glob("index-*-of-00002.json"))) == 2
    assert len(features.read_index(tmp_path)["ids"]) == 6


def test_errors(tmp_path):
    with pytest.raises(FeatureCacheError, match="no feature cache index"):
        features.read_index(tmp_path)
    with FeatureCacheWriter(tmp_path, metadata={"backbone": "a"}) as writer:
        writer.add(**fake_video(0))
        with pytest.raises(FeatureCacheError, match=r"have shape \(2, 6\)"):
            writer.add("x", 0, np.zeros((2, 6)))
    with pytest.raises(FeatureCacheError, match="differs"):
        FeatureCacheWriter(tmp_path, metadata={"backbone": "b"})
    with pytest.raises(ValueError, match="Received: shard_index=2, num_shards=2"):
        FeatureCacheWriter(tmp_path, num_shards=2, shard_index=2)
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["shards"][0]["ids"] == [fake_video(0)["video_id"]]
