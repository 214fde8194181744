"""Model builders: every preset, one and two streams, training, precision, saving, bad input."""

import re

import keras
import numpy as np
import pytest

from reslstm_tf import presets
from reslstm_tf.layers import FUSION_LEVELS, FUSION_METHODS
from reslstm_tf.models import build_single_stream, build_two_stream
from reslstm_tf.testing import dtype_policy, run_model_saving_test
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


def test_default_preset_is_real_sized():
    model = build_single_stream(51, "res3")
    assert model.input_shape == (None, 16, 1024)
    assert model.get_layer("residual_lstm").shortcut_projection is None
    # 3 LSTMs of 1024 units on 1024-d inputs plus the classifier.
    lstm = 4 * (1024 * 1024 + 1024 * 1024 + 1024)
    assert model.count_params() == 3 * lstm + 1024 * 51 + 51


def test_fit_lowers_the_loss_on_a_real_shaped_batch():
    x, y = _separable_batch(num_classes=5, batch=16, steps=16, dim=1024)
    model = build_single_stream(5, "res2", units=128, num_steps=16)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x, y, epochs=8, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]


@pytest.mark.parametrize("level", FUSION_LEVELS)
@pytest.mark.parametrize("fusion", FUSION_METHODS)
def test_two_stream_trains_and_saves(fusion, level):
    x, y = _separable_batch()
    inputs = {"rgb": x, "flow": x[::-1].copy()}
    model = build_two_stream(
        4,
        "res2",
        fusion=fusion,
        level=level,
        rgb_dim=32,
        flow_dim=32,
        learnable_weights=fusion == "weighted",
        **SMALL,
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(inputs, y, epochs=2, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
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
def test_mixed_precision_returns_float32(policy):
    x, y = _separable_batch()
    with dtype_policy(policy):
        model = build_two_stream(
            4, "res2", fusion="weighted", level="mid", rgb_dim=32, flow_dim=32, **SMALL
        )
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit({"rgb": x, "flow": x}, y, epochs=1, verbose=0)
        out = model({"rgb": x, "flow": x})
        assert model.get_layer("residual_lstm").compute_dtype == policy.split("_")[1]
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert np.isfinite(keras.ops.convert_to_numpy(out)).all()


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
            "num_layers must be an integer >= 1. Received: num_layers=0",
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
