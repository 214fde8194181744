"""ResidualLSTM against a numpy re-implementation, masking, serialization and bad arguments."""

import re

import keras
import numpy as np
import pytest

from reslstm_tf.layers import ResidualLSTM
from reslstm_tf.testing import run_layer_test
from tests import numpy_reference as ref


def _lstm_weights(layer):
    return [[np.array(w, np.float64) for w in lstm.get_weights()] for lstm in layer.lstm_layers]


@pytest.mark.parametrize(
    "residual, feature_dim, num_layers",
    [(True, 16, 3), (True, 24, 2), (False, 24, 4), (True, 16, 1)],
)
def test_matches_numpy_reference(residual, feature_dim, num_layers):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7, feature_dim)).astype("float32")
    layer = ResidualLSTM(16, num_layers=num_layers, residual=residual, return_sequences=True)
    out = keras.ops.convert_to_numpy(layer(x))
    projection = None
    if layer.shortcut_projection is not None:
        projection = layer.shortcut_projection.kernel.numpy().astype(np.float64)
    expected = ref.residual_lstm(x, _lstm_weights(layer), residual, projection)
    assert np.max(np.abs(out - expected)) < 1e-5
    last = keras.ops.convert_to_numpy(
        ResidualLSTM.from_config({**layer.get_config(), "return_sequences": False})(x)
    )
    assert last.shape == (3, 16)


@pytest.mark.parametrize("steps", [3, 70])  # unrolled, and the symbolic loop past 64 steps
def test_fused_path_equals_keras_lstm_layers(steps):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, steps, 8)).astype("float32")
    mask = np.arange(steps)[None, :] < np.array([[steps], [steps - 2]])
    layer = ResidualLSTM(8, num_layers=2, return_sequences=True)
    fused = keras.ops.convert_to_numpy(layer(x, mask=mask))
    h = x
    for lstm in layer.lstm_layers:  # Keras' own LSTM layers, same weights.
        h = keras.ops.convert_to_numpy(lstm(h, mask=mask)) + h
    valid = mask[..., None].repeat(8, -1)
    np.testing.assert_allclose(fused[valid], h[valid], atol=1e-5)


@pytest.mark.parametrize("steps", [3, 70])
def test_fused_dropout_equals_keras_lstm_dropout(steps):
    # Same seed state, same masks: the fused training path drops exactly what
    # keras.layers.LSTM drops (one input mask per sequence, shared by all steps).
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, steps, 8)).astype("float32")
    mask = np.arange(steps)[None, :] < np.array([[steps], [steps - 1], [2]])
    layer = ResidualLSTM(8, num_layers=2, dropout=0.5, return_sequences=True)
    layer.build(x.shape)
    seeds = [lstm.cell.seed_generator.state.numpy() for lstm in layer.lstm_layers]
    fused = keras.ops.convert_to_numpy(layer(x, mask=mask, training=True))
    for lstm, seed in zip(layer.lstm_layers, seeds):
        lstm.cell.seed_generator.state.assign(seed)
    h = x
    for lstm in layer.lstm_layers:
        h = keras.ops.convert_to_numpy(lstm(h, mask=mask, training=True)) + h
    valid = mask[..., None].repeat(8, -1)
    np.testing.assert_allclose(fused[valid], h[valid], atol=1e-5)
    # Dropout is really on: the inference output differs, and a second call redraws.
    inference = keras.ops.convert_to_numpy(layer(x, mask=mask, training=False))
    again = keras.ops.convert_to_numpy(layer(x, mask=mask, training=True))
    assert np.max(np.abs(fused - inference)) > 1e-2
    assert np.max(np.abs(fused - again)) > 1e-2


