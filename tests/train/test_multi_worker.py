"""Two local worker processes under MultiWorkerMirroredStrategy train like one worker."""

import json
import socket
import subprocess

import pytest

from tests.train.helpers import TINY_FLAGS, cli_env, max_weight_diff, run_cli, train_command

pytestmark = pytest.mark.slow


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_two_workers_match_each_other_and_one_worker(features_npz, tmp_path):
    # No dropout: each worker draws dropout masks for its half of the global batch,
    # which cannot equal the masks one worker draws for the whole batch.
    flags = [
        f"--features_npz={features_npz}",
        *TINY_FLAGS,
        "--dropout=0",
        "--epochs=3",
        "--batch_size=8",
        "--checkpoint_every_steps=4",
        "--optimizer=sgd",
        "--learning_rate=0.05",
        "--seed=3",
    ]
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    multi_dir = tmp_path / "multi"
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(
            subprocess.Popen(
                train_command(
                    *flags,
                    f"--model_dir={multi_dir}",
                    "--strategy=multi_worker",
                    "--save_worker_weights",
                ),
                env=cli_env(TF_CONFIG=tf_config),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        single = run_cli(*flags, f"--model_dir={tmp_path / 'single'}")
        outputs = [worker.communicate(timeout=300) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    assert single.returncode == 0, single.stderr[-3000:]

    chief = multi_dir / "final.weights.h5"
    other = multi_dir / "workers" / "worker_1" / "final.weights.h5"
    between_workers = max_weight_diff(chief, other)
    versus_single = max_weight_diff(chief, tmp_path / "single" / "final.weights.h5")
    print(f"worker0 vs worker1: {between_workers:.3g}; two workers vs one: {versus_single:.3g}")
    assert between_workers == 0.0
    assert versus_single < 1e-5
    # Only the chief writes summaries and checkpoints into model_dir.
    assert list((multi_dir / "train").iterdir())
    assert not (multi_dir / ".worker_tmp" / "worker_1").exists()
