"""Inception-v1 I3D (Carreira & Zisserman, CVPR 2017) as a Keras 3 functional model.

The architecture follows DeepMind's `kinetics-i3d` release layer by layer: TensorFlow "SAME"
padding for every convolution and max pool, batch normalisation with epsilon 1e-3, a learnt
offset and no learnt scale, channels last, input frames scaled to [-1, 1].

Layer names mirror the checkpoint scopes with "." in place of "/" (Keras forbids "/" in
layer names). A unit `<scope>` (a 3D convolution without bias, batch norm, ReLU) is three
layers: `<scope>.conv`, `<scope>.bn` and `<scope>`, the last being the unit's output. For
example `Mixed_4b.Branch_1.Conv3d_0b_3x3.conv` holds the kernel of the checkpoint's
`Mixed_4b/Branch_1/Conv3d_0b_3x3`. The layer whose output is an endpoint is named after it
(`Conv3d_1a_7x7`, `MaxPool3d_2a_3x3`, `Mixed_3b`, ..., `Logits`, `Predictions`), so
`model.get_layer(endpoint).output` is that endpoint. These names are a public contract: the
weight conversion in `reslstm_tf.backbones.convert` depends on them.

This file is the architecture only and never imports the converter: the converter, one step
higher, imports it and installs its weights loader with `set_weights_loader` when it is
imported (the `reslstm_tf.backbones` package imports it first thing), so `I3D(weights=...)`
loads weights without a circle between the two modules.
"""

import os

import keras

from reslstm_tf.checks import check_choice, check_positive_int

VALID_ENDPOINTS = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
    "Logits",
    "Predictions",
)

FEATURE_DIM = 1024
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.999
WEIGHTS_CHOICES = ("kinetics400", None)

# Output channels of the inception blocks: (branch 0 1x1, branch 1 1x1, branch 1 3x3,
# branch 2 1x1, branch 2 3x3, branch 3 1x1 after the 3x3x3 max pool).
INCEPTION_CHANNELS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

# The max pools between the stages: name -> (window, strides).
MAX_POOLS = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}

FIRST_CONV = "Conv3d_1a_7x7.conv"
LOGITS_CONV = "Logits.Conv3d_0c_1x1.conv"

# loader(model, weights): loads "kinetics400" or a .weights.h5 path into a built I3D.
_weights_loader = None


def set_weights_loader(loader):
    """Installs the function that `I3D(weights=...)` calls to load weights.

    Args:
        loader: a callable `loader(model, weights)`; `reslstm_tf.backbones.convert`
            installs `load_i3d_weights`.
    """
    global _weights_loader
    _weights_loader = loader


def _load_weights(model, weights):
    """Loads `weights` into `model` with the installed loader."""
    if _weights_loader is None:
        raise RuntimeError(
            "no I3D weights loader is installed: import reslstm_tf.backbones (which installs "
            f"reslstm_tf.backbones.convert.load_i3d_weights). Received: weights={weights!r}"
        )
    _weights_loader(model, weights)


def unit3d(x, filters, kernel_size, scope, strides=(1, 1, 1)):
    """Applies DeepMind's `Unit3D`: Conv3D (no bias, SAME) -> BatchNorm -> ReLU.

    Args:
        x: a 5D channels-last Keras tensor (batch, time, height, width, channels).
        filters: int, the output channels.
        kernel_size: 3-tuple of ints (time, height, width).
        scope: str, the checkpoint scope with "." separators, e.g.
            "Mixed_3b.Branch_1.Conv3d_0b_3x3"; the layers are named `<scope>.conv`,
            `<scope>.bn` and `<scope>` (the ReLU, the unit's output).
        strides: 3-tuple of ints.

    Returns:
        The unit's output tensor.
    """
    x = keras.layers.Conv3D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        name=f"{scope}.conv",
    )(x)
    x = keras.layers.BatchNormalization(
        axis=-1,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        center=True,
        scale=False,
        name=f"{scope}.bn",
    )(x)
    return keras.layers.ReLU(name=scope)(x)


