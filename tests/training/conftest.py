"""Fixtures of the training tests."""

import pytest

from tests.training.helpers import write_features


@pytest.fixture
def features_npz(tmp_path):
    """A .npz feature file (48 videos, 4 classes, T=6, d_f=16) written with numpy only."""
    return write_features(tmp_path / "train_features.npz")