@pytest.mark.parametrize("masked", [False, True])
def test_hand_written_backward_equals_autodiff(masked):
    # training=True runs the recurrence with its own backward pass; training=False
    # (no dropout here, so the same function) is differentiated by TensorFlow.
    import tensorflow as tf

    rng = np.random.default_rng(6)
    x = tf.constant(rng.normal(size=(3, 6, 12)).astype("float32"))
    mask = tf.constant(np.arange(6)[None, :] < np.array([[6], [4], [1]])) if masked else None
    layer = ResidualLSTM(8, num_layers=3, return_sequences=True)
    layer.build(x.shape)
    weights = rng.normal(size=(3, 6, 8)).astype("float32")

    def gradients(training):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x, mask=mask, training=training)
            loss = tf.reduce_sum(out * weights)  # a different weight per output element
        return out, tape.gradient(loss, [x, *layer.trainable_variables])

    out_custom, grads_custom = gradients(True)
    out_auto, grads_auto = gradients(False)
    np.testing.assert_allclose(out_custom, out_auto, atol=1e-6)
    assert len(grads_custom) == 1 + 3 * 3 + 1  # x, 3 x (kernel, recurrent, bias), projection
    for custom, auto in zip(grads_custom, grads_auto):
        assert float(np.abs(auto).max()) > 0
        np.testing.assert_allclose(custom, auto, rtol=1e-4, atol=1e-5)


def test_last_step_output_is_top_layer_at_time_T():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    layer = ResidualLSTM(8, num_layers=2)
    out = keras.ops.convert_to_numpy(layer(x))
    expected = ref.residual_lstm(x, _lstm_weights(layer))[:, -1]
    assert np.max(np.abs(out - expected)) < 1e-5


def test_projection_only_when_widths_differ():
    same = ResidualLSTM(8, num_layers=2)
    same.build((None, 5, 8))
    assert same.shortcut_projection is None
    different = ResidualLSTM(8, num_layers=2)
    different.build((None, 5, 12))
    assert different.shortcut_projection.kernel.shape == (12, 8)
    plain = ResidualLSTM(8, num_layers=2, residual=False)
    plain.build((None, 5, 12))
    assert plain.shortcut_projection is None


def test_residual_and_plain_have_the_same_lstm_weights():
    residual = ResidualLSTM(8, num_layers=3)
    plain = ResidualLSTM(8, num_layers=3, residual=False)
    for layer in (residual, plain):
        layer.build((None, 4, 8))
    assert [w.shape for w in residual.weights] == [w.shape for w in plain.weights]


@pytest.mark.parametrize("residual", [True, False])
def test_padded_sequence_equals_unpadded(residual):
    rng = np.random.default_rng(2)
    layer = ResidualLSTM(8, num_layers=3, residual=residual)
    full = rng.normal(size=(1, 4, 8)).astype("float32")
    padded = np.concatenate([full, np.zeros((1, 3, 8), "float32")], axis=1)
    mask = np.array([[True] * 4 + [False] * 3])
    short = keras.ops.convert_to_numpy(layer(full))
    masked = keras.ops.convert_to_numpy(layer(padded, mask=mask))
    np.testing.assert_allclose(masked, short, atol=1e-6)
    # And through a Masking layer in a batch of videos of different lengths.
    inputs = keras.Input((None, 8))
    model = keras.Model(inputs, layer(keras.layers.Masking(0.0)(inputs)))
    other = rng.normal(size=(1, 7, 8)).astype("float32")
    batch = keras.ops.convert_to_numpy(model(np.concatenate([padded, other])))
    np.testing.assert_allclose(batch[0], short[0], atol=1e-6)
    np.testing.assert_allclose(batch[1], keras.ops.convert_to_numpy(layer(other))[0], atol=1e-6)


def test_standard_layer_checks():
    x = np.random.default_rng(3).normal(size=(4, 6, 12)).astype("float32")
    run_layer_test(
        ResidualLSTM,
        {"units": 8, "num_layers": 2, "dropout": 0.1},
        x,
        expected_output_shape=(4, 8),
    )
    run_layer_test(
        ResidualLSTM,
        {"units": 12, "num_layers": 2, "residual": False, "return_sequences": True},
        x,
        expected_output_shape=(4, 6, 12),
        run_mixed_precision=False,
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"units": 8, "num_layers": 0},
            "num_layers must be a positive integer. Received: num_layers=0",
        ),
        ({"units": 0}, "units must be a positive integer. Received: units=0"),
        ({"units": 8, "dropout": 1.5}, "dropout must be in [0, 1). Received: dropout=1.5"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ResidualLSTM(**kwargs)


def test_wrong_input_rank():
    with pytest.raises(ValueError, match=r"rank 3 \(batch, time, features\). Received"):
        ResidualLSTM(8)(np.zeros((2, 8), "float32"))
