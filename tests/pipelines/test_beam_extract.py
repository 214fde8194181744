"""The Beam extraction pipeline writes reslstm-extract's cache, on real clips.

A small spec (2 segments of 8 frames at 128 -> 112 px) and an I3D with random weights saved to
a file (so that reslstm-extract and every Beam worker load the same backbone).
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import require

beam = require("apache_beam")

from reslstm_tf.clip_spec import ClipSpec  # noqa: E402
from reslstm_tf.data import feature_cache  # noqa: E402
from reslstm_tf.data.feature_sets import load_feature_set  # noqa: E402
from reslstm_tf.extract import ExtractConfig, ExtractInputError, extract  # noqa: E402
from reslstm_tf.pipelines import extract as pipeline_lib  # noqa: E402

CLIPS_PER_CLASS = 3
BAD = {"Ollie/empty.mp4": b"", "Ollie/notes.mp4": b"not a video, a text file renamed\n"}


@pytest.fixture(scope="module")
def clips(shared_data, tmp_path_factory):
    """A folder dataset of real clips (linked) and two bad files; a random I3D's weights."""
    from reslstm_tf.backbones.extractor import feature_model

    root = tmp_path_factory.mktemp("beam")
    data = root / "videos"
    for name in ("Kickflip", "Ollie"):
        (data / name).mkdir(parents=True)
        for clip in sorted((shared_data / "skateboard" / name).glob("*.mp4"))[:CLIPS_PER_CLASS]:
            (data / name / clip.name).symlink_to(clip)
    for rel, content in BAD.items():
        (data / rel).write_bytes(content)
    weights = root / "i3d_random.weights.h5"
    feature_model("i3d", "rgb", weights=None).save_weights(weights)
    spec = ClipSpec(
        num_segments=2,
        segment_len=8,
        frame_size=112,
        resize_short_side=128,
        backbone_weights=os.fspath(weights),
    )
    return root, data, spec


def _config(clips, out_dir, **kwargs):
    root, data, spec = clips
    return ExtractConfig(
        data_dir=os.fspath(data), out_dir=os.fspath(root / out_dir), clip=spec, **kwargs
    )


def _good_ids(clips):
    data = clips[1]
    ids = {f"{p.parent.name}/{p.name}" for p in data.glob("*/*.mp4")}
    return ids - set(BAD)


def _direct(mode="multi_processing"):
    return pipeline_lib.pipeline_options(
        "direct", [f"--direct_running_mode={mode}", "--direct_num_workers=2"]
    )


@pytest.mark.slow
def test_beam_cache_equals_reslstm_extract_and_train_reads_it(clips):
    expected = extract(_config(clips, "extract", shard_size=2), progress=False)
    summary = pipeline_lib.run_extract(_config(clips, "beam", shard_size=2), _direct())
    root = clips[0]
    ours = {r["id"]: r for r in feature_cache.read_features(root / "beam")}
    theirs = {r["id"]: r for r in feature_cache.read_features(root / "extract")}
    assert set(ours) == set(theirs) == _good_ids(clips)
    for video_id, record in theirs.items():
        np.testing.assert_allclose(ours[video_id]["features"], record["features"], atol=1e-5)
        np.testing.assert_array_equal(ours[video_id]["frame_indices"], record["frame_indices"])
        for key in ("label", "num_frames", "fps", "meta"):
            assert ours[video_id][key] == record[key]
    ours_index = feature_cache.read_index(root / "beam")
    theirs_index = feature_cache.read_index(root / "extract")
    assert ours_index["metadata"] == theirs_index["metadata"]
    assert ours_index["feature_shape"] == theirs_index["feature_shape"] == [2, 1024]
    # the dead letter: both bad files, with reasons, as reslstm-extract's failures.json
    assert summary["done"] == len(theirs) and summary["failed"] == len(BAD)
    failures = json.loads((root / "beam" / "failures.json").read_text())["failures"]
    assert {f["id"] for f in failures} == set(BAD) == {f["id"] for f in expected["failures"]}
    assert all("VideoReadError" in f["error"] for f in failures)
    # the reader reslstm-train uses
    feature_set = load_feature_set(root / "beam")
    assert sorted(feature_set.ids) == sorted(theirs)
    assert feature_set.class_names == ["Kickflip", "Ollie"]
    # a second run finds everything done and changes nothing
    again = pipeline_lib.run_extract(_config(clips, "beam", shard_size=2), _direct("in_memory"))
    assert again["done"] == 0 and again["skipped"] == len(theirs)
    assert again["failed"] == len(BAD)  # bad videos are retried, and fail again
    assert feature_cache.read_index(root / "beam")["ids"] == ours_index["ids"]


def _beam_command(clips, out_dir, *extra):
    root, data, spec = clips
    return [
        sys.executable,
        "-m",
        "reslstm_tf.cli.beam",
        "extract",
        "--runner=direct",
        f"--data_dir={data}",
        f"--out_dir={root / out_dir}",
        "--segments=2",
        "--segment_len=8",
        "--frame_size=112",
        "--resize_short_side=128",
        f"--weights={spec.backbone_weights}",
        "--shard_size=1",
        *extra,
    ]


@pytest.mark.slow
def test_killed_pipeline_reruns_to_every_video_exactly_once(clips):
    root = clips[0]
    command = _beam_command(clips, "killed", "--", "--direct_running_mode=in_memory")
    env = {**os.environ, "RESLSTM_FAULT": "beam_shard_finalised:2"}
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    written = list((root / "killed").glob("features-b*.tfrecord"))
    assert len(written) == 2
    assert not (root / "killed" / "index.json").exists()  # the index comes last
    with pytest.raises(feature_cache.FeatureCacheError):
        feature_cache.read_index(root / "killed")
    # the rerun serves one backbone to the worker processes (as on a multi-core worker)
    command = _beam_command(
        clips, "killed", "--share_model", "--", "--direct_running_mode=in_memory"
    )
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "skipped 2 (already cached)" in rerun.stdout
    index = feature_cache.read_index(root / "killed")
    assert sorted(index["ids"]) == sorted(_good_ids(clips))  # each once, none missing
    records = feature_cache.read_features(root / "killed")
    assert sorted(r["id"] for r in records) == sorted(_good_ids(clips))
    assert not list((root / "killed").glob(".*.tmp")) + list((root / "killed").glob(".*.json"))


def test_views_and_parallel_workers_are_refused(tmp_path):
    for kwargs in ({"views": 2}, {"num_shards": 2}):
        config = ExtractConfig(data_dir=os.fspath(tmp_path), out_dir=os.fspath(tmp_path), **kwargs)
        with pytest.raises(ExtractInputError, match="runner spreads the work"):
            pipeline_lib.run_extract(config)


def test_unknown_runner_is_refused():
    with pytest.raises(ExtractInputError, match="runner must be one of"):
        pipeline_lib.pipeline_options("local")


def test_a_cache_of_other_settings_is_refused(tmp_path):
    from reslstm_tf.pipelines import shards

    index = {"metadata": {"frame_size": 224}, "shards": []}
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(feature_cache.FeatureCacheError, match="differs from this run"):
        shards.read_previous(tmp_path, {"frame_size": 112})
    other = pathlib.Path(tmp_path / "other")
    other.mkdir()
    (other / "index-00000-of-00002.json").write_text("{}")
    with pytest.raises(feature_cache.FeatureCacheError, match="num_shards=2"):
        shards.read_previous(other, {})
