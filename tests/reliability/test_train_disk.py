"""Training with an unwritable model_dir, and with the disk filling up mid-run.

The tests run as root, where file permissions do not stop writes, so unwritable means
a path under a regular file or a read-only mount, and a full disk is a small tmpfs
mounted in a private mount namespace (`unshare -m`) and filled while training runs.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.reliability.train_helpers import recorded_checkpoint, resumed_step
from tests.training.helpers import TINY_FLAGS, cli_env, run_cli, write_features

pytestmark = pytest.mark.slow


def _skip_or_fail(message):
    """Fails under CI (which must run these tests), skips elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must run this test")
    pytest.skip(message)


def _in_private_mount(script, flags, timeout=300, **env):
    """Runs `sh -c script` under `unshare -m` with `flags` as "$@"; returns CompletedProcess."""
    if shutil.which("unshare") is None:
        _skip_or_fail("unshare not found: cannot mount a small file system")
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "train", *flags],
        env=cli_env(PYTHON=sys.executable, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode == 90:
        _skip_or_fail(f"could not mount a tmpfs: {result.stderr[-500:]}")
    return result


def test_model_dir_under_a_regular_file_is_refused_before_training(tmp_path):
    """A model_dir that cannot be created: one line naming it, no traceback."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the model_dir's parent should be")
    result = run_cli(
        f"--features_npz={write_features(tmp_path / 'features.npz')}",
        *TINY_FLAGS,
        "--epochs=1",
        f"--model_dir={blocker / 'run'}",
    )
    assert result.returncode != 0
    assert str(blocker / "run") in result.stderr
    assert "Not a directory" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert not (blocker.parent / "checkpoints").exists()
    print("unwritable:", result.stderr.strip().splitlines()[-1])


_READ_ONLY = """
mount -t tmpfs -o ro,size=1m tmpfs "$DISK" || exit 90
exec "$PYTHON" -m reslstm_tf.cli.train "$@" --model_dir="$DISK/run"
"""


def test_model_dir_on_a_read_only_file_system_is_refused_before_training(tmp_path):
    """A model_dir on a read-only mount: one line naming it and the cause, no traceback."""
    disk = tmp_path / "disk"
    disk.mkdir()
    flags = [f"--features_npz={write_features(tmp_path / 'f.npz')}", *TINY_FLAGS, "--epochs=1"]
    result = _in_private_mount(_READ_ONLY, flags, DISK=str(disk))
    assert result.returncode != 0
    assert f"{disk}/run" in result.stderr, result.stderr[-3000:]
    assert "Read-only file system" in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    print("read-only:", result.stderr.strip().splitlines()[-1])


_ALREADY_FULL = """
mount -t tmpfs -o size=1m tmpfs "$DISK" || exit 90
dd if=/dev/zero of="$DISK/filler" bs=1k 2>/dev/null
exec "$PYTHON" -m reslstm_tf.cli.train "$@" --model_dir="$DISK/run"
"""


def test_disk_already_full_gives_a_clear_error(tmp_path):
    """A model_dir on a full disk (creatable, no room for data): one line, no traceback."""
    disk = tmp_path / "disk"
    disk.mkdir()
    flags = [f"--features_npz={write_features(tmp_path / 'f.npz')}", *TINY_FLAGS, "--epochs=1"]
    result = _in_private_mount(_ALREADY_FULL, flags, DISK=str(disk))
    assert result.returncode != 0
    assert f"model_dir {disk}/run:" in result.stderr, result.stderr[-3000:]
    assert "disk is full (no space left on device)" in result.stderr, result.stderr[-3000:]
    assert "no checkpoint had been written yet" in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    print("already full:", result.stderr.strip().splitlines()[-1])


# Trains on an 8 MB tmpfs; once the first checkpoint is recorded, pauses the trainer and
# fills the disk up to 24 KB, less than half a checkpoint (about 58 KB), so the next
# checkpoint write fails partway. Then copies what is left to $COPY, outside the namespace.
_FILL_DISK = """
set -u
mount -t tmpfs -o size=8m tmpfs "$DISK" || exit 90
"$PYTHON" -m reslstm_tf.cli.train "$@" --model_dir="$DISK/run" 2> "$LOG" &
pid=$!
while [ ! -f "$DISK/run/checkpoints/checkpoint" ]; do
  kill -0 $pid 2>/dev/null || break
  sleep 0.02
done
kill -STOP $pid
free_kb=$(df -k --output=avail "$DISK" | tail -n 1)
dd if=/dev/zero of="$DISK/filler" bs=1k count=$((free_kb - 24)) 2>/dev/null
kill -CONT $pid
wait $pid
echo "exit=$?"
ls -la "$DISK/run/checkpoints" "$DISK/run/checkpoints"/*_temp 2>/dev/null
cp -a "$DISK/run" "$COPY"
"""


def test_disk_full_mid_run_gives_a_clear_error_and_keeps_the_checkpoints(tmp_path):
    """Disk full mid-checkpoint: a clear error, the last checkpoint intact and resumable."""
    disk, copy, log = tmp_path / "disk", tmp_path / "copy", tmp_path / "stderr.txt"
    disk.mkdir()
    flags = [
        f"--features_npz={write_features(tmp_path / 'features.npz')}",
        *TINY_FLAGS,
        "--epochs=60",
        "--batch_size=4",
        "--checkpoint_every_steps=3",
        "--nojit_compile",
    ]
    result = _in_private_mount(_FILL_DISK, flags, DISK=str(disk), COPY=str(copy), LOG=str(log))
    assert "exit=" in result.stdout, result.stderr[-3000:]
    print(result.stdout)
    stderr = log.read_text()
    print("disk full:", stderr.strip().splitlines()[-1])
    code = int(result.stdout.split("exit=")[1].split()[0])
    assert code != 0, "the run finished although the disk was full"
    assert "disk is full (no space left on device)" in stderr, stderr[-3000:]
    assert f"model_dir {disk}/run:" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    named = re.search(r"the last checkpoint, ckpt-(\d+), is intact", stderr)
    assert named, stderr[-3000:]
    last = int(named.group(1))
    # The failed write never got recorded: the state file still names the intact one.
    assert recorded_checkpoint(copy) == last
    assert (copy / "checkpoints" / f"ckpt-{last}.index").is_file()

    # What was checkpointed before the disk filled up restores and trains on elsewhere.
    resumed = run_cli(*flags, f"--model_dir={copy}", f"--max_steps={last + 3}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed_step(resumed.stderr) == last, resumed.stderr[-3000:]
    assert recorded_checkpoint(copy) == last + 3


# Kills a run right after its last checkpoint (the final files not written), fills the disk
# to $LEFT KB, then resumes it three times: the resumed run has nothing left to train and
# writes only history.json, train_config.json and the final files, which do not fit. With
# $UNCHECKED the free-space check is bypassed, so the write itself meets the full disk.
# Then frees the disk and resumes once more.
_FULL_AT_FINAL = """
set -u
mount -t tmpfs -o size=8m tmpfs "$DISK" || exit 90
RESLSTM_FAULT=checkpoint_saved:2 "$PYTHON" -m reslstm_tf.cli.train "$@" --model_dir="$DISK/run" \
  2> /dev/null
echo "killed=$?"
free_kb=$(df -k --output=avail "$DISK" | tail -n 1)
dd if=/dev/zero of="$DISK/filler" bs=1k count=$((free_kb - LEFT)) 2>/dev/null
for attempt in 1 2 3; do
  if [ -n "$UNCHECKED" ]; then
    "$PYTHON" -c "$UNCHECKED" "$@" --model_dir="$DISK/run" 2>> "$LOG"
  else
    "$PYTHON" -m reslstm_tf.cli.train "$@" --model_dir="$DISK/run" 2>> "$LOG"
  fi
  echo "full=$?"
done
ls -la "$DISK/run" "$DISK/run/checkpoints"
rm "$DISK/filler"
"$PYTHON" -m reslstm_tf.cli.train "$@" --model_dir="$DISK/run" 2>> "$LOG"
echo "freed=$?"
cp -a "$DISK/run" "$COPY"
"""
# The free-space check replaced by "plenty", so the write path itself is exercised.
_UNCHECKED = (
    "import sys; import reslstm_tf.runs as runs; runs.free_bytes = lambda folder: 1 << 40; "
    "from reslstm_tf.cli.train import run; sys.argv[0] = 'reslstm-train'; run()"
)


@pytest.mark.parametrize("checked", [True, False], ids=["free_space_check", "write_fails"])
def test_disk_full_at_the_final_weights_is_a_clean_error(tmp_path, checked):
    """No room for the final files: the documented one-line error (exit 1), never a crash."""
    disk, copy, log = tmp_path / "disk", tmp_path / "copy", tmp_path / "stderr.txt"
    disk.mkdir()
    flags = [
        f"--features_npz={write_features(tmp_path / 'features.npz')}",
        *TINY_FLAGS,
        "--epochs=2",
        "--batch_size=8",
        "--nojit_compile",
        "--keep_checkpoints",  # the checks below read the last checkpoint of the finished run
    ]
    env = dict(DISK=str(disk), COPY=str(copy), LOG=str(log), LEFT="24")
    env["UNCHECKED"] = "" if checked else _UNCHECKED
    result = _in_private_mount(_FULL_AT_FINAL, flags, **env)
    print(result.stdout)
    stderr = log.read_text()
    assert "killed=137" in result.stdout, result.stderr[-3000:]
    assert result.stdout.count("full=1") == 3, stderr[-3000:]  # never 139 (SIGSEGV)
    assert "Segmentation fault" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("reslstm-train: error:")]
    assert len(errors) == 3, stderr[-3000:]
    print("final weights, disk full:", errors[0])
    assert f"model_dir {disk}/run:" in errors[0]
    assert "disk is full (no space left on device)" in errors[0]
    assert "the last checkpoint, ckpt-12, is intact" in errors[0]
    # Nothing saved before is lost, and the same command finishes once there is room.
    assert "freed=0" in result.stdout, stderr[-3000:]
    assert recorded_checkpoint(copy) == 12
    assert (copy / "model.keras").is_file() and not (copy / "final.weights.h5").exists()
    assert not list(copy.glob(".tmp-*"))
