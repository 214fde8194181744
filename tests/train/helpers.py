"""Helpers of the training tests: tiny synthetic feature sets and CLI subprocesses."""

import os
import subprocess
import sys

import numpy as np

NUM_CLASSES = 4
STEPS = 6
DIM = 16

# Flags of a tiny model that trains in seconds.
TINY_FLAGS = [
    "--preset=res2",
    f"--feature_dim={DIM}",
    "--units=16",
    f"--num_steps={STEPS}",
    "--noprogress",
]


def separable_features(num_videos=48, num_classes=NUM_CLASSES, steps=STEPS, dim=DIM, seed=0):
    """Features whose class is a per-class direction plus noise; balanced int64 labels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_videos) % num_classes).astype("int64")
    centers = 2.0 * rng.normal(size=(num_classes, dim))
    noise = rng.normal(size=(num_videos, steps, dim))
    features = np.abs(centers[labels][:, None, :] + noise) + 1e-3
    return features.astype("float32"), labels


def cli_env(**extra):
    """Environment of a CLI subprocess: quiet TensorFlow, CPU only."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def train_command(*flags):
    """The `reslstm-train` command line as a `python -m` invocation."""
    return [sys.executable, "-m", "reslstm_tf.cli.train", *flags]


def run_cli(*flags, timeout=300, **env):
    """Runs `reslstm-train` to completion; returns the CompletedProcess."""
    return subprocess.run(
        train_command(*flags),
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_weights(path):
    """Returns {dataset name: array} of a Keras .weights.h5 file, read with h5py."""
    import h5py

    out = {}
    with h5py.File(path, "r") as handle:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]

        handle.visititems(visit)
    return out


def max_weight_diff(path_a, path_b):
    """Largest absolute difference between two weight files with the same variables."""
    a, b = read_weights(path_a), read_weights(path_b)
    assert a.keys() == b.keys()
    assert a, "no weights found"
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