def inception_block(x, channels, scope):
    """Applies one I3D inception block (four branches concatenated on channels).

    Args:
        x: a 5D channels-last Keras tensor.
        channels: 6-tuple of ints, see `INCEPTION_CHANNELS`.
        scope: str, the block name, e.g. "Mixed_3b"; the concatenation is named after it.

    Returns:
        The block's output tensor with `channels[0] + channels[2] + channels[4] +
        channels[5]` channels.
    """
    b0 = unit3d(x, channels[0], (1, 1, 1), f"{scope}.Branch_0.Conv3d_0a_1x1")
    b1 = unit3d(x, channels[1], (1, 1, 1), f"{scope}.Branch_1.Conv3d_0a_1x1")
    b1 = unit3d(b1, channels[2], (3, 3, 3), f"{scope}.Branch_1.Conv3d_0b_3x3")
    b2 = unit3d(x, channels[3], (1, 1, 1), f"{scope}.Branch_2.Conv3d_0a_1x1")
    b2 = unit3d(b2, channels[4], (3, 3, 3), f"{scope}.Branch_2.Conv3d_0b_3x3")
    b3 = keras.layers.MaxPooling3D(
        (3, 3, 3), strides=(1, 1, 1), padding="same", name=f"{scope}.Branch_3.MaxPool3d_0a_3x3"
    )(x)
    b3 = unit3d(b3, channels[5], (1, 1, 1), f"{scope}.Branch_3.Conv3d_0b_1x1")
    return keras.layers.Concatenate(axis=-1, name=scope)([b0, b1, b2, b3])


def _check_args(final_endpoint, pooling, in_channels, num_classes, weights, dropout_rate):
    """Raises ValueError for an invalid `I3D` argument, naming it and what is allowed."""
    check_choice("final_endpoint", final_endpoint, VALID_ENDPOINTS)
    check_choice("pooling", pooling, ("avg", None))
    check_positive_int("in_channels", in_channels)  # 3 for RGB, 2 for optical flow.
    check_positive_int("num_classes", num_classes)
    if not 0.0 <= float(dropout_rate) < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1). Received: dropout_rate={dropout_rate!r}")
    if weights == "kinetics400":
        if final_endpoint in ("Logits", "Predictions") and num_classes != 400:
            raise ValueError(
                "weights='kinetics400' with a Logits/Predictions head needs num_classes=400; "
                "for another label set use the features (final_endpoint='Mixed_5c') and a new "
                f"head. Received: num_classes={num_classes!r}"
            )
    elif weights is not None and (
        not isinstance(weights, (str, os.PathLike)) or not str(weights).endswith(".weights.h5")
    ):
        raise ValueError(
            "weights must be 'kinetics400', None or the path of a .weights.h5 file. "
            f"Received: weights={weights!r}"
        )


def I3D(  # noqa: N802 (named like the keras.applications builders)
    final_endpoint="Mixed_5c",
    pooling="avg",
    in_channels=3,
    num_classes=400,
    weights="kinetics400",
    dropout_rate=0.0,
    num_frames=None,
    frame_size=None,
    name="i3d",
):
    """Builds Inception-v1 I3D up to `final_endpoint` as a functional Keras model.

    Three common configurations:

    * segment features (the default): `final_endpoint="Mixed_5c", pooling="avg"`, Mixed_5c
      averaged over time and space, (batch, 1024). Any number of frames >= 1 and any frame
      size work (the time and space dimensions are `None`).
    * Kinetics logits: `final_endpoint="Logits"`, DeepMind's head: average pool (2, 7, 7)
      with stride 1 and VALID padding, dropout, a 1x1x1 convolution with bias, and the mean
      over the remaining positions, (batch, num_classes). DeepMind squeezes the spatial
      dimensions (which are 1 for 224x224 input) and averages over time; averaging over time
      and space is the same there and also accepts larger frames. It needs at least 9 frames
      and 193x193 pixels (Mixed_5c must be at least 2x7x7). `"Predictions"` adds a softmax.
    * an intermediate endpoint: `final_endpoint="Mixed_4f", pooling=None` returns that
      endpoint's 5D feature map.

    With `in_channels=2` (optical flow) and `weights="kinetics400"`, every layer gets the RGB
    Kinetics weights except the first convolution, which gets the RGB kernel averaged over
    its 3 input channels and replicated to 2 (cross-modality initialisation, Wang et al. 2016).
    No trained flow weights exist here: such a model must be trained on flow before its
    features mean much.

    Args:
        final_endpoint: one of `VALID_ENDPOINTS`.
        pooling: "avg" to average the final (non-head) endpoint over time and space, or None
            to return the 5D map. Ignored for "Logits" and "Predictions".
        in_channels: int, 3 for RGB, 2 for TV-L1 optical flow (x, y).
        num_classes: int, the logits of the head (400 for Kinetics-400).
        weights: "kinetics400" (DeepMind's RGB Kinetics-400 weights, fetched and converted on
            first use, see `reslstm_tf.backbones.convert`), None (random initialisation) or
            the path of a `.weights.h5` file saved from an I3D model (one built with the same
            arguments, or the full RGB Logits model as the converter writes it).
        dropout_rate: float in [0, 1), the dropout before the logits convolution (DeepMind
            trained with keep probability 0.5; inference ignores it).
        num_frames: optional int, fixes the time dimension of the input (None: any).
        frame_size: optional int, fixes height and width of the input (None: any).
        name: the model's name.

    Returns:
        A `keras.Model` taking float32 (batch, frames, height, width, in_channels) in [-1, 1].

    Raises:
        ValueError: for an invalid argument.

    References:
        Carreira & Zisserman, "Quo Vadis, Action Recognition? A New Model and the Kinetics
        Dataset", CVPR 2017. https://github.com/google-deepmind/kinetics-i3d
    """
    _check_args(final_endpoint, pooling, in_channels, num_classes, weights, dropout_rate)
    inputs = keras.Input(shape=(num_frames, frame_size, frame_size, in_channels), name="frames")
    x = _backbone(inputs, final_endpoint)
    if final_endpoint in ("Logits", "Predictions"):
        x = keras.layers.AveragePooling3D(
            (2, 7, 7), strides=(1, 1, 1), padding="valid", name="Logits.AvgPool3d_0a_7x7"
        )(x)
        x = keras.layers.Dropout(dropout_rate, name="Logits.Dropout_0b")(x)
        x = keras.layers.Conv3D(
            num_classes, (1, 1, 1), padding="same", use_bias=True, name=LOGITS_CONV
        )(x)
        x = keras.layers.GlobalAveragePooling3D(name="Logits")(x)
        if final_endpoint == "Predictions":
            x = keras.layers.Softmax(name="Predictions")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling3D(name="global_pool")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        _load_weights(model, weights)
    return model


