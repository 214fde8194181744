"""Model builders: one-stream and two-stream Res-LSTM classifiers as functional `keras.Model`s.

`StreamingClassifier` runs a built one-stream model one segment at a time. It lives here,
beside the builder whose layer names it reads, rather than in `reslstm_tf.streaming`, so that
video prediction (`reslstm_tf.predict`, a floor below streaming) can step a head too;
`reslstm_tf.streaming` re-exports it.
"""

import keras
import tensorflow as tf
from keras import ops

from reslstm_tf import presets
from reslstm_tf.checks import check_choice, check_positive_int
from reslstm_tf.layers.fusion import FUSION_LEVELS, LateFusion, StreamFusion, check_fusion_method
from reslstm_tf.layers.residual_lstm import ResidualLSTM

MODALITIES = ("rgb", "flow", "two_stream")
_ARCH_KEYS = ("units", "num_layers", "residual", "num_steps", "dropout")


def resolve_architecture(preset="res3", **overrides):
    """Returns the preset's architecture dict with `overrides` applied (num_steps=None: any T)."""
    arch = presets.get_architecture(preset)
    unknown = set(overrides) - set(_ARCH_KEYS)
    if unknown:
        raise ValueError(
            f"unknown architecture argument(s) {sorted(unknown)}; allowed: {list(_ARCH_KEYS)}"
        )
    arch.update(overrides)
    arch["preset"] = preset
    steps = arch["num_steps"]
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"num_steps must be a positive integer or None. Received: {steps!r}")
    return arch


def _features_input(name, num_steps, feature_dim, masking):
    """Returns (Input, tensor) for a (batch, T, d_f) feature sequence, zero steps masked."""
    check_positive_int(f"{name}_dim" if name != "features" else "feature_dim", feature_dim)
    inputs = keras.Input(shape=(num_steps, feature_dim), name=name)
    x = keras.layers.Masking(mask_value=0.0, name=f"{name}_mask")(inputs) if masking else inputs
    return inputs, x


def _recurrent_classifier(x, arch, num_classes, prefix=""):
    """Res-LSTM (or plain LSTM) stack, dropout and a linear classifier; returns logits."""
    x = ResidualLSTM(
        units=arch["units"],
        num_layers=arch["num_layers"],
        residual=arch["residual"],
        name=f"{prefix}residual_lstm",
    )(x)
    x = keras.layers.Dropout(arch["dropout"], name=f"{prefix}dropout")(x)
    return keras.layers.Dense(num_classes, dtype="float32", name=f"{prefix}logits")(x)


def build_single_stream(
    num_classes,
    preset="res3",
    feature_dim=1024,
    masking=True,
    name=None,
    **overrides,
):
    """Builds a one-stream classifier from segment features (B, T, d_f) to class logits (B, C).

    Args:
        num_classes: int, number of action classes C.
        preset: str, an architecture from `reslstm_tf.presets.ARCHITECTURES`
            ("res2", "res3", "res4", "lstm2", "lstm3", "lstm4"). Defaults to "res3".
        feature_dim: int, d_f, the size of one segment feature (1024 for I3D).
        masking: bool, treat all-zero time steps as padding (videos with fewer
            than T segments, zero-padded at the end). Defaults to True.
        name: optional model name; defaults to "<preset>_single_stream".
        **overrides: architecture values that replace the preset's: `units`,
            `num_layers`, `residual`, `num_steps` (T, or None for variable length),
            `dropout`.

    Returns:
        A functional `keras.Model` with input "features" and float32 logits.

    Example:

    >>> model = build_single_stream(num_classes=51, preset="res3", num_steps=16)
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    """
    check_positive_int("num_classes", num_classes)
    arch = resolve_architecture(preset, **overrides)
    inputs, x = _features_input("features", arch["num_steps"], feature_dim, masking)
    logits = _recurrent_classifier(x, arch, num_classes)
    return keras.Model(inputs, logits, name=name or f"{preset}_single_stream")


def build_two_stream(
    num_classes,
    preset="res3",
    fusion="product",
    level="late",
    rgb_dim=1024,
    flow_dim=1024,
    flow_weight=0.5,
    rgb_weight=0.5,
    learnable_weights=False,
    masking=True,
    name=None,
    **overrides,
):
    """Builds a two-stream (RGB + optical flow) classifier with mid- or late-level fusion.

    - `level="mid"`: the segment features of both streams are fused
      (`StreamFusion`) and one recurrent stack classifies the fused sequence.
    - `level="late"`: each stream has its own recurrent stack and classifier; the
      class probabilities are fused (`LateFusion`) and returned as log-scores,
      so the output is still a logit vector.

    Args:
        num_classes: int, number of action classes C.
        preset: str, architecture preset name. Defaults to "res3".
        fusion: one of "sum", "product", "weighted", "concat". Defaults to
            "product" (the paper's best on HMDB-51, late level).
        level: "mid" or "late". Defaults to "late".
        rgb_dim, flow_dim: int, feature sizes of the two streams (equal unless
            fusion="concat" or level="late").
        flow_weight, rgb_weight: floats, w1 and w2 of fusion="weighted".
        learnable_weights: bool, learn w1 and w2.
        masking: bool, treat all-zero time steps as padding.
        name: optional model name.
        **overrides: architecture overrides as in `build_single_stream`.

    Returns:
        A functional `keras.Model` with inputs {"rgb", "flow"} and float32 logits.
    """
    check_positive_int("num_classes", num_classes)
    check_fusion_method(fusion)
    check_choice("level", level, FUSION_LEVELS)
    arch = resolve_architecture(preset, **overrides)
    rgb_in, rgb = _features_input("rgb", arch["num_steps"], rgb_dim, masking)
    flow_in, flow = _features_input("flow", arch["num_steps"], flow_dim, masking)
    fusion_kwargs = dict(
        method=fusion,
        flow_weight=flow_weight,
        rgb_weight=rgb_weight,
        learnable=learnable_weights,
        name="fusion",
    )
    if level == "mid":
        fused = StreamFusion(**fusion_kwargs)([rgb, flow])
        logits = _recurrent_classifier(fused, arch, num_classes)
    else:
        rgb_logits = _recurrent_classifier(rgb, arch, num_classes, prefix="rgb_")
        flow_logits = _recurrent_classifier(flow, arch, num_classes, prefix="flow_")
        logits = LateFusion(**fusion_kwargs)([rgb_logits, flow_logits])
    return keras.Model(
        {"rgb": rgb_in, "flow": flow_in},
        logits,
        name=name or f"{preset}_two_stream_{level}_{fusion}",
    )


