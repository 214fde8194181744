"""Training with an unwritable model_dir, and with the disk filling up mid-run."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.train.helpers import TINY_FLAGS, cli_env, run_cli, separable_features

pytestmark = pytest.mark.slow


def _features(tmp_path):
    x, y = separable_features()
    path = tmp_path / "features.npz"
    np.savez(path, features=x, labels=y, class_names=np.array(["a", "b", "c", "d"]))
    return path


def test_model_dir_under_a_regular_file_is_refused_before_training(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the model_dir's parent should be")
    result = run_cli(
        f"--features_npz={_features(tmp_path)}",
        *TINY_FLAGS,
        "--epochs=1",
        f"--model_dir={blocker / 'run'}",
    )
    assert result.returncode != 0
    assert str(blocker / "run") in result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    print("unwritable:", result.stderr.strip().splitlines()[-1])


_FILL_DISK = """
set -u
mount -t tmpfs -o size=8m tmpfs "$DISK" || exit 90
"$PYTHON" -m reslstm_tf.cli.train "$@" --model_dir="$DISK/run" 2> "$LOG" &
pid=$!
while [ ! -f "$DISK/run/checkpoints/checkpoint" ]; do
  kill -0 $pid 2>/dev/null || break
  sleep 0.05
done
dd if=/dev/zero of="$DISK/filler" bs=64k 2>/dev/null
wait $pid
echo "exit=$?"
cp -a "$DISK/run" "$COPY"
"""


def test_disk_full_mid_run_gives_a_clear_error_and_keeps_the_checkpoints(tmp_path):
    if shutil.which("unshare") is None:
        if os.environ.get("CI"):
            pytest.fail("unshare is needed to mount a small file system; CI must run this test")
        pytest.skip("unshare not found: cannot mount a small file system")
    disk, copy, log = tmp_path / "disk", tmp_path / "copy", tmp_path / "stderr.txt"
    disk.mkdir()
    flags = [
        f"--features_npz={_features(tmp_path)}",
        *TINY_FLAGS,
        "--epochs=60",
        "--batch_size=4",
        "--checkpoint_every_steps=3",
    ]
    env = cli_env(DISK=str(disk), COPY=str(copy), LOG=str(log), PYTHON=sys.executable)
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", _FILL_DISK, "fill", *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if "exit=" not in result.stdout:
        message = f"could not mount a tmpfs ({result.returncode}): {result.stderr[-500:]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    stderr = log.read_text()
    print("disk full:", stderr.strip().splitlines()[-1])
    code = int(result.stdout.split("exit=")[1].split()[0])
    assert code != 0, "the run finished although the disk was full"
    assert "No space left" in stderr or "disk is full" in stderr, stderr[-3000:]
    assert f"{disk}/run" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]

    # What was checkpointed before the disk filled up restores and resumes elsewhere.
    resumed = run_cli(*flags, f"--model_dir={copy}")
    assert "resuming from checkpoint" in resumed.stderr, resumed.stderr[-3000:]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
