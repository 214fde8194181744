"""The documented `model.fit` example trains a builder model on the same tf.data input."""

import importlib.util

import numpy as np
import pytest

from tests.conftest import PROJECT_ROOT
from tests.training.helpers import DIM, NUM_CLASSES, STEPS, write_features


@pytest.fixture
def features_npz(tmp_path):
    """A .npz feature file (48 videos, 4 classes, T=6, d_f=16)."""
    return write_features(tmp_path / "train_features.npz")


def _load_example():
    path = PROJECT_ROOT / "examples" / "fit_example.py"
    spec = importlib.util.spec_from_file_location("fit_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_fit_example_learns_the_npz_features(features_npz):
    example = _load_example()
    model, history = example.fit_example(
        features_npz=features_npz,
        units=16,
        num_steps=STEPS,
        feature_dim=DIM,
        epochs=10,
        batch_size=8,
        learning_rate=1e-2,
        verbose=0,
    )
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    data = np.load(features_npz)
    predicted = np.argmax(model.predict(data["features"], verbose=0), axis=-1)
    assert model.output_shape == (None, NUM_CLASSES)
    assert np.mean(predicted == data["labels"]) >= 0.9


def test_fit_example_runs_on_synthetic_features():
    example = _load_example()
    _, history = example.fit_example(
        units=8, num_steps=4, feature_dim=8, epochs=1, batch_size=8, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])
