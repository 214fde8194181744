"""`reslstm-train`: bad flags fail clearly; a SIGKILLed run resumes exactly; two workers agree."""

import json
import signal
import subprocess
import time

import pytest

from tests.training.helpers import (
    TINY_FLAGS,
    cli_env,
    free_ports,
    max_weight_diff,
    run_cli,
    train_command,
    write_features,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def features_npz(tmp_path):
    """A .npz feature file (48 videos, 4 classes, T=6, d_f=16)."""
    return write_features(tmp_path / "train_features.npz")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--optimizer=lamb"], "--optimizer=lamb"),
        (["--strategy=tpu"], "--strategy=tpu"),
        (["--features_dir=no/such/features"], "features_dir 'no/such/features'"),
        (["--feature_dim=1024"], "dimension d_f=16 but the model expects 1024"),
        (["--preset=res7"], "preset must be one of"),
    ],
)
def test_train_refuses_bad_flags_before_training(tmp_path, features_npz, flags, message):
    base = [f"--model_dir={tmp_path / 'run'}", *TINY_FLAGS]
    if not any(f.startswith("--features_dir") for f in flags):
        base.append(f"--features_npz={features_npz}")
    result = run_cli(*base, *flags)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


# ------------------------------------------------------------------------- exact resume


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


# ----------------------------------------------------------- MultiWorkerMirroredStrategy


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
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
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
