"""Helpers of the training reliability tests: feature files, checkpoint state, worker ports."""

import json
import re
import socket

import numpy as np

from tests.train.helpers import separable_features

CLASS_NAMES = ["a", "b", "c", "d"]


def write_features(path):
    """Writes the tiny separable feature set of the training tests to the .npz `path`."""
    x, y = separable_features()
    np.savez(path, features=x, labels=y, class_names=np.array(CLASS_NAMES))
    return path


def recorded_checkpoint(model_dir):
    """Returns the step of the checkpoint the manager's state file names, or None."""
    state = model_dir / "checkpoints" / "checkpoint"
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
    return json.loads((model_dir / "history.json").read_text())


def assert_same_history(history, reference):
    """Asserts two histories list the same epochs once each, with the same metrics."""
    assert [e["epoch"] for e in history] == [e["epoch"] for e in reference]
    for entry, expected in zip(history, reference):
        assert entry["steps"] == expected["steps"], (entry, expected)
        for key in ("loss", "accuracy", "learning_rate"):
            assert abs(entry[key] - expected[key]) <= 1e-6, (key, entry, expected)


def free_ports(count):
    """Returns `count` free local TCP ports."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
