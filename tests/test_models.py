"""Model builders: every preset, one and two streams, training, precision, saving, bad input."""

import re

import keras
import numpy as np
import pytest

from reslstm_tf import presets
from reslstm_tf.layers import FUSION_LEVELS, FUSION_METHODS
from reslstm_tf.models import build_model, build_single_stream, build_two_stream
from reslstm_tf.testing import assert_mixed_precision_close, dtype_policy, run_model_saving_test
from tests import numpy_reference as ref

SMALL = {"units": 32, "num_steps": 6}


def _separable_batch(num_classes=4, batch=32, steps=6, dim=32, seed=0):
    """Features whose class is a per-class direction buried in noise, like real I3D features."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_classes, dim))
    labels = rng.integers(0, num_classes, size=batch)
    x = np.maximum(centers[labels][:, None, :] + rng.normal(size=(batch, steps, dim)), 0) + 0.01
    return x.astype("float32"), labels


@pytest.mark.parametrize("preset", sorted(presets.ARCHITECTURES))
def test_every_preset_builds_with_its_depth(preset):
    arch = presets.get_architecture(preset)
    model = build_single_stream(5, preset, feature_dim=32, **SMALL)
    layer = model.get_layer("residual_lstm")
    assert layer.num_layers == arch["num_layers"]
    assert layer.residual == arch["residual"]
    assert model.output_shape == (None, 5)
    assert model.input_shape == (None, 6, 32)


@pytest.mark.slow
def test_default_preset_is_real_sized():
    model = build_single_stream(51, "res3")
    assert model.input_shape == (None, 16, 1024)
    assert model.get_layer("residual_lstm").shortcut_projection is None
    # 3 LSTMs of 1024 units on 1024-d inputs plus the classifier.
    lstm = 4 * (1024 * 1024 + 1024 * 1024 + 1024)
    assert model.count_params() == 3 * lstm + 1024 * 51 + 51


@pytest.mark.slow
def test_fit_learns_a_separable_task_on_real_shaped_features():
    # 5 classes from chance (loss ln 5 = 1.6): measured, the loss falls from ~2.3 to ~1e-3
    # and held-out accuracy reaches 1.0 for seeds 0-2.
    keras.utils.set_random_seed(0)
    x, y = _separable_batch(num_classes=5, batch=64, steps=16, dim=1024)
    model = build_single_stream(5, "res2", units=128, num_steps=16)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x[:32], y[:32], epochs=8, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < 0.05 * history.history["loss"][0]
    held_out = model.evaluate(x[32:], y[32:], verbose=0, return_dict=True)
    assert held_out["accuracy"] >= 0.9, held_out


@pytest.mark.slow
@pytest.mark.parametrize("level", FUSION_LEVELS)
@pytest.mark.parametrize("fusion", FUSION_METHODS)
def test_two_stream_trains_and_saves(fusion, level):
    # Flow: the same videos' features, noised, so both streams carry the class. Measured
    # (seed 0, no dropout): the loss falls every epoch, to 0.02-0.77 of its start.
    keras.utils.set_random_seed(0)
    x, y = _separable_batch()
    flow = np.maximum(x + np.random.default_rng(1).normal(scale=0.5, size=x.shape), 0)
    inputs = {"rgb": x, "flow": flow.astype("float32")}
    model = build_two_stream(
        4,
        "res2",
        fusion=fusion,
        level=level,
        rgb_dim=32,
        flow_dim=32,
        learnable_weights=fusion == "weighted",
        dropout=0.0,
        **SMALL,
    )
    model.compile(
        keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    loss = model.fit(inputs, y, epochs=6, batch_size=16, verbose=0).history["loss"]
    assert np.all(np.diff(loss) < 0) and loss[-1] < 0.85 * loss[0], loss
    run_model_saving_test(model, inputs)


@pytest.mark.parametrize("fusion, power", [("sum", 1), ("product", 2)])
def test_late_fusion_of_identical_streams(fusion, power):
    """With both heads sharing weights, sum keeps p and product gives p**2 renormalised."""
    x, _ = _separable_batch()
    model = build_two_stream(
        4, "res2", fusion=fusion, level="late", rgb_dim=32, flow_dim=32, **SMALL
    )
    for part in ("residual_lstm", "logits"):
        model.get_layer(f"flow_{part}").set_weights(model.get_layer(f"rgb_{part}").get_weights())
    fused = ref.softmax(keras.ops.convert_to_numpy(model({"rgb": x, "flow": x})))
    rgb_head = keras.Model(model.get_layer("rgb").output, model.get_layer("rgb_logits").output)
    p = ref.softmax(keras.ops.convert_to_numpy(rgb_head(x)))
    expected = p**power / (p**power).sum(-1, keepdims=True)
    np.testing.assert_allclose(fused, expected, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_matches_float32_and_trains(policy):
    x, y = _separable_batch()
    inputs = {"rgb": x, "flow": x[::-1].copy()}
    kwargs = dict(fusion="weighted", level="mid", rgb_dim=32, flow_dim=32, **SMALL)
    reference = build_two_stream(4, "res2", **kwargs)
    with dtype_policy(policy):
        model = build_two_stream(4, "res2", **kwargs)
    assert model.get_layer("residual_lstm").compute_dtype == policy.split("_")[1]
    model.set_weights(reference.get_weights())
    out = model(inputs)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert_mixed_precision_close(keras.ops.convert_to_numpy(reference(inputs)), out, policy)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert np.isfinite(model.fit(inputs, y, epochs=1, verbose=0).history["loss"]).all()


@pytest.mark.parametrize("modality", ["rgb", "flow", "two_stream"])
def test_build_model_chooses_the_builder_of_a_modality(modality):
    model = build_model(3, modality, "res2", feature_dim=8, units=8, num_steps=4, name="m")
    assert model.name == "m"
    inputs = model.input if modality != "two_stream" else model.input["rgb"]
    assert tuple(inputs.shape) == (None, 4, 8)
    assert isinstance(model.input, dict) == (modality == "two_stream")
    with pytest.raises(ValueError, match="modality must be one of 'rgb', 'flow', 'two_stream'"):
        build_model(3, "depth")


def test_variable_length_model_masks_padding():
    model = build_single_stream(3, "res2", feature_dim=32, units=32, num_steps=None)
    x, _ = _separable_batch(batch=1, steps=4)
    padded = np.concatenate([x, np.zeros((1, 5, 32), "float32")], axis=1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(padded)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: build_single_stream(5, "res5"),
            "preset must be one of 'res2', 'res3', 'res4', 'lstm2', 'lstm3', 'lstm4'. "
            "Received: preset='res5'. Did you mean 'res4'?",
        ),
        (
            lambda: build_single_stream(5, num_layers=0),
            "num_layers must be a positive integer. Received: num_layers=0",
        ),
        (lambda: build_single_stream(0), "num_classes must be a positive integer"),
        (
            lambda: build_two_stream(5, fusion="avg"),
            "fusion must be one of 'sum', 'product', 'weighted', 'concat'. Received: fusion='avg'",
        ),
        (
            lambda: build_two_stream(5, level="early"),
            "level must be one of 'mid', 'late'. Received: level='early'",
        ),
        (
            lambda: build_two_stream(5, level="mid", rgb_dim=1024, flow_dim=512),
            "fusion='product' needs rgb and flow of the same shape",
        ),
    ],
)
def test_bad_arguments(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((2, 8, 32), "expected shape=(None, 6, 32), found shape=(2, 8, 32)"),
        ((2, 6, 16), "expected shape=(None, 6, 32), found shape=(2, 6, 16)"),
    ],
)
def test_wrong_T_or_feature_size_is_named(shape, expected):
    model = build_single_stream(5, "res2", feature_dim=32, **SMALL)
    with pytest.raises(ValueError, match=re.escape(expected)):
        model(np.ones(shape, "float32"))