def build_model(
    num_classes,
    modality="rgb",
    preset="res3",
    fusion="product",
    level="late",
    feature_dim=1024,
    flow_dim=None,
    masking=True,
    name=None,
    **overrides,
):
    """Builds the classifier of a modality: one stream (rgb or flow) or two streams.

    Args:
        num_classes: int, number of classes C.
        modality: "rgb", "flow" or "two_stream".
        preset: architecture preset name.
        fusion: two-stream fusion method.
        level: two-stream fusion level, "mid" or "late".
        feature_dim: int, d_f of the (rgb) features.
        flow_dim: int, d_f of the flow features of a two-stream model (default feature_dim).
        masking: bool, mask all-zero (padding) time steps.
        name: optional model name; defaults to the builder's.
        **overrides: architecture overrides (`units`, `num_layers`, `residual`,
            `num_steps`, `dropout`); None values are ignored.

    Returns:
        An uncompiled `keras.Model` with float32 logits.
    """
    check_choice("modality", modality, MODALITIES)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if modality == "two_stream":
        return build_two_stream(
            num_classes,
            preset,
            fusion=fusion,
            level=level,
            rgb_dim=feature_dim,
            flow_dim=flow_dim or feature_dim,
            masking=masking,
            name=name,
            **overrides,
        )
    return build_single_stream(
        num_classes, preset, feature_dim=feature_dim, masking=masking, name=name, **overrides
    )


def load_model(path):
    """Loads a `.keras` model saved from reslstm_tf, with its custom layers registered.

    `keras.saving.load_model` works too once `reslstm_tf.layers` has been imported;
    this function makes sure it has.
    """
    return keras.saving.load_model(path)


class StreamingClassifier:
    """Runs a trained one-stream Res-LSTM model step by step, with carried states.

    A residual LSTM is causal, so the class probabilities after t segments depend only on the
    first t: after T steps they equal the full-sequence model's. States travel as one tensor
    of shape (batch, L, 2, H) (h and c of each layer), which a TF Serving client can keep
    between requests.

    Args:
        model: a one-stream model with layers "residual_lstm" and "logits".

    Example:

    >>> stream = StreamingClassifier(model)
    >>> states = stream.initial_states(batch_size=1)
    >>> for feature in segment_features:  # each (1, d_f)
    ...     probabilities, states = stream.step(feature, states)
    """

    def __init__(self, model):
        try:
            self.recurrent = model.get_layer("residual_lstm")
            self.classifier = model.get_layer("logits")
        except ValueError:
            raise ValueError(
                "StreamingClassifier needs a one-stream model with layers 'residual_lstm' and "
                f"'logits'. Received a model with layers {[layer.name for layer in model.layers]}"
            ) from None
        self.model = model
        self.num_layers = self.recurrent.num_layers
        self.units = self.recurrent.units
        self.feature_dim = model.input_shape[-1]

    def initial_states(self, batch_size=1):
        """Returns zero states of shape (batch, L, 2, H), float32."""
        return ops.zeros((batch_size, self.num_layers, 2, self.units), dtype="float32")

    def step(self, features, states):
        """Consumes one segment feature (batch, d_f); returns (probabilities, new states)."""
        logits, states = self.step_logits(features, states)
        return ops.softmax(logits, axis=-1), states

    def step_logits(self, features, states):
        """Consumes one segment feature (batch, d_f); returns (logits, new states)."""
        features = ops.convert_to_tensor(features, dtype="float32")
        if len(features.shape) != 2 or features.shape[-1] != self.feature_dim:
            raise ValueError(
                f"features must have shape (batch, {self.feature_dim}). "
                f"Received: shape={tuple(features.shape)}"
            )
        dtype = self.recurrent.compute_dtype
        unpacked = [
            [ops.cast(states[:, layer, 0], dtype), ops.cast(states[:, layer, 1], dtype)]
            for layer in range(self.num_layers)
        ]
        output, new_states = self.recurrent.step(ops.cast(features, dtype), unpacked)
        packed = ops.stack(
            [
                ops.stack([ops.cast(h, "float32"), ops.cast(c, "float32")], axis=1)
                for h, c in new_states
            ],
            axis=1,
        )
        return ops.cast(self.classifier(output), "float32"), packed

    def tf_function(self):
        """Returns a traced `tf.function(features, states)` for export and fast loops."""
        spec = [
            tf.TensorSpec((None, self.feature_dim), tf.float32, name="features"),
            tf.TensorSpec((None, self.num_layers, 2, self.units), tf.float32, name="states"),
        ]

        @tf.function(input_signature=spec)
        def serve_step(features, states):
            logits, new_states = self.step_logits(features, states)
            return {
                "logits": logits,
                "probabilities": tf.nn.softmax(logits, axis=-1),
                "states": new_states,
            }

        return serve_step
