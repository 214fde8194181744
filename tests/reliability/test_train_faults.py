"""Training killed by a real SIGKILL at five points resumes to the uninterrupted weights.

Each run is the real `reslstm-train` in a subprocess with `RESLSTM_FAULT=<point>:<n>`
(`reslstm_tf.faults`), so the process dies with no cleanup at exactly that point; the
same command without the fault then resumes. Dropout is on, so the dropout RNG state
has to resume as exactly as the weights and the optimizer, and the history (per-epoch
loss and accuracy) has to come out as the uninterrupted run's, each epoch once.
"""

import signal

import pytest

from tests.reliability.train_helpers import (
    assert_same_history,
    read_history,
    recorded_checkpoint,
    resumed_step,
)
from tests.training.helpers import TINY_FLAGS, max_weight_diff, run_cli, write_features

pytestmark = pytest.mark.slow

EPOCHS = 4
# 48 videos / batch 4: 12 steps per epoch, 48 steps. Checkpoints, in order, at steps
# 5, 10, 12 (epoch 1), 15, 20, 24 (epoch 2), 25, 30, 35, 36 (epoch 3), 40, 45, 48.


def _flags(features_npz, model_dir):
    # Plain graph mode keeps each process short (XLA compiles for seconds); the XLA
    # path resumes exactly too (tests/cli/test_train.py).
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
        "--nojit_compile",
    ]


@pytest.fixture(scope="module")
def features_npz(tmp_path_factory):
    """The tiny separable feature set of the training tests, as a .npz file."""
    return write_features(tmp_path_factory.mktemp("features") / "train_features.npz")


@pytest.fixture(scope="module")
def reference(features_npz, tmp_path_factory):
    """The uninterrupted run's model_dir."""
    model_dir = tmp_path_factory.mktemp("reference")
    result = run_cli(*_flags(features_npz, model_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert resumed_step(result.stderr) is None
    return model_dir


# (fault, checkpoint the state file names after the kill = the step the restart resumes at)
FAULTS = [
    # Mid-epoch 2, two steps after the step-15 checkpoint: the restart repeats 16 and 17
    # and must also carry on epoch 2's loss and accuracy sums from the checkpoint.
    ("train_step:17", 15),
    # ckpt-12 (end of epoch 1) on disk but unrecorded: the restart must ignore it.
    ("checkpoint_written:3", 10),
    # ckpt-12 recorded, history.json not yet written: epoch 1 must not be lost.
    ("checkpoint_saved:3", 12),
    # The last checkpoint recorded, history.json still without epoch 4.
    ("checkpoint_saved:13", 48),
    # Epoch 3 finished (step 36), before its checkpoint.
    ("epoch_end:3", 35),
    # The final model written to its temporary sibling, not yet renamed to model.keras.
    ("final_model_staged:1", 48),
]


@pytest.mark.parametrize("fault,resume_at", FAULTS, ids=[f for f, _ in FAULTS])
def test_killed_run_resumes_to_the_uninterrupted_weights(
    features_npz, reference, tmp_path, fault, resume_at
):
    """SIGKILL at `fault`, restart: same final weights and history as the reference."""
    killed = run_cli(*_flags(features_npz, tmp_path), RESLSTM_FAULT=fault)
    assert killed.returncode == -signal.SIGKILL, (
        f"{fault}: expected a SIGKILL, got exit {killed.returncode}\n{killed.stderr[-2000:]}"
    )
    assert recorded_checkpoint(tmp_path) == resume_at
    assert not (tmp_path / "model.keras").exists()
    if fault.startswith("checkpoint_written"):
        assert (tmp_path / "checkpoints" / "ckpt-12.index").is_file()
    if fault.startswith("final_model_staged"):
        assert list(tmp_path.glob(".tmp-*-model.keras")), "the staged model is not on disk"

    resumed = run_cli(*_flags(features_npz, tmp_path))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed_step(resumed.stderr) == resume_at, resumed.stderr[-3000:]

    diff = max_weight_diff(tmp_path / "model.keras", reference / "model.keras")
    print(f"{fault}: resumed at step {resume_at}, max |w_resumed - w_uninterrupted| = {diff:.3g}")
    assert diff <= 1e-6
    history = read_history(tmp_path)
    assert [entry["epoch"] for entry in history] == list(range(1, EPOCHS + 1))
    assert_same_history(history, read_history(reference))
    assert (tmp_path / "model.keras").is_file()
    assert not list(tmp_path.glob(".tmp-*")), "temporary files left behind"