def _backbone(x, final_endpoint):
    """Applies the I3D trunk up to `final_endpoint` (or Mixed_5c for the head endpoints)."""
    stop = "Mixed_5c" if final_endpoint in ("Logits", "Predictions") else final_endpoint
    stages = [
        ("Conv3d_1a_7x7", lambda t: unit3d(t, 64, (7, 7, 7), "Conv3d_1a_7x7", (2, 2, 2))),
        ("MaxPool3d_2a_3x3", None),
        ("Conv3d_2b_1x1", lambda t: unit3d(t, 64, (1, 1, 1), "Conv3d_2b_1x1")),
        ("Conv3d_2c_3x3", lambda t: unit3d(t, 192, (3, 3, 3), "Conv3d_2c_3x3")),
        ("MaxPool3d_3a_3x3", None),
        ("Mixed_3b", None),
        ("Mixed_3c", None),
        ("MaxPool3d_4a_3x3", None),
        ("Mixed_4b", None),
        ("Mixed_4c", None),
        ("Mixed_4d", None),
        ("Mixed_4e", None),
        ("Mixed_4f", None),
        ("MaxPool3d_5a_2x2", None),
        ("Mixed_5b", None),
        ("Mixed_5c", None),
    ]
    for endpoint, fn in stages:
        if fn is not None:
            x = fn(x)
        elif endpoint in MAX_POOLS:
            window, strides = MAX_POOLS[endpoint]
            x = keras.layers.MaxPooling3D(window, strides=strides, padding="same", name=endpoint)(x)
        else:
            x = inception_block(x, INCEPTION_CHANNELS[endpoint], endpoint)
        if endpoint == stop:
            break
    return x


def endpoint_model(model, endpoints):
    """Returns a model with `model`'s input and the outputs of the named endpoints.

    Args:
        model: an I3D `keras.Model` built by `I3D`.
        endpoints: a sequence of names from `VALID_ENDPOINTS` that `model` contains, or any
            layer names of `model`.

    Returns:
        A `keras.Model` sharing `model`'s layers whose outputs are a dict endpoint -> tensor.

    Raises:
        ValueError: if an endpoint is not a layer of `model`.
    """
    names = {layer.name for layer in model.layers}
    missing = [e for e in endpoints if e not in names]
    if missing:
        raise ValueError(
            f"endpoints {missing} are not layers of model {model.name!r}; it has the "
            f"endpoints {[e for e in VALID_ENDPOINTS if e in names]}. Received: endpoints="
            f"{list(endpoints)!r}"
        )
    outputs = {e: model.get_layer(e).output for e in endpoints}
    return keras.Model(model.input, outputs, name=f"{model.name}_endpoints")
