"""`reslstm-extract` with an output folder that cannot be written, or a disk that fills up.

The read-only and full disks are real: a tmpfs mounted (read-only, or a few pages small) over
the output folder inside a private mount namespace (``unshare -m``, root). The data written
before the disk filled up is copied out of the namespace and read back.
"""

import errno
import os
import shlex
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from reslstm_tf.data import feature_cache as features
from tests.reliability.test_extract_faults import check_cache, extract_command, read_shard

FLAGS = ["--dataset=folder", "--segments=2", "--segment_len=2", "--batch_size=1"]


def _command(data_dir, split_file, out_dir, *extra):
    return extract_command(data_dir, split_file, out_dir, *FLAGS, *extra)


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    # Decoding a video kills the run: an error raised before decoding exits with 1 instead.
    env["RESLSTM_FAULT"] = "extract_decoded:1"
    return env


def _require_mount_namespace():
    """Fails under CI, skips elsewhere, unless `unshare -m` can mount a tmpfs here."""
    unshare = shutil.which("unshare")
    probe = None
    if unshare:
        with tempfile.TemporaryDirectory() as target:
            probe = subprocess.run(
                [unshare, "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {target}"],
                capture_output=True,
                text=True,
                check=False,
            )
    if probe is None or probe.returncode != 0:
        reason = "unshare not found" if probe is None else probe.stderr.strip()
        message = f"needs `unshare -m` and tmpfs mounts (run as root): {reason}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return unshare


def _in_namespace(unshare, script, env, timeout=600):
    """Runs a shell script in a private mount namespace."""
    return subprocess.run(
        [unshare, "-m", "sh", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def clips(shared_data, tmp_path_factory):
    data_dir = shared_data / "skateboard"
    good = (data_dir / "trainlist.txt").read_text().split()[:6]
    split_file = tmp_path_factory.mktemp("lists") / "list.txt"
    split_file.write_text("\n".join(good) + "\n")
    return data_dir, split_file, good


@pytest.mark.slow
def test_output_under_a_regular_file_fails_before_decoding(clips, tmp_path):
    data_dir, split_file, _ = clips
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a regular file")
    out_dir = blocker / "cache"
    result = subprocess.run(
        _command(data_dir, split_file, out_dir),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert f"cannot write the feature cache in {out_dir}" in result.stderr
    assert "regular file, not a folder" in result.stderr
    assert "Traceback" not in result.stderr
    assert blocker.read_text() == "a regular file"


@pytest.mark.slow
def test_read_only_output_fails_before_decoding(clips, tmp_path):
    unshare = _require_mount_namespace()
    data_dir, split_file, _ = clips
    out_dir = tmp_path / "cache"
    out_dir.mkdir()
    command = shlex.join(_command(data_dir, split_file, out_dir))
    script = f"mount -t tmpfs -o ro tmpfs {shlex.quote(str(out_dir))} && {command}"
    result = _in_namespace(unshare, script, _env())
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert f"cannot write the feature cache in {out_dir}: the file system is read-only" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_disk_full_mid_run_keeps_the_finished_shards(clips, tmp_path):
    unshare = _require_mount_namespace()
    data_dir, split_file, good = clips
    out_dir = tmp_path / "cache"
    out_dir.mkdir()
    copy = tmp_path / "copied_out"
    # One video per shard, ~8.3 KB each (3 pages): 40 KB holds two or three, not six.
    command = shlex.join(_command(data_dir, split_file, out_dir, "--shard_size=1"))
    target = shlex.quote(str(out_dir))
    script = (
        f"mount -t tmpfs -o size=40k tmpfs {target} && "
        f"{{ {command}; status=$?; cp -a {target} {shlex.quote(str(copy))}; exit $status; }}"
    )
    env = _env()
    env.pop("RESLSTM_FAULT")  # this run must decode
    result = _in_namespace(unshare, script, env)
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    message = result.stderr.split("reslstm-extract: error: ")[-1]
    assert message.startswith(f"cannot write the feature cache in {out_dir}: the disk is full")
    assert "Traceback" not in result.stderr
    assert not any(out_dir.iterdir()), "the tmpfs must have hidden the real folder"
    with pytest.raises(features.FeatureCacheError, match="not sealed"):
        features.read_index(copy)  # readers refuse the unfinished cache
    index = features.read_index(copy, partial=True)  # what was written
    written = index["ids"]
    assert 1 <= len(written) < len(good), written
    assert f"The {len(written)} videos already in the cache are intact" in message
    check_cache(copy, written, partial=True)  # indexed shards parse completely, no leftovers
    for shard in index["files"]:
        assert len(read_shard(shard)) == 1


def test_index_write_failure_leaves_no_unindexed_shard_and_no_duplicate(tmp_path, monkeypatch):
    writer = features.FeatureCacheWriter(tmp_path, shard_size=2)
    for name in ("a", "b"):
        writer.add(name, 0, np.full((2, 3), ord(name), "float32"))
    real_atomic_write = features.atomic_write

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(features, "atomic_write", disk_full)  # the shard fits, the index not
    writer.add("c", 1, np.full((2, 3), 3.0, "float32"))
    with pytest.raises(features.FeatureCacheWriteError) as info:
        writer.add("d", 1, np.full((2, 3), 4.0, "float32"))
    assert info.value.errno == errno.ENOSPC and info.value.cached == 2
    assert str(info.value).startswith(f"cannot write the feature cache in {tmp_path}: the disk")
    assert sorted(p.name for p in tmp_path.glob("*.tfrecord")) == ["features-00000.tfrecord"]
    assert sorted(features.read_index(tmp_path, partial=True)["ids"]) == ["a", "b"]
    monkeypatch.setattr(features, "atomic_write", real_atomic_write)  # space is back
    writer.close()  # the run failed: the cache stays unsealed until a rerun finishes it
    assert sorted(features.read_index(tmp_path, partial=True)["ids"]) == ["a", "b", "c", "d"]
    with features.FeatureCacheWriter(tmp_path, shard_size=2):
        pass  # the rerun: every video is there already
    assert sorted(features.read_index(tmp_path)["ids"]) == ["a", "b", "c", "d"]
    records = {r["id"]: r["features"] for r in features.read_features(tmp_path)}
    assert sorted(records) == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(records["d"], np.full((2, 3), 4.0))
