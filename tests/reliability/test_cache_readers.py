"""Writers and readers of a feature cache agree on when it may be read.

Before, `reslstm-train` started while `reslstm-extract` was still writing trained on the
videos indexed so far (4 of 6) and exited 0; a second extraction with another
``--num_shards`` into a finished cache extracted its videos again, after which every reader
refused "some video ids are listed twice"; a ``.lock`` that was a symbolic link made the
writer truncate the file it pointed to; a video named with a newline forged a line of the
extraction report; shards were written 0600 whatever the umask.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from reslstm_tf.cli.extract import report
from reslstm_tf.data import feature_cache as features
from reslstm_tf.data.feature_cache import FeatureCacheError, FeatureCacheWriter
from reslstm_tf.files import FolderBusyError, folder_lock, lock_holder
from tests.data.test_feature_cache import fake_video, write

HOLDER = """
import sys, time
from reslstm_tf.files import folder_lock
with folder_lock(sys.argv[1], "feature cache"):
    print("held", flush=True)
    time.sleep(120)
"""


def _unsealed(folder, ids=range(4)):
    """A cache whose writer flushed shards but never finished (as if killed)."""
    writer = FeatureCacheWriter(folder, shard_size=2)
    for i in ids:
        writer.add(**fake_video(i))
    writer.flush()
    return writer


def test_a_reader_refuses_a_cache_another_process_is_writing(tmp_path):
    _unsealed(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(FeatureCacheError) as info:
            features.read_index(tmp_path)
        assert time.monotonic() - start < 1.0  # refused at once, never waits for the writer
        message = str(info.value)
        assert f"is still being written by pid {holder.pid} " in message, message
        assert "\n" not in message
        assert lock_holder(tmp_path).startswith(f"pid {holder.pid} ")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The writer died: the lock is free, but its index was never sealed.
    assert lock_holder(tmp_path) is None
    with pytest.raises(FeatureCacheError, match=rf"not sealed, its writer \(pid {os.getpid()}\)"):
        features.read_features(tmp_path)
    assert len(features.read_index(tmp_path, partial=True)["ids"]) == 4  # for inspection


def test_a_finished_run_seals_and_a_cache_from_before_the_seal_is_read(tmp_path):
    write(tmp_path, range(6), shard_size=2)
    index = features.read_index_file(tmp_path / "index.json")
    assert index["complete"] is True and "writer" not in index
    assert len(features.read_index(tmp_path)["ids"]) == 6
    # An index written before the seal existed has no "complete" field: with no writer
    # holding the lock it counts as complete.
    old = tmp_path / "old"
    _unsealed(old)
    text = (old / "index.json").read_text()
    stripped = features.read_index_file(old / "index.json")
    del stripped["complete"], stripped["writer"]
    (old / "index.json").write_text(__import__("json").dumps(stripped))
    assert text != (old / "index.json").read_text()
    assert len(features.read_index(old)["ids"]) == 4


def test_resuming_a_sealed_cache_unseals_it_until_the_run_ends(tmp_path):
    write(tmp_path, range(2), shard_size=2)
    _unsealed(tmp_path, ids=range(2, 4))  # a rerun that adds videos, then dies
    with pytest.raises(FeatureCacheError, match="not sealed"):
        features.read_index(tmp_path)
    write(tmp_path, range(4), shard_size=2)  # run again to its end
    assert sorted(features.read_index(tmp_path)["ids"]) == sorted(
        fake_video(i)["video_id"] for i in range(4)
    )


@pytest.mark.parametrize(("first", "then"), [(1, 2), (2, 1), (2, 3)])
def test_another_sharding_into_a_cache_is_refused(tmp_path, first, then):
    for shard_index in range(first):
        write(tmp_path, range(6)[shard_index::first], num_shards=first, shard_index=shard_index)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(FeatureCacheError, match=f"written with --num_shards={first}") as info:
        FeatureCacheWriter(tmp_path, num_shards=then, shard_index=0)
    assert f"extract with --num_shards={first}, or into another folder" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert len(features.read_index(tmp_path)["ids"]) == 6  # still readable, no duplicates


@pytest.mark.parametrize("link", ["symlink", "link"])
def test_a_linked_lock_file_is_refused_and_its_target_kept(tmp_path, link):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    getattr(os, link)(precious, cache / ".lock")
    with pytest.raises(FolderBusyError, match="lock file .* (symbolic link|hard link)"):
        with folder_lock(cache, "feature cache"):
            pass
    with pytest.raises(FolderBusyError):
        lock_holder(cache)
    assert precious.read_text() == "keep me\n"


def test_the_lock_file_is_never_truncated_while_opening(tmp_path):
    with folder_lock(tmp_path) as path:
        record = path.read_text()
        assert record.startswith(f"pid {os.getpid()} ")


def test_a_file_name_cannot_forge_a_report_line(capsys):
    name = "x\ndone 99, skipped 0 (already cached), failed 0\n.mp4"
    summary = {
        "done": 0,
        "skipped": 0,
        "failed": 1,
        "failures": [{"id": name, "error": "VideoReadError: empty\x1b[2J"}],
        "problems": ["line 3: 'Nonexist/x\r.mp4' does not exist"],
        "seconds": 0.1,
        "failures_file": "cache/failures.json",
    }
    report(summary)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3, lines
    assert lines[0] == (
        "failed: x\\ndone 99, skipped 0 (already cached), failed 0\\n.mp4: "
        "VideoReadError: empty\\x1b[2J"
    )
    assert lines[1] == "skipped split line: line 3: 'Nonexist/x\\r.mp4' does not exist"
    assert lines[2].startswith("done 0, skipped 0 (already cached), failed 1 ")


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_shards_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write(tmp_path, range(3), shard_size=2)
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    for path in tmp_path.iterdir():
        if path.name.startswith(("features-", "index")):
            assert path.stat().st_mode & 0o777 == expected, (path.name, oct(expected))
