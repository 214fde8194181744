"""Training killed by a real SIGKILL at five points resumes to the uninterrupted weights.

Each run is the real `reslstm-train` in a subprocess with `RESLSTM_FAULT=<point>:<n>`
(`reslstm_tf.faults`), so the process dies with no cleanup at exactly that point; the
same command without the fault then resumes. Dropout is on, so the dropout RNG state
has to resume as exactly as the weights and the optimizer.
"""

import json
import signal

import numpy as np
import pytest

from tests.train.helpers import TINY_FLAGS, max_weight_diff, run_cli, separable_features

pytestmark = pytest.mark.slow

EPOCHS = 4  # 48 videos / batch 4: 12 steps per epoch, 48 steps, a checkpoint every 5


def _flags(features_npz, model_dir):
    return [
        f"--features_npz={features_npz}",
        f"--model_dir={model_dir}",
        *TINY_FLAGS,
        "--dropout=0.3",
        f"--epochs={EPOCHS}",
        "--batch_size=4",
        "--checkpoint_every_steps=5",
        "--optimizer=adam",
        "--learning_rate=3e-3",
        "--seed=11",
    ]


@pytest.fixture(scope="module")
def features_npz(tmp_path_factory):
    """The tiny separable feature set of the training tests, as a .npz file."""
    x, y = separable_features()
    path = tmp_path_factory.mktemp("features") / "train_features.npz"
    np.savez(path, features=x, labels=y, class_names=np.array(["a", "b", "c", "d"]))
    return path


@pytest.fixture(scope="module")
def reference(features_npz, tmp_path_factory):
    """The uninterrupted run's model_dir."""
    model_dir = tmp_path_factory.mktemp("reference")
    result = run_cli(*_flags(features_npz, model_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir


@pytest.mark.parametrize(
    "fault",
    [
        "train_step:17",  # mid-epoch 2, two steps after the step-15 checkpoint
        "checkpoint_written:3",  # the step-15 checkpoint's files exist, unrecorded
        "checkpoint_saved:4",  # after the epoch-1 checkpoint, before history.json
        "epoch_end:3",  # epoch 3 done, before its checkpoint
        "final_weights_saved:1",  # final weights written, model.keras not yet
    ],
)
def test_killed_run_resumes_to_the_uninterrupted_weights(features_npz, reference, tmp_path, fault):
    killed = run_cli(*_flags(features_npz, tmp_path), RESLSTM_FAULT=fault)
    assert killed.returncode == -signal.SIGKILL, (
        f"{fault}: expected a SIGKILL, got exit {killed.returncode}\n{killed.stderr[-2000:]}"
    )
    assert not (tmp_path / "model.keras").exists()

    resumed = run_cli(*_flags(features_npz, tmp_path))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from checkpoint" in resumed.stderr

    diff = max_weight_diff(tmp_path / "final.weights.h5", reference / "final.weights.h5")
    print(f"{fault}: max |w_resumed - w_uninterrupted| = {diff:.3g}")
    assert diff <= 1e-6
    history = json.loads((tmp_path / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == list(range(1, EPOCHS + 1))
    assert (tmp_path / "model.keras").is_file()
