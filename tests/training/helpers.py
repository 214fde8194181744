"""Shared fixtures of the training, evaluation and feature-set tests.

Tiny synthetic feature sets, the flags and model of a run that trains in seconds, feature
caches, `reslstm-train` subprocesses, weight files and free ports.
"""

import os
import re
import socket
import subprocess
import sys

import numpy as np

NUM_CLASSES = 4
STEPS = 6
DIM = 16
CLASS_NAMES = ["a", "b", "c", "d"]

# A tiny model that trains in seconds: as `run_training` keyword arguments, and as flags.
TINY_MODEL = dict(preset="res2", feature_dim=DIM, units=16, num_steps=STEPS)
TINY_FLAGS = [
    "--preset=res2",
    f"--feature_dim={DIM}",
    "--units=16",
    f"--num_steps={STEPS}",
    "--noprogress",
]
# One short run of the tiny model: `run_training(model_dir=..., features_npz=..., **TINY_RUN)`.
TINY_RUN = dict(TINY_MODEL, epochs=1, batch_size=8, progress=False)


def separable_features(num_videos=48, num_classes=NUM_CLASSES, steps=STEPS, dim=DIM, seed=0):
    """Features whose class is a per-class direction plus noise; balanced int64 labels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_videos) % num_classes).astype("int64")
    centers = 2.0 * rng.normal(size=(num_classes, dim))
    noise = rng.normal(size=(num_videos, steps, dim))
    features = np.abs(centers[labels][:, None, :] + noise) + 1e-3
    return features.astype("float32"), labels


def write_features(path, num_videos=48):
    """Writes the tiny separable feature set to the .npz `path` (numpy only); returns it."""
    x, y = separable_features(num_videos=num_videos)
    np.savez(path, features=x, labels=y, class_names=np.array(CLASS_NAMES))
    return path


def write_cache(folder, ids, x, y, modality, shard_size=7, **metadata):
    """Writes a feature cache of `modality` (class names `CLASS_NAMES`) into `folder`.

    Keyword arguments are further index metadata (e.g. `classes`, `segment_len`).
    """
    from reslstm_tf.data.feature_cache import FeatureCacheWriter

    metadata = {"modality": modality, "classes": CLASS_NAMES, **metadata}
    with FeatureCacheWriter(folder, shard_size=shard_size, metadata=metadata) as writer:
        for video_id, features, label in zip(ids, x, y):
            writer.add(video_id, int(label), features)


def write_cache_root(root, num_videos=24):
    """Writes train/{rgb,flow} and test/rgb caches (flow in another video order).

    Returns:
        `(ids, rgb, flow, labels)` of the train split.
    """
    x, y = separable_features(num_videos=num_videos)
    ids = [f"video_{i:03d}" for i in range(num_videos)]
    write_cache(root / "train" / "rgb", ids, x, y, "rgb")
    order = np.random.default_rng(0).permutation(num_videos)
    flow = x[:, ::-1] * 0.5
    write_cache(root / "train" / "flow", [ids[i] for i in order], flow[order], y[order], "flow")
    write_cache(root / "test" / "rgb", ids[:8], x[:8], y[:8], "rgb")
    return ids, x, flow, y


def cli_env(**extra):
    """Environment of a CLI subprocess: quiet TensorFlow, CPU only."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def user_env(**extra):
    """A CLI subprocess's environment as a user's shell gives it: no TF_CPP_MIN_LOG_LEVEL."""
    env = cli_env(**extra)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


_STARTUP = re.compile(
    r"^([IWE]\d{4} \S+ +\d+ \S+:\d+\]|WARNING: All log messages before absl::InitializeLog"
    r"|To enable the following instructions)"
)


def tool_lines(stderr):
    """The lines of a CLI's stderr without TensorFlow's C++ start-up lines.

    TensorFlow 2.21 prints those (oneDNN, CUDA probing, CPU features) while it is being
    imported, before any log level applies; only the tool's own lines are checked.
    """
    return [line for line in stderr.strip().splitlines() if not _STARTUP.match(line)]


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
    """Returns {dataset name: array} of a Keras .weights.h5 file (or a .keras archive's)."""
    import io
    import zipfile

    import h5py

    out = {}
    source = path
    if str(path).endswith(".keras"):
        with zipfile.ZipFile(path) as archive:
            source = io.BytesIO(archive.read("model.weights.h5"))
    with h5py.File(source, "r") as handle:

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
