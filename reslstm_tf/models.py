"""Model builders: one-stream and two-stream Res-LSTM classifiers as functional `keras.Model`s."""

import keras

from reslstm_tf import presets
from reslstm_tf.checks import check_choice
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


def _check_positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")


def _features_input(name, num_steps, feature_dim, masking):
    """Returns (Input, tensor) for a (batch, T, d_f) feature sequence, zero steps masked."""
    _check_positive(f"{name}_dim" if name != "features" else "feature_dim", feature_dim)
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
    _check_positive("num_classes", num_classes)
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
    _check_positive("num_classes", num_classes)
    check_fusion_method(fusion)
    if level not in FUSION_LEVELS:
        raise ValueError(
            f"level must be one of {', '.join(map(repr, FUSION_LEVELS))}. Received: level={level!r}"
        )
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
            **overrides,
        )
    return build_single_stream(
        num_classes, preset, feature_dim=feature_dim, masking=masking, **overrides
    )


def load_model(path):
    """Loads a `.keras` model saved from reslstm_tf, with its custom layers registered.

    `keras.saving.load_model` works too once `reslstm_tf.layers` has been imported;
    this function makes sure it has.
    """
    return keras.saving.load_model(path)
