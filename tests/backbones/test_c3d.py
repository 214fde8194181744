"""C3D: layer shapes from the paper's table, feature outputs, weight files round trip."""

import keras
import numpy as np
import pytest

from reslstm_tf.backbones import c3d

# Tran et al. 2015, with channels-last "SAME" pools: (T, H, W, C) after each pool.
PAPER_SHAPES = {
    "pool1": (16, 56, 56, 64),
    "pool2": (8, 28, 28, 128),
    "pool3": (4, 14, 14, 256),
    "pool4": (2, 7, 7, 512),
    "pool5": (1, 4, 4, 512),
    "flatten": (8192,),
    "fc6": (4096,),
    "fc7": (4096,),
    "fc8": (101,),
}


def test_layer_shapes_and_outputs():
    model = c3d.C3D(output="logits", num_classes=101)
    assert model.input_shape == (None, 16, 112, 112, 3)
    for name, shape in PAPER_SHAPES.items():
        assert tuple(model.get_layer(name).output.shape[1:]) == shape, name
    # ~78 M parameters: 3x3x3 convs with bias, then fc6, fc7, fc8.
    widths = [3, 64, 128, 256, 256, 512, 512, 512, 512]
    convs = sum(27 * a * b + b for a, b in zip(widths[:-1], widths[1:]))
    dense = (8192 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 101 + 101)
    assert model.count_params() == convs + dense
    assert c3d.C3D().output_shape == (None, 4096)
    fc7 = c3d.C3D(output="fc7", in_channels=2)
    assert fc7.output_shape == (None, 4096)
    assert fc7.input_shape == (None, 16, 112, 112, 2)


def test_fc6_features_are_relu_of_flattened_pool5():
    model = c3d.C3D(output="fc7")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 112, 112, 3)).astype("float32")
    probe = keras.Model(
        model.input, [model.get_layer("pool5").output, model.get_layer("fc6").output]
    )
    pool5, fc6 = (np.asarray(t) for t in probe(x))
    kernel, bias = model.get_layer("fc6").get_weights()
    expected = np.maximum(pool5.reshape(2, -1) @ kernel + bias, 0.0)
    np.testing.assert_allclose(fc6, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_npz_round_trip_and_errors(tmp_path):
    source = c3d.C3D(output="logits", num_classes=5)
    path = tmp_path / "c3d.npz"
    c3d.save_c3d_npz(source, path)
    with np.load(path) as archive:
        assert set(archive.files) == {
            f"{n}/{p}" for n in c3d.C3D_LAYERS for p in ("kernel", "bias")
        }
        assert archive["conv1a/kernel"].shape == (3, 3, 3, 3, 64)
        assert archive["fc6/kernel"].shape == (8192, 4096)
    features = c3d.C3D(output="fc6", weights=path)  # fc7 and fc8 in the file are ignored
    for name in ("conv1a", "conv5b", "fc6"):
        for a, b in zip(
            features.get_layer(name).get_weights(), source.get_layer(name).get_weights()
        ):
            np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 16, 112, 112, 3)).astype("float32")
    trunk = keras.Model(source.input, source.get_layer("fc6").output)
    np.testing.assert_allclose(np.asarray(features(x)), np.asarray(trunk(x)), rtol=1e-5, atol=1e-5)

    partial = tmp_path / "partial.npz"
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files if not k.startswith("conv3b")}
    np.savez(partial, **arrays)
    with pytest.raises(ValueError, match="conv3b/kernel"):
        c3d.C3D(weights=partial)
    with pytest.raises(ValueError, match="shape"):
        c3d.C3D(in_channels=2, weights=path)
    with pytest.raises(ValueError, match=r"\.weights\.h5 or \.npz"):
        bad = tmp_path / "c3d.pt"
        bad.write_bytes(b"x")
        c3d.C3D(weights=bad)


@pytest.mark.slow
def test_keras_weights_round_trip(tmp_path):
    source = c3d.C3D(output="fc7", in_channels=2)
    path = tmp_path / "c3d_flow.weights.h5"
    source.save_weights(str(path))
    loaded = c3d.C3D(output="fc7", in_channels=2, weights=path)
    for a, b in zip(loaded.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"output": "fc8"}, "output"),
        ({"in_channels": 0}, "in_channels"),
        ({"dropout_rate": 1.0}, "dropout"),
    ],
)
def test_invalid_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        c3d.C3D(**kwargs)
