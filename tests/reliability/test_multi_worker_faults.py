"""One of two workers SIGKILLed mid-training: both restart from the last checkpoint, in sync."""

import json
import re
import signal
import subprocess

import numpy as np
import pytest

from tests.train.helpers import TINY_FLAGS, cli_env, max_weight_diff, separable_features
from tests.train.helpers import train_command as command
from tests.train.test_multi_worker import _free_ports

pytestmark = pytest.mark.slow


def _start_workers(flags, model_dir, fault=None):
    """Starts two local workers; worker 1 gets RESLSTM_FAULT=`fault` if given."""
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        extra = {"RESLSTM_FAULT": fault} if fault and index == 1 else {}
        workers.append(
            subprocess.Popen(
                command(
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
    """Waits for the workers; returns their (returncode, stderr)."""
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


def test_kill_one_worker_then_both_resume_in_sync(tmp_path):
    x, y = separable_features()
    features = tmp_path / "features.npz"
    np.savez(features, features=x, labels=y, class_names=np.array(["a", "b", "c", "d"]))
    # 48 videos / global batch 8 = 6 steps per epoch, 18 steps; a checkpoint every 4.
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
    ]
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference = _start_workers(flags, reference_dir)
    reference_results = _finish(reference)
    for code, err in reference_results:
        assert code == 0, err[-3000:]

    # Worker 1 dies by SIGKILL right after step 10 (the last checkpoint is step 8); the
    # chief then waits in the next all-reduce for a peer that is gone: stop it too, as a
    # cluster manager would once it sees a worker die.
    victims = _start_workers(flags, killed_dir, fault="train_step:10")
    victims[1].wait(timeout=300)
    assert victims[1].returncode == -signal.SIGKILL, victims[1].stderr.read()[-3000:]
    try:
        victims[0].wait(timeout=20)
    except subprocess.TimeoutExpired:
        victims[0].kill()
    _finish(victims)
    assert not (killed_dir / "final.weights.h5").exists()

    resumed = _finish(_start_workers(flags, killed_dir))
    for code, err in resumed:
        assert code == 0, err[-3000:]
        match = re.search(r"resuming from checkpoint \S+ at step (\d+)", err)
        assert match, err[-3000:]
        assert int(match.group(1)) == 8

    chief = killed_dir / "final.weights.h5"
    other = killed_dir / "workers" / "worker_1" / "final.weights.h5"
    between = max_weight_diff(chief, other)
    versus_reference = max_weight_diff(chief, reference_dir / "final.weights.h5")
    print(f"resumed workers: {between:.3g} apart, {versus_reference:.3g} from uninterrupted")
    assert between == 0.0
    assert versus_reference <= 1e-6
