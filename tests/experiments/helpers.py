"""Helpers of the ablation tests: tiny separable feature caches and CLI subprocesses."""

import os
import subprocess
import sys

import numpy as np

from reslstm_tf.data.feature_cache import FeatureCacheWriter


def write_cache(folder, num_clips=24, segments=4, dim=8, seed=0, modality="rgb"):
    """A tiny separable cache: class 1 has a positive mean on the first feature."""
    rng = np.random.default_rng(seed)
    metadata = {"modality": modality, "classes": ["neg", "pos"], "num_segments": segments}
    with FeatureCacheWriter(folder, shard_size=10, metadata=metadata) as writer:
        for index in range(num_clips):
            label = index % 2
            features = rng.normal(0.0, 1.0, (segments, dim)).astype("float32")
            features[:, 0] += 3.0 * (2 * label - 1)
            writer.add(f"clip{index:03d}", label, features)
    return folder


def run_cli(*args):
    """Runs `reslstm-ablate` in a subprocess; returns the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "reslstm_tf.cli.ablate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
