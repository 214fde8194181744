"""One of two workers SIGKILLed mid-training: both restart from the last checkpoint, in sync."""

import json
import signal
import subprocess
import time

import pytest

from tests.reliability.train_helpers import (
    assert_same_history,
    read_history,
    recorded_checkpoint,
    resumed_step,
)
from tests.training.helpers import (
    TINY_FLAGS,
    cli_env,
    free_ports,
    max_weight_diff,
    train_command,
    write_features,
)

pytestmark = pytest.mark.slow


def _start_workers(flags, model_dir, fault=None):
    """Starts two local workers; worker 1 gets RESLSTM_FAULT=`fault` if given."""
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        extra = {"RESLSTM_FAULT": fault} if fault and index == 1 else {}
        workers.append(
            subprocess.Popen(
                train_command(
                    *flags,
                    f"--model_dir={model_dir}",
                    "--strategy=multi_worker",
                    "--save_worker_weights",
                ),
                env=cli_env(TF_CONFIG=tf_config, **extra),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return workers


def _finish(workers, timeout=300):
    """Waits for the workers (killing any left running); returns their (returncode, stderr)."""
    try:
        results = []
        for worker in workers:
            _, err = worker.communicate(timeout=timeout)
            results.append((worker.returncode, err))
        return results
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()


def test_kill_one_worker_then_both_resume_in_sync(tmp_path):
    """Worker 1 SIGKILLed after step 10; both restart at the step-8 checkpoint, end equal."""
    features = write_features(tmp_path / "features.npz")
    # 48 videos / global batch 8 = 6 steps per epoch, 18 steps; a checkpoint every 4
    # steps and at epoch ends: 4, 6, 8, 12, 16, 18. No dropout: see test_multi_worker.py.
    flags = [
        f"--features_npz={features}",
        *TINY_FLAGS,
        "--dropout=0",
        "--epochs=3",
        "--batch_size=8",
        "--checkpoint_every_steps=4",
        "--optimizer=sgd",
        "--learning_rate=0.05",
        "--seed=5",
        "--nojit_compile",
    ]
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    for code, err in _finish(_start_workers(flags, reference_dir)):
        assert code == 0, err[-3000:]

    # Worker 1 dies by SIGKILL right after step 10 (the last checkpoint is step 8); the
    # chief then waits in the next all-reduce for a peer that is gone: stop it too, as a
    # cluster manager would once it sees a worker die.
    victims = _start_workers(flags, killed_dir, fault="train_step:10")
    try:
        victims[1].wait(timeout=300)
        started = time.monotonic()
        try:
            victims[0].wait(timeout=15)
            chief = f"exited by itself with {victims[0].returncode}"
        except subprocess.TimeoutExpired:
            victims[0].kill()
            chief = "hung, killed"
        print(f"chief after the loss of worker 1: {chief} ({time.monotonic() - started:.1f} s)")
    finally:
        outputs = _finish(victims)
    assert victims[1].returncode == -signal.SIGKILL, outputs[1][1][-3000:]
    assert victims[0].returncode != 0, "the chief finished without its peer"
    assert recorded_checkpoint(killed_dir) == 8
    assert not (killed_dir / "model.keras").exists()

    resumed = _finish(_start_workers(flags, killed_dir))
    for code, err in resumed:
        assert code == 0, err[-3000:]
        assert resumed_step(err) == 8, err[-3000:]

    chief = killed_dir / "model.keras"
    other = killed_dir / "workers" / "worker_1" / "final.weights.h5"
    between = max_weight_diff(chief, other)
    versus_reference = max_weight_diff(chief, reference_dir / "model.keras")
    print(f"resumed workers: {between:.3g} apart, {versus_reference:.3g} from uninterrupted")
    assert between == 0.0
    assert versus_reference <= 1e-6
    assert_same_history(read_history(killed_dir), read_history(reference_dir))
