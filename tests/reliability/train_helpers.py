"""Helpers of the training reliability tests: checkpoint state, resume logs, histories."""

import re

from reslstm_tf.runs import RunDir


def recorded_checkpoint(model_dir):
    """Returns the step of the checkpoint the manager's state file names, or None."""
    state = RunDir(model_dir).checkpoint_dir / "checkpoint"
    if not state.is_file():
        return None
    match = re.search(r'^model_checkpoint_path: ".*ckpt-(\d+)"', state.read_text(), re.M)
    return int(match.group(1)) if match else None


def resumed_step(stderr):
    """Returns the step a run logged it resumed from, or None if it started afresh."""
    match = re.search(r"resuming from checkpoint \S+ at step (\d+)", stderr)
    return int(match.group(1)) if match else None


def read_history(model_dir):
    """Returns the parsed history.json of a run."""
    return RunDir(model_dir).history()


def assert_same_history(history, reference):
    """Asserts two histories list the same epochs once each, with the same metrics."""
    assert [e["epoch"] for e in history] == [e["epoch"] for e in reference]
    for entry, expected in zip(history, reference):
        assert entry["steps"] == expected["steps"], (entry, expected)
        for key in ("loss", "accuracy", "learning_rate"):
            assert abs(entry[key] - expected[key]) <= 1e-6, (key, entry, expected)
