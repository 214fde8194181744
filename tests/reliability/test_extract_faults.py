"""`reslstm-extract` killed by SIGKILL at each of its 5 crash points, then resumed.

Each test runs the real command line on 5 real clips (and one listed clip that does not
exist) with ``RESLSTM_FAULT=<point>:<N>``, checks that it died by SIGKILL and left the state
that point implies, reruns it without the fault, and checks the cache: every video exactly
once in the index and in the shards, every shard file parses to the end, no leftovers, the
features equal those of an uninterrupted run, and the missing clip is reported.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from reslstm_tf.data import feature_cache as features

pytestmark = pytest.mark.slow

MISSING = "Ollie/not_on_disk.mp4"
# Small and fast: I3D on 2 segments of 2 frames, 2 videos per batch and per shard, so the
# 5 good clips make 3 shards: [0, 1], [2, 3], [4] (the missing clip is listed 4th).
FLAGS = [
    "--dataset=folder",
    "--segments=2",
    "--segment_len=2",
    "--batch_size=2",
    "--shard_size=2",
    "--decode_workers=1",
]

# point -> (hit that kills, videos cached before the kill, files the kill must leave)
FAULTS = {
    "extract_decoded": ("extract_decoded:2", 2, []),
    "shard_record_written": ("shard_record_written:3", 2, [".features-00001.tfrecord.*.tmp"]),
    "shard_finalised": ("shard_finalised:2", 2, ["features-00001.tfrecord"]),
    "index_updated": ("index_updated:2", 4, []),
    "extract_finished": ("extract_finished", 5, []),
}


def _env(fault=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("RESLSTM_FAULT", None)
    if fault:
        env["RESLSTM_FAULT"] = fault
    return env


def extract_command(data_dir, split_file, out_dir, *flags):
    """The `reslstm-extract` command line as a `python -m` invocation."""
    return [
        sys.executable,
        "-m",
        "reslstm_tf.cli.extract",
        f"--data_dir={data_dir}",
        f"--split_file={split_file}",
        f"--out_dir={out_dir}",
        *flags,
    ]


def run_extract(data_dir, split_file, out_dir, fault=None):
    """Runs `reslstm-extract` in a fresh process; returns the CompletedProcess."""
    command = extract_command(data_dir, split_file, out_dir, *FLAGS)
    return subprocess.run(
        command, env=_env(fault), capture_output=True, text=True, timeout=600, check=False
    )


def read_shard(path):
    """Parses every record of one TFRecord file (raises on a truncated or corrupt file)."""
    records = []
    for serialized in tf.data.TFRecordDataset([os.fspath(path)]):
        example = features.parse_example(serialized)
        records.append(
            (
                example["id"].numpy().decode(),
                example["features"].numpy().reshape(example["feature_shape"].numpy()),
            )
        )
    return records


def check_cache(out_dir, expected_ids, partial=False):
    """Asserts the cache is consistent (and sealed unless `partial`); returns {id: features}."""
    index = features.read_index(out_dir, partial=partial)
    assert sorted(index["ids"]) == sorted(expected_ids)  # each video exactly once
    assert len(index["ids"]) == len(set(index["ids"]))
    listed = {os.path.basename(f) for f in index["files"]}
    on_disk = {p.name for p in out_dir.glob("*.tfrecord")}
    assert on_disk == listed, f"unindexed shard files: {sorted(on_disk - listed)}"
    # The writer's lock file stays: the lock itself died with the process.
    leftovers = sorted(p.name for p in out_dir.glob(".*") if p.name != ".lock")
    assert not leftovers, f"temporary files left: {leftovers}"
    stored = json.loads((out_dir / "index.json").read_text())
    by_id = {}
    for shard in stored["shards"]:
        records = read_shard(out_dir / shard["file"])  # every record, to the end
        assert sorted(r[0] for r in records) == sorted(shard["ids"]), shard["file"]
        for video_id, feats in records:
            assert video_id not in by_id, f"{video_id} is stored twice"
            assert np.all(np.isfinite(feats))
            by_id[video_id] = feats
    assert sorted(by_id) == sorted(expected_ids)
    return by_id


@pytest.fixture(scope="module")
def clips(shared_data, tmp_path_factory):
    """5 real clips and one missing clip in a folder-dataset list; the good ids."""
    data_dir = shared_data / "skateboard"
    lines = (data_dir / "trainlist.txt").read_text().split()
    good = [lines[0], lines[1], lines[2], lines[3], lines[4]]
    listed = [*good[:3], MISSING, *good[3:]]
    split_file = tmp_path_factory.mktemp("lists") / "list.txt"
    split_file.write_text("\n".join(listed) + "\n")
    return data_dir, split_file, good


@pytest.fixture(scope="module")
def reference(clips, tmp_path_factory):
    """The features of an uninterrupted run."""
    data_dir, split_file, good = clips
    out_dir = tmp_path_factory.mktemp("reference")
    result = run_extract(data_dir, split_file, out_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "done 5, skipped 0 (already cached), failed 1" in result.stdout
    return check_cache(out_dir, good)


@pytest.mark.parametrize("point", list(FAULTS))
def test_resume_after_sigkill(point, clips, reference, tmp_path):
    data_dir, split_file, good = clips
    fault, cached_before, leftovers = FAULTS[point]
    out_dir = tmp_path / "cache"

    killed = run_extract(data_dir, split_file, out_dir, fault=fault)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])
    assert "done " not in killed.stdout  # it never reached the report
    if cached_before:
        assert len(features.read_index(out_dir, partial=True)["ids"]) == cached_before
    for pattern in leftovers:  # the crash left what this point implies
        assert list(out_dir.glob(pattern)), f"{point}: expected a leftover {pattern}"
    assert not (out_dir / "failures.json").exists()
    if point != "extract_finished":  # killed before the run finished: readers refuse it
        with pytest.raises(features.FeatureCacheError, match="not sealed"):
            features.read_index(out_dir)
    for shard in features.read_index(out_dir, partial=True)["files"]:  # indexed is readable
        read_shard(shard)

    resumed = run_extract(data_dir, split_file, out_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        f"done {5 - cached_before}, skipped {cached_before} (already cached), failed 1"
        in resumed.stdout
    ), resumed.stdout
    assert f"failed: {MISSING}: VideoReadError" in resumed.stdout
    stored = check_cache(out_dir, good)
    for video_id in good:
        np.testing.assert_allclose(stored[video_id], reference[video_id], rtol=1e-4, atol=1e-5)
    failures = json.loads((out_dir / "failures.json").read_text())["failures"]
    assert [f["id"] for f in failures] == [MISSING]
    assert "does not exist" in failures[0]["error"]
