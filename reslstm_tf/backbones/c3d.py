"""C3D (Tran et al., ICCV 2015) as a Keras 3 functional model, conv1a to fc8.

Input: 16 frames of 112x112 pixels, channels last, float32 (scaled as the weights you load
expect; trained from scratch here, [-1, 1] like I3D). Layers (3x3x3 convolutions with stride
1, "SAME" padding, bias and ReLU; max pools "SAME"):

=========  ==========================  ==================
layer      kernel / pool               output (T, H, W, C)
=========  ==========================  ==================
conv1a     (3, 3, 3, in, 64)           16, 112, 112, 64
pool1      (1, 2, 2) stride (1, 2, 2)  16, 56, 56, 64
conv2a     (3, 3, 3, 64, 128)          16, 56, 56, 128
pool2      (2, 2, 2) stride 2          8, 28, 28, 128
conv3a/b   (3, 3, 3, ., 256)           8, 28, 28, 256
pool3      (2, 2, 2) stride 2          4, 14, 14, 256
conv4a/b   (3, 3, 3, ., 512)           4, 14, 14, 512
pool4      (2, 2, 2) stride 2          2, 7, 7, 512
conv5a/b   (3, 3, 3, 512, 512)         2, 7, 7, 512
pool5      (2, 2, 2) stride 2, SAME    1, 4, 4, 512
flatten    (t, h, w, c) order          8192
fc6        (8192, 4096) + ReLU         4096
fc7        (4096, 4096) + ReLU         4096
fc8        (4096, num_classes)         num_classes (logits)
=========  ==========================  ==================

Dropout (`dropout_rate`, 0.5 in the paper) follows fc6 and fc7 during training only.
"""

import pathlib

import keras
import numpy as np

from reslstm_tf.checks import check_choice, check_positive_int

C3D_LAYERS = (
    "conv1a", "conv2a", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b",
    "fc6", "fc7", "fc8",
)  # fmt: skip
OUTPUTS = ("fc6", "fc7", "logits")
SEGMENT_LEN = 16
FRAME_SIZE = 112
FEATURE_DIM = 4096

_CONVS = (
    ("conv1a", 64, "pool1", (1, 2, 2)),
    ("conv2a", 128, "pool2", (2, 2, 2)),
    ("conv3a", 256, None, None),
    ("conv3b", 256, "pool3", (2, 2, 2)),
    ("conv4a", 512, None, None),
    ("conv4b", 512, "pool4", (2, 2, 2)),
    ("conv5a", 512, None, None),
    ("conv5b", 512, "pool5", (2, 2, 2)),
)


def C3D(  # noqa: N802 (named like the keras.applications builders)
    output="fc6",
    num_classes=101,
    in_channels=3,
    weights=None,
    dropout_rate=0.5,
    name="c3d",
):
    """Builds C3D from conv1a to `output` as a functional Keras model.

    Args:
        output: "fc6" (default) or "fc7" for the 4096-d segment features (after ReLU), or
            "logits" for the full network with fc8 (num_classes, no activation).
        num_classes: int, the width of fc8 (used only when `output="logits"`).
        in_channels: int, 3 for RGB, 2 for optical flow.
        weights: None (random initialisation, to train from scratch) or the path of a
            `.weights.h5` or `.npz` file, see `load_c3d_weights`.
        dropout_rate: float in [0, 1), dropout after fc6 and fc7 during training.
        name: the model's name.

    Returns:
        A `keras.Model` taking float32 (batch, 16, 112, 112, in_channels).

    Raises:
        ValueError: for an invalid argument.

    References:
        Tran, Bourdev, Fergus, Torresani & Paluri, "Learning Spatiotemporal Features with 3D
        Convolutional Networks", ICCV 2015.
    """
    check_choice("output", output, OUTPUTS)
    check_positive_int("num_classes", num_classes)
    check_positive_int("in_channels", in_channels)
    if not 0.0 <= float(dropout_rate) < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1). Received: dropout_rate={dropout_rate!r}")
    inputs = keras.Input(shape=(SEGMENT_LEN, FRAME_SIZE, FRAME_SIZE, in_channels), name="frames")
    x = inputs
    for conv, filters, pool, pool_size in _CONVS:
        x = keras.layers.Conv3D(filters, 3, padding="same", activation="relu", name=conv)(x)
        if pool is not None:
            x = keras.layers.MaxPooling3D(pool_size, strides=pool_size, padding="same", name=pool)(
                x
            )
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(4096, activation="relu", name="fc6")(x)
    if output != "fc6":
        x = keras.layers.Dropout(dropout_rate, name="dropout6")(x)
        x = keras.layers.Dense(4096, activation="relu", name="fc7")(x)
    if output == "logits":
        x = keras.layers.Dropout(dropout_rate, name="dropout7")(x)
        x = keras.layers.Dense(num_classes, name="fc8")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        load_c3d_weights(model, weights)
    return model


