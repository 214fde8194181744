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
    tool_lines,
    train_command,
    user_env,
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
        (["--epochs=0"], "flag --epochs=0: 0 is not a valid value: epochs must be"),
        (["--momentum=-1"], "Received: momentum=-1.0"),
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
    assert result.returncode == 2, result.stderr[-3000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_help_lists_the_flags_and_exits_0():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr[-3000:]
    for flag in (
        "--features_npz",
        "--model_dir",
        "--[no]restart",
        "--max_checkpoints",
        "--tf_logs",
    ):
        assert flag in result.stdout


def test_a_truncated_npz_is_one_line_and_exit_2(tmp_path, features_npz):
    data = features_npz.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    result = subprocess.run(
        train_command(f"--features_npz={truncated}", f"--model_dir={tmp_path / 'run'}"),
        env=user_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    lines = tool_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("reslstm-train: error: features file")
    assert str(truncated) in lines[0] and "truncated" in lines[0]


def test_starts_quiet_resume_refuses_changed_flags_and_restart_starts_over(tmp_path, features_npz):
    run_dir = tmp_path / "run"
    # One step an epoch (48 videos), so the first run finishes within --max_steps.
    flags = [f"--features_npz={features_npz}", f"--model_dir={run_dir}", *TINY_FLAGS]
    flags.append("--batch_size=32")
    env = user_env()
    first = subprocess.run(
        train_command(*flags, "--epochs=2", "--max_steps=3", "--jit_compile"),
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    for noise in ("XLA", "Ignoring Assert", "oneDNN", "cuda"):
        assert not [line for line in tool_lines(first.stderr) if noise in line], first.stderr
    assert "MiB)" in first.stdout  # the run folder's size
    assert f"next: reslstm-eval --model_dir={run_dir} " in first.stdout, first.stdout
    changed = run_cli(*flags, "--epochs=2", "--learning_rate=0.01", "--dropout=0.2")
    assert changed.returncode == 2, changed.stderr[-3000:]
    assert "learning_rate: 0.0001 -> 0.01" in changed.stderr
    assert "model.dropout: None -> 0.2" in changed.stderr and "Traceback" not in changed.stderr
    restarted = run_cli(*flags, "--epochs=2", "--learning_rate=0.01", "--restart")
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    # The first run finished (2 steps): its checkpoints went with it, its final files stay.
    assert "restart: deleted train_config.json, train, history.json" in restarted.stderr
    assert "model.keras" in restarted.stderr
    assert "resuming" not in restarted.stderr
    assert f"next: reslstm-eval --model_dir={run_dir} " in restarted.stdout, restarted.stdout
    assert json.loads((run_dir / "train_config.json").read_text())["learning_rate"] == 0.01


def test_two_trainings_in_one_model_dir_the_second_is_refused(tmp_path, features_npz):
    run_dir = tmp_path / "run"
    common = [f"--features_npz={features_npz}", f"--model_dir={run_dir}", *TINY_FLAGS]
    commands = [
        train_command(*common, "--epochs=40", "--batch_size=4", "--seed=1", "--nojit_compile"),
        train_command(*common, "--epochs=40", "--batch_size=4", "--seed=2", "--nojit_compile"),
    ]
    runs = [
        subprocess.Popen(c, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for c in commands
    ]  # fmt: skip
    outputs = [run.communicate(timeout=600) for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes == [0, 2], [err[-2000:] for _, err in outputs]
    refused = next(err for run, (_, err) in zip(runs, outputs) if run.returncode == 2)
    assert f"model_dir '{run_dir}' is in use by pid" in refused, refused[-2000:]
    winner = next(i for i, run in enumerate(runs) if run.returncode == 0)
    assert json.loads((run_dir / "train_config.json").read_text())["seed"] == winner + 1


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
    assert not (killed_dir / "model.keras").exists()
    print("killed at:", index.read_text().splitlines()[0])

    resumed = run_cli(*_flags(features_npz, killed_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from checkpoint" in resumed.stderr
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    assert "resuming" not in err

    diff = max_weight_diff(killed_dir / "model.keras", reference_dir / "model.keras")
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

    chief = multi_dir / "model.keras"
    other = multi_dir / "workers" / "worker_1" / "final.weights.h5"
    between_workers = max_weight_diff(chief, other)
    versus_single = max_weight_diff(chief, tmp_path / "single" / "model.keras")
    print(f"worker0 vs worker1: {between_workers:.3g}; two workers vs one: {versus_single:.3g}")
    assert between_workers == 0.0
    assert versus_single < 1e-5
    # Only the chief writes summaries and checkpoints into model_dir.
    assert list((multi_dir / "train").iterdir())
    assert not (multi_dir / ".worker_tmp" / "worker_1").exists()
