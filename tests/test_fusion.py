"""Fusion layers against numpy: sum, product, weighted sum, concatenation; mid and late level."""

import re

import keras
import numpy as np
import pytest

from reslstm_tf.layers import LateFusion, StreamFusion
from reslstm_tf.testing import run_layer_test
from tests import numpy_reference as ref

RNG = np.random.default_rng(0)
RGB = RNG.normal(size=(3, 5, 6)).astype("float32")
FLOW = RNG.normal(size=(3, 5, 6)).astype("float32")

NUMPY_FUSION = {
    "sum": lambda rgb, flow: rgb + flow,
    "product": lambda rgb, flow: rgb * flow,
    "weighted": lambda rgb, flow: 1.5 * flow + 0.25 * rgb,
    "concat": lambda rgb, flow: np.concatenate([rgb, flow], axis=-1),
}


@pytest.mark.parametrize("method", sorted(NUMPY_FUSION))
def test_stream_fusion_matches_numpy(method):
    layer = StreamFusion(method, flow_weight=1.5, rgb_weight=0.25)
    out = keras.ops.convert_to_numpy(layer([RGB, FLOW]))
    np.testing.assert_allclose(out, NUMPY_FUSION[method](RGB, FLOW), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", sorted(NUMPY_FUSION))
def test_late_fusion_matches_numpy(method):
    rgb, flow = RGB[:, 0], FLOW[:, 0]
    layer = LateFusion(method, flow_weight=1.5, rgb_weight=0.25)
    out = keras.ops.convert_to_numpy(layer([rgb, flow]))
    p_rgb, p_flow = ref.softmax(rgb), ref.softmax(flow)
    if method == "concat":
        kernel, bias = (w.numpy() for w in layer.concat_classifier.weights)
        expected = np.concatenate([p_rgb, p_flow], axis=-1) @ kernel + bias
    else:
        expected = np.log(NUMPY_FUSION[method](p_rgb, p_flow))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_late_product_ranks_like_the_joint_distribution():
    rgb = np.log(np.array([[0.6, 0.3, 0.1]], "float32"))
    flow = np.log(np.array([[0.2, 0.7, 0.1]], "float32"))
    probs = ref.softmax(keras.ops.convert_to_numpy(LateFusion("product")([rgb, flow])))
    joint = np.array([0.12, 0.21, 0.01]) / 0.34
    np.testing.assert_allclose(probs[0], joint, atol=1e-5)


def test_late_fusion_keeps_a_gradient_when_both_streams_are_confidently_wrong():
    """An epsilon floor, log(p + eps), would make this loss flat; the log-space form does not."""
    import tensorflow as tf

    for method in ("product", "sum", "weighted"):
        logits = [tf.constant([[30.0, -30.0]]), tf.constant([[30.0, -30.0]])]
        with tf.GradientTape() as tape:
            tape.watch(logits)
            fused = LateFusion(method)(logits)
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
                tf.constant([1]), fused
            )
        grads = tape.gradient(loss, logits)
        assert float(loss) > 50  # Confidently wrong...
        assert min(float(tf.reduce_max(tf.abs(g))) for g in grads) > 0.1  # ...and still learning.


@pytest.mark.slow
def test_late_fusion_trains_where_the_epsilon_form_stalled():
    """Two heads that start confidently wrong must still reach the true class."""
    rgb_in, flow_in = keras.Input((2,)), keras.Input((2,))
    rgb = keras.layers.Dense(
        2, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant([20.0, -20.0])
    )(rgb_in)
    flow = keras.layers.Dense(
        2, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant([20.0, -20.0])
    )(flow_in)
    model = keras.Model([rgb_in, flow_in], LateFusion("product")([rgb, flow]))
    model.compile(
        keras.optimizers.Adam(0.5), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x = np.ones((8, 2), "float32")
    history = model.fit([x, x], np.ones(8), epochs=30, verbose=0)
    assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]


@pytest.mark.slow
def test_learnable_weights_are_trained():
    layer = StreamFusion("weighted", flow_weight=0.5, rgb_weight=0.5, learnable=True)
    rgb_in, flow_in = keras.Input((6,)), keras.Input((6,))
    model = keras.Model([rgb_in, flow_in], layer([rgb_in, flow_in]))
    model.compile(keras.optimizers.SGD(0.05), "mse")
    x_rgb, x_flow = RGB[:, 0], FLOW[:, 0]
    model.fit([x_rgb, x_flow], 2.0 * x_flow + 0.1 * x_rgb, epochs=300, verbose=0)
    assert abs(float(layer.flow_weight_var.numpy()) - 2.0) < 0.05
    assert abs(float(layer.rgb_weight_var.numpy()) - 0.1) < 0.05


def test_fixed_weights_are_not_trainable():
    layer = StreamFusion("weighted")
    layer([RGB, FLOW])
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 2


@pytest.mark.parametrize("method", sorted(NUMPY_FUSION))
def test_standard_layer_checks(method):
    run_layer_test(
        StreamFusion,
        {"method": method, "learnable": method == "weighted"},
        [RGB, FLOW],
        expected_output_shape=(3, 5, 12 if method == "concat" else 6),
        run_training=method == "weighted",
    )
    run_layer_test(
        LateFusion,
        {"method": method},
        [RGB[:, 0], FLOW[:, 0]],
        expected_output_shape=(3, 6),
        run_training=method == "concat",
    )


def test_bad_arguments():
    message = "fusion must be one of 'sum', 'product', 'weighted', 'concat'. Received: fusion='avg'"
    with pytest.raises(ValueError, match=re.escape(message)):
        StreamFusion("avg")
    with pytest.raises(ValueError, match="learnable=True needs method='weighted'"):
        StreamFusion("sum", learnable=True)
    with pytest.raises(ValueError, match=r"same shape. Received: rgb shape=\(3, 5, 6\)"):
        StreamFusion("sum")([RGB, FLOW[..., :4]])
    with pytest.raises(ValueError, match="late weighted fusion needs positive weights"):
        LateFusion("weighted", flow_weight=0.0)
