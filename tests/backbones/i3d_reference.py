"""An independent I3D reference built from raw `tf.nn` ops, for the layer-by-layer checks."""

import numpy as np
import tensorflow as tf

EPSILON = 1e-3


def unit(x, kernel, beta, mean, var, strides=(1, 1, 1)):
    """Conv3D (TF 'SAME', no bias) -> (x - mean) / sqrt(var + 1e-3) + beta -> ReLU."""
    y = tf.nn.conv3d(x, kernel, strides=[1, *strides, 1], padding="SAME")
    y = (y - mean) / tf.sqrt(var + EPSILON) + beta
    return tf.nn.relu(y)


def max_pool(x, window, strides):
    """tf.nn.max_pool3d with TF 'SAME' padding."""
    return tf.nn.max_pool3d(x, ksize=[1, *window, 1], strides=[1, *strides, 1], padding="SAME")


def unit_params(model, scope):
    """Returns (kernel, beta, mean, var) of unit `scope` ("." separated) as numpy arrays."""
    kernel = model.get_layer(f"{scope}.conv").get_weights()[0]
    beta, mean, var = model.get_layer(f"{scope}.bn").get_weights()
    return kernel, beta, mean, var


def reference_endpoints(model, frames):
    """Returns {endpoint: array} up to Mixed_3b computed with tf.nn ops and `model`'s weights."""
    x = tf.constant(frames, dtype=tf.float32)
    out = {}
    x = unit(x, *unit_params(model, "Conv3d_1a_7x7"), strides=(2, 2, 2))
    out["Conv3d_1a_7x7"] = x
    x = max_pool(x, (1, 3, 3), (1, 2, 2))
    out["MaxPool3d_2a_3x3"] = x
    x = unit(x, *unit_params(model, "Conv3d_2b_1x1"))
    out["Conv3d_2b_1x1"] = x
    x = unit(x, *unit_params(model, "Conv3d_2c_3x3"))
    out["Conv3d_2c_3x3"] = x
    x = max_pool(x, (1, 3, 3), (1, 2, 2))
    out["MaxPool3d_3a_3x3"] = x
    b0 = unit(x, *unit_params(model, "Mixed_3b.Branch_0.Conv3d_0a_1x1"))
    b1 = unit(x, *unit_params(model, "Mixed_3b.Branch_1.Conv3d_0a_1x1"))
    b1 = unit(b1, *unit_params(model, "Mixed_3b.Branch_1.Conv3d_0b_3x3"))
    b2 = unit(x, *unit_params(model, "Mixed_3b.Branch_2.Conv3d_0a_1x1"))
    b2 = unit(b2, *unit_params(model, "Mixed_3b.Branch_2.Conv3d_0b_3x3"))
    b3 = max_pool(x, (3, 3, 3), (1, 1, 1))
    b3 = unit(b3, *unit_params(model, "Mixed_3b.Branch_3.Conv3d_0b_1x1"))
    out["Mixed_3b"] = tf.concat([b0, b1, b2, b3], axis=-1)
    return {k: np.asarray(v) for k, v in out.items()}


def max_relative_diff(actual, expected):
    """Returns max |actual - expected| / max(|expected|, 1e-6)."""
    scale = max(float(np.abs(expected).max()), 1e-6)
    return float(np.abs(np.asarray(actual) - expected).max()) / scale
