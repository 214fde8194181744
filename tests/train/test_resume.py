"""Exact resume: a run killed with SIGKILL and restarted ends as an uninterrupted one."""

import signal
import subprocess
import time

import pytest

from tests.train.helpers import TINY_FLAGS, cli_env, max_weight_diff, run_cli, train_command

pytestmark = pytest.mark.slow


def _flags(features_npz, model_dir):
    # 48 videos / batch 4 = 12 steps per epoch, 15 epochs = 180 steps; dropout on, so the
    # restored RNG state matters as much as the weights and the optimizer slots.
    return [
        f"--features_npz={features_npz}",
        f"--model_dir={model_dir}",
        *TINY_FLAGS,
        "--dropout=0.3",
        "--epochs=15",
        "--batch_size=4",
        "--checkpoint_every_steps=5",
        "--optimizer=adamw",
        "--weight_decay=1e-3",
        "--schedule=cosine",
        "--learning_rate=3e-3",
        "--seed=7",
    ]


def test_sigkill_and_restart_ends_with_the_uninterrupted_weights(features_npz, tmp_path):
    killed_dir = tmp_path / "killed"
    reference_dir = tmp_path / "reference"
    reference = subprocess.Popen(
        train_command(*_flags(features_npz, reference_dir)),
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    victim = subprocess.Popen(
        train_command(*_flags(features_npz, killed_dir)),
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    index = killed_dir / "checkpoints" / "checkpoint"
    try:
        while not index.exists() and victim.poll() is None:
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed_dir / "final.weights.h5").exists()
    print("killed at:", index.read_text().splitlines()[0])

    resumed = run_cli(*_flags(features_npz, killed_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from checkpoint" in resumed.stderr
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    assert "resuming" not in err

    diff = max_weight_diff(killed_dir / "final.weights.h5", reference_dir / "final.weights.h5")
    print(f"max |w_resumed - w_uninterrupted| = {diff:.3g}")
    assert diff <= 1e-6
