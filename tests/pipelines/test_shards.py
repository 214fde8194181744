"""Shards of many workers, one sealed index: the files a distributed extraction writes."""

import json

import numpy as np
import pytest

from tests.conftest import require

require("apache_beam")

from reslstm_tf.cli.beam import split_beam_args  # noqa: E402
from reslstm_tf.data import feature_cache  # noqa: E402
from reslstm_tf.pipelines import shards  # noqa: E402


def _records(ids, value=1.0):
    return [
        (i, feature_cache.make_example(i, 0, np.full((2, 3), value, np.float32)), [2, 3])
        for i in ids
    ]


def test_written_shards_are_read_back_after_a_crash_and_sealed_once(tmp_path):
    first = shards.write_shard(tmp_path, _records(["a", "b"]))
    (tmp_path / f".{first['file']}.123.tmp").write_bytes(b"half a shard")
    (tmp_path / ".features-b0000000000000000.tfrecord.ids.json").write_text("[]")
    found = shards.committed_shards(tmp_path, None)
    assert [(m["file"], m["ids"]) for m in found] == [(first["file"], ["a", "b"])]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [
        f".{first['file']}.ids.json"
    ]
    # without its id file, the ids come from the records
    (tmp_path / f".{first['file']}.ids.json").unlink()
    assert shards.committed_shards(tmp_path, None)[0]["ids"] == ["a", "b"]
    second = shards.write_shard(tmp_path, _records(["c"]))
    index = shards.seal_index(tmp_path, {"k": 1}, None, [first, second])
    assert index["complete"] is True and index["feature_shape"] == [2, 3]
    assert sorted(feature_cache.read_index(tmp_path)["ids"]) == ["a", "b", "c"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".features")]


def test_a_video_written_twice_is_kept_once(tmp_path):
    first = shards.write_shard(tmp_path, _records(["a", "b"]))
    partial = shards.write_shard(tmp_path, _records(["b", "c"], value=2.0))
    whole = shards.write_shard(tmp_path, _records(["a"], value=3.0))
    shards.seal_index(tmp_path, {}, None, [first, partial, whole])
    records = feature_cache.read_features(tmp_path)
    assert sorted(r["id"] for r in records) == ["a", "b", "c"]
    assert len(list(tmp_path.glob("features-b*.tfrecord"))) == 2


def test_a_run_adding_to_a_cache_unseals_it_until_it_finishes(tmp_path):
    first = shards.write_shard(tmp_path, _records(["a"]))
    index = shards.seal_index(tmp_path, {}, None, [first])
    shards.mark_incomplete(tmp_path, index, "pid 1")
    with pytest.raises(feature_cache.FeatureCacheError, match="not sealed"):
        feature_cache.read_index(tmp_path)
    shards.seal_index(tmp_path, {}, json.loads((tmp_path / "index.json").read_text()), [])
    assert feature_cache.read_index(tmp_path)["ids"] == ["a"]


def test_beam_options_are_split_from_the_tools_flags():
    known = {"data_dir", "out_dir", "runner", "verbosity", "share_model"}
    argv = ["reslstm-beam", "extract", "--data_dir=v", "--num_workers=4", "--noshare_model"]
    own, beam = split_beam_args([*argv, "--", "--project=p", "--data_dir=x"], known)
    assert own == ["reslstm-beam", "extract", "--data_dir=v", "--noshare_model"]
    assert beam == ["--num_workers=4", "--project=p", "--data_dir=x"]