def load_c3d_weights(model, path):
    """Loads C3D weights from a `.weights.h5` or `.npz` file into `model`.

    Formats:

    * `.weights.h5`: written by `model.save_weights` of a C3D built with the same
      arguments (Keras format).
    * `.npz`: a numpy archive with two arrays per layer, `<layer>/kernel` and `<layer>/bias`,
      for every layer of `model` among `conv1a, conv2a, conv3a, conv3b, conv4a, conv4b,
      conv5a, conv5b, fc6, fc7, fc8` (extra layers in the file, e.g. `fc8` for a feature
      model, are ignored). Shapes: conv kernels `(3, 3, 3, c_in, c_out)` (time, height,
      width, in, out), dense kernels `(d_in, d_out)`, biases `(c_out,)`; float32. The fc6
      kernel's 8192 rows follow the channels-last flatten of pool5's (1, 4, 4, 512) output,
      i.e. row `((t * 4 + h) * 4 + w) * 512 + c`. Caffe / PyTorch C3D weights are
      channels-first (kernels `(out, in, t, h, w)`, fc6 rows in `(c, t, h, w)` order) and
      must be transposed and permuted accordingly before saving.

    Args:
        model: a `keras.Model` built by `C3D`.
        path: str or path-like ending in `.weights.h5` or `.npz`.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: for another suffix, a missing array or a shape mismatch.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"C3D weights file {path} does not exist")
    if path.name.endswith(".weights.h5"):
        model.load_weights(str(path))
        return
    if path.suffix != ".npz":
        raise ValueError(
            f"C3D weights must be a .weights.h5 or .npz file. Received: weights={str(path)!r}"
        )
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    for layer in model.layers:
        if layer.name not in C3D_LAYERS:
            continue
        values = []
        for part, variable in (("kernel", layer.kernel), ("bias", layer.bias)):
            key = f"{layer.name}/{part}"
            if key not in arrays:
                raise ValueError(
                    f"{path} has no array {key!r}; it has {sorted(arrays)}. Expected one "
                    f"kernel and one bias per layer of {[lay.name for lay in model.layers]}"
                )
            if tuple(arrays[key].shape) != tuple(variable.shape):
                raise ValueError(
                    f"{path}: array {key!r} has shape {tuple(arrays[key].shape)}; the model "
                    f"expects {tuple(variable.shape)}"
                )
            values.append(arrays[key].astype("float32"))
        layer.set_weights(values)


def save_c3d_npz(model, path):
    """Writes `model`'s C3D layers to `.npz` in the format `load_c3d_weights` reads.

    Args:
        model: a `keras.Model` built by `C3D`.
        path: str or path-like ending in `.npz`.
    """
    arrays = {}
    for layer in model.layers:
        if layer.name in C3D_LAYERS:
            arrays[f"{layer.name}/kernel"] = np.asarray(layer.kernel)
            arrays[f"{layer.name}/bias"] = np.asarray(layer.bias)
    np.savez(path, **arrays)
