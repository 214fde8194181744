"""Shared test helpers: config round trip, `.keras` save/load, one `fit` step, mixed precision."""

import os
import tempfile

import keras
import numpy as np

from reslstm_tf.precision import dtype_policy  # noqa: F401 (re-exported for tests)

# Measured with the same weights on outputs of magnitude 0.5-6 (the fusion layers, the
# Res-LSTM, a two-stream model's logits): the largest |mixed - float32| was 2.7e-3 under
# float16 and 2.3e-2 under bfloat16 (product fusion of bfloat16-rounded inputs ~3.4).
MIXED_PRECISION_ATOL = {"mixed_float16": 1e-2, "mixed_bfloat16": 5e-2}


def _as_inputs(input_data):
    if isinstance(input_data, (list, tuple)):
        return [keras.Input(shape=np.shape(x)[1:], dtype="float32") for x in input_data]
    return keras.Input(shape=np.shape(input_data)[1:], dtype="float32")


def _outputs(model, input_data):
    return keras.ops.convert_to_numpy(model(input_data, training=False))


def assert_config_round_trip(layer):
    """Asserts `from_config(get_config())` rebuilds a layer with exactly the same config."""
    config = layer.get_config()
    rebuilt = layer.__class__.from_config(config)
    assert rebuilt.get_config() == config, (rebuilt.get_config(), config)
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"].startswith("reslstm_tf>"), serialized["registered_name"]
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(layer)
    assert revived.get_config() == config


def run_model_saving_test(model, input_data, atol=1e-6):
    """Saves `model` to `.keras`, loads it back and asserts identical predictions."""
    expected = _outputs(model, input_data)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
    np.testing.assert_allclose(_outputs(restored, input_data), expected, atol=atol, rtol=0)
    return restored


def run_fit_step_test(model, input_data, steps=2):
    """Compiles `model` with an MSE to zeros, runs `fit` and asserts the weights moved."""
    target = np.zeros_like(_outputs(model, input_data))
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    history = model.fit(input_data, target, epochs=steps, batch_size=len(target), verbose=0)
    assert all(np.isfinite(history.history["loss"])), history.history
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert any(not np.allclose(b, a) for b, a in zip(before, after)), "fit moved no weight"


def assert_mixed_precision_close(expected, mixed_output, policy):
    """Asserts a mixed-precision output equals the float32 one within `MIXED_PRECISION_ATOL`."""
    result = keras.ops.convert_to_numpy(keras.ops.cast(mixed_output, "float32"))
    assert result.shape == np.shape(expected), (result.shape, np.shape(expected))
    assert np.all(np.isfinite(result)), f"non-finite output under {policy}"
    np.testing.assert_allclose(
        result, expected, atol=MIXED_PRECISION_ATOL[policy], rtol=0, err_msg=policy
    )


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output_shape=None,
    run_training=True,
    run_mixed_precision=True,
):
    """Runs the standard checks on a layer; each layer test in the suite is one call.

    Checks: the output shape, the config round trip and registered serialization,
    a `.keras` save and load with identical predictions, one `fit` step that
    moves the weights, and a forward pass under the `mixed_float16` and
    `mixed_bfloat16` policies, with the same weights, that matches the float32
    output within `MIXED_PRECISION_ATOL`.

    Args:
        layer_cls: the layer class.
        init_kwargs: dict, constructor arguments.
        input_data: a numpy array or a list of arrays (batch first).
        expected_output_shape: tuple or None.
        run_training: bool, run the `fit` step check.
        run_mixed_precision: bool, run the mixed-precision check.

    Returns:
        The layer's float32 output on `input_data`, as numpy.
    """
    layer = layer_cls(**init_kwargs)
    output = keras.ops.convert_to_numpy(layer(input_data))
    if expected_output_shape is not None:
        assert output.shape == tuple(expected_output_shape), (output.shape, expected_output_shape)
    assert_config_round_trip(layer)

    inputs = _as_inputs(input_data)
    model = keras.Model(inputs, layer_cls(**init_kwargs)(inputs))
    run_model_saving_test(model, input_data)
    if run_training and model.trainable_weights:
        run_fit_step_test(model, input_data)

    if run_mixed_precision:
        for policy in MIXED_PRECISION_ATOL:
            mixed = layer_cls(**init_kwargs, dtype=policy)
            mixed(input_data)  # Builds the weights, then takes the float32 layer's.
            mixed.set_weights(layer.get_weights())
            assert_mixed_precision_close(output, mixed(input_data), policy)
    return output
