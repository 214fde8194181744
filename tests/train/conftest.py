"""Fixtures of the training tests."""

import numpy as np
import pytest

from tests.train.helpers import separable_features


@pytest.fixture
def features_npz(tmp_path):
    """A .npz feature file (48 videos, 4 classes, T=6, d_f=16) written with numpy only."""
    x, y = separable_features()
    path = tmp_path / "train_features.npz"
    np.savez(path, features=x, labels=y, class_names=np.array(["a", "b", "c", "d"]))
    return path
