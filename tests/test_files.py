"""Local file helpers: atomic writes keep the modes users expect; sha256 checks refuse tampering."""

import os
import stat

import pytest

from reslstm_tf.files import ChecksumError, atomic_path, atomic_write, sha256_of, verify_sha256


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_new_file_gets_the_umask_mode(tmp_path, umask_022):
    target = tmp_path / "index.json"
    with atomic_write(target, "w") as handle:
        handle.write("{}")
    assert _mode(target) == 0o644
    assert target.read_text() == "{}"


def test_replaced_file_keeps_its_mode(tmp_path, umask_022):
    target = tmp_path / "manifest.json"
    target.write_text("old")
    os.chmod(target, 0o640)
    with atomic_write(target, "w") as handle:
        handle.write("new")
    assert _mode(target) == 0o640 and target.read_text() == "new"


def test_other_umask_is_honoured(tmp_path):
    previous = os.umask(0o077)
    try:
        with atomic_write(tmp_path / "private.bin") as handle:
            handle.write(b"x")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "private.bin") == 0o600


def test_failed_block_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "history.json"
    target.write_text("kept")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as handle:
        handle.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]


def test_atomic_path_has_the_target_mode(tmp_path, umask_022):
    target = tmp_path / "final.weights.h5"
    assert _mode(atomic_path(target)) == 0o644


def test_sha256_matches_hashlib_reference_and_refuses_a_change(tmp_path):
    import hashlib

    path = tmp_path / "w.h5"
    path.write_bytes(b"weights" * 1000)
    expected = hashlib.sha256(b"weights" * 1000).hexdigest()
    assert sha256_of(path) == expected
    path.write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="w.h5"):
        verify_sha256(path, expected)


def _hold_lock_script(folder, ready, seconds):
    return (
        "import pathlib, time\n"
        "from reslstm_tf.files import folder_lock\n"
        f"with folder_lock({str(folder)!r}, 'feature cache'):\n"
        f"    pathlib.Path({str(ready)!r}).write_text('held')\n"
        f"    time.sleep({seconds})\n"
    )


def _start_holder(tmp_path, seconds):
    import subprocess
    import sys
    import time

    folder, ready = tmp_path / "cache", tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", _hold_lock_script(folder, ready, seconds)])
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert holder.poll() is None and time.monotonic() < deadline, "the holder did not start"
        time.sleep(0.05)
    return holder, folder


def test_a_second_process_is_refused_while_the_first_holds_the_lock(tmp_path):
    from reslstm_tf.files import FolderBusyError, folder_lock

    holder, folder = _start_holder(tmp_path, seconds=30)
    try:
        with pytest.raises(FolderBusyError, match=rf"feature cache '{folder}' is in use by pid"):
            with folder_lock(folder, "feature cache"):
                pass
        # The user's mistake (two jobs, one folder): the tools report it with exit status 2.
        assert issubclass(FolderBusyError, ValueError)
    finally:
        holder.kill()
        holder.wait()
    # The killed holder's lock died with it: no stale lock.
    with folder_lock(folder, "feature cache"):
        pass


def test_waiting_writer_gets_the_lock_when_the_holder_ends(tmp_path):
    import time

    from reslstm_tf.files import folder_lock

    holder, folder = _start_holder(tmp_path, seconds=1)
    start = time.monotonic()
    with folder_lock(folder, "model_dir", wait=True):
        waited = time.monotonic() - start
    # The holder keeps the lock for 1 s after it said so.
    assert waited > 0.8, f"the lock was granted after {waited:.2f} s, while the holder held it"
    holder.wait()


def test_a_holder_that_has_not_written_its_record_yet_is_still_named(tmp_path):
    import fcntl
    import threading

    from reslstm_tf.files import FolderBusyError, folder_lock

    folder = tmp_path / "cache"
    folder.mkdir()
    # Another holder took the lock a moment ago and writes its record 0.2 s later.
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    writer = threading.Timer(0.2, lambda: os.pwrite(fd, b"pid 4242 (reslstm-extract)\n", 0))
    writer.start()
    try:
        with pytest.raises(FolderBusyError, match=r"is in use by pid 4242 \(reslstm-extract\)"):
            with folder_lock(folder, "feature cache"):
                pass
    finally:
        writer.join()
        os.close(fd)
    with folder_lock(folder, "feature cache"):
        assert "pid" in (folder / ".lock").read_text()
    assert (folder / ".lock").read_text() == "", "a finished holder left its record"
