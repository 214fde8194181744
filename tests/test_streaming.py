"""Streaming: stepping through T segments equals the full-sequence model."""

import keras
import numpy as np
import pytest

from reslstm_tf.models import build_single_stream
from reslstm_tf.streaming import StreamingClassifier, run_stream
from tests import numpy_reference as ref


@pytest.mark.parametrize("preset, feature_dim", [("res3", 16), ("res2", 24), ("lstm2", 24)])
def test_steps_equal_the_full_sequence(preset, feature_dim):
    keras.utils.set_random_seed(0)
    model = build_single_stream(5, preset, feature_dim=feature_dim, units=16, num_steps=None)
    x = np.random.default_rng(0).random((3, 9, feature_dim)).astype("float32")
    streamed = keras.ops.convert_to_numpy(run_stream(model, x))
    for t in (1, 4, 9):
        full = ref.softmax(keras.ops.convert_to_numpy(model(x[:, :t])))
        assert np.max(np.abs(streamed[:, t - 1] - full)) < 1e-5


def test_traced_step_matches_eager_and_checks_shapes():
    model = build_single_stream(4, "res2", feature_dim=8, units=8, num_steps=None)
    stream = StreamingClassifier(model)
    serve = stream.tf_function()
    x = np.random.default_rng(1).random((2, 8)).astype("float32")
    states = stream.initial_states(2)
    eager, eager_states = stream.step(x, states)
    traced = serve(x, states)
    np.testing.assert_allclose(traced["probabilities"].numpy(), eager, atol=1e-6)
    np.testing.assert_allclose(traced["states"].numpy(), eager_states, atol=1e-6)
    assert traced["states"].shape == (2, 2, 2, 8)
    with pytest.raises(ValueError, match=r"features must have shape \(batch, 8\)"):
        stream.step(np.zeros((2, 5), "float32"), states)
