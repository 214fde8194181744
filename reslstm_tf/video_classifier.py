"""End-to-end video classifiers: a 3D CNN on every segment, then the Res-LSTM head, as one model.

The paper's model is E (a 3D CNN) applied to each of the T segments of a video, a_i = E(S_i),
and L stacked LSTM layers with identity shortcuts over the a_i. With cached features the CNN
is frozen by construction; this module builds the whole thing as one Keras model, so the
CNN can be fine-tuned with the head through the same trainer and strategies:

- `SegmentEncoder` applies a backbone to (B, T, L, S, S, C) clips as one (B*T, ...) batch and
  returns (B, T, d_f) features; with `recompute=True` its activations are recomputed in the
  backward pass (`tf.recompute_grad`), trading compute for memory.
- `freeze_below(backbone, endpoint)` keeps every layer before an I3D endpoint (e.g.
  "Mixed_4f") fixed; `freeze_batchnorm` keeps BatchNorm statistics and offsets fixed, as small
  per-replica batches would make them noisy.
- `build_video_classifier` puts the pieces together for one stream, or for two (RGB and flow
  clips, fused as in `models.build_two_stream`).

It sits above `models` (the heads) and `backbones` and imports nothing higher.
"""

import keras
from keras import ops

from reslstm_tf.backbones.extractor import CHANNELS, feature_model
from reslstm_tf.backbones.i3d import VALID_ENDPOINTS
from reslstm_tf.checks import check_choice
from reslstm_tf.clip_spec import spec_of
from reslstm_tf.models import MODALITIES, build_model


@keras.saving.register_keras_serializable(package="reslstm_tf")
class SegmentEncoder(keras.layers.Layer):
    """Applies a backbone to every segment: (B, T, L, S, S, C) clips to (B, T, d_f) features.

    Any per-segment output shape is kept: a backbone cut at an inner endpoint maps
    (n, L, S, S, C) to (n, l, s, s, c), and the encoder then gives (B, T, l, s, s, c).

    Args:
        backbone: a `keras.Model` mapping (n, L, S, S, C) segments to (n, d_f) features
            (or to any per-segment shape).
        recompute: recompute the backbone's activations in the backward pass instead of
            keeping them (less memory, about one more forward pass of compute).
        **kwargs: `keras.layers.Layer` arguments (name, dtype, ...).
    """

    def __init__(self, backbone, recompute=False, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.recompute = bool(recompute)

    def _encode(self, segments, training):
        return self.backbone(segments, training=training)

    def call(self, clips, training=None):
        shape = ops.shape(clips)
        segments = ops.reshape(clips, (-1, *clips.shape[2:]))
        if self.recompute and training:
            import tensorflow as tf

            features = tf.recompute_grad(lambda x: self._encode(x, training))(segments)
        else:
            features = self._encode(segments, training)
        return ops.reshape(features, (shape[0], shape[1], *features.shape[1:]))

    def compute_output_shape(self, input_shape):
        features = self.backbone.compute_output_shape((None, *input_shape[2:]))
        return (input_shape[0], input_shape[1], *features[1:])

    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            recompute=self.recompute,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def _endpoint_of(layer_name):
    """The I3D endpoint a layer belongs to (its name's first dotted part), or None."""
    scope = layer_name.split(".")[0]
    return scope if scope in VALID_ENDPOINTS else None


def freeze_below(backbone, endpoint):
    """Freezes every I3D layer that comes before `endpoint`; later layers stay trainable.

    Args:
        backbone: an I3D model (layer names follow `reslstm_tf.backbones.i3d`).
        endpoint: the first trainable endpoint, one of `VALID_ENDPOINTS`, e.g. "Mixed_4f";
            None leaves everything trainable.

    Returns:
        The names of the layers frozen.
    """
    if endpoint is None:
        return []
    check_choice("trainable_from", endpoint, VALID_ENDPOINTS)
    first = VALID_ENDPOINTS.index(endpoint)
    frozen = []
    for layer in backbone.layers:
        scope = _endpoint_of(layer.name)
        if scope is not None and VALID_ENDPOINTS.index(scope) < first:
            layer.trainable = False
            frozen.append(layer.name)
    return frozen


def freeze_batchnorm(model):
    """Keeps every BatchNormalization layer's statistics and offset fixed; returns their count.

    A frozen Keras 3 BatchNormalization layer also normalises with its moving statistics in
    training, so small per-replica batches do not disturb the Kinetics statistics.
    """
    count = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            count += 1
    return count


def _all_layers(model):
    """Every layer of a model, nested models included."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _encoder(backbone, modality, weights, trainable_from, batchnorm_frozen, recompute, name):
    """A `SegmentEncoder` over a fresh backbone, frozen as asked."""
    model = feature_model(backbone, modality, weights)
    if backbone == "i3d":
        freeze_below(model, trainable_from)
    if batchnorm_frozen:
        freeze_batchnorm(model)
    return SegmentEncoder(model, recompute=recompute, name=name)


def _clips_input(name, num_segments, segment_len, frame_size, modality):
    return keras.Input(
        shape=(num_segments, segment_len, frame_size, frame_size, CHANNELS[modality]),
        name=name,
    )


def _stream_weights(backbone_weights, modality):
    """The weights of one stream's backbone: a dict gives each stream its own."""
    if isinstance(backbone_weights, dict):
        return backbone_weights.get(modality, "kinetics400")
    return backbone_weights


def build_video_classifier(
    num_classes,
    modality="rgb",
    backbone="i3d",
    preset="res3",
    num_segments=None,
    segment_len=None,
    frame_size=None,
    backbone_weights="kinetics400",
    trainable_from="Mixed_4f",
    frozen_batchnorm=True,
    recompute=False,
    fusion="product",
    level="late",
    name=None,
    **overrides,
):
    """Builds backbone(s) + Res-LSTM head: clips (B, T, L, S, S, C) in [-1, 1] to logits (B, C).

    Args:
        num_classes: int, the number of action classes C.
        modality: "rgb" (3-channel clips), "flow" (2-channel clips) or "two_stream" (both,
            each through its own backbone, fused by the head as in `models.build_two_stream`).
        backbone: "i3d" or "c3d".
        preset: the head's architecture preset ("res2".."res4", "lstm2".."lstm4").
        num_segments: T, segments per video (the head's time steps); default the
            `ClipSpec`'s, as are the two below.
        segment_len: L, frames per segment.
        frame_size: S, the square frame size (default: the backbone's native size).
        backbone_weights: "kinetics400", None or a weights path (see `feature_model`); for
            two streams also a dict {"rgb": ..., "flow": ...} (e.g. a fine-tuned flow I3D).
        trainable_from: the first I3D endpoint that is fine-tuned ("Mixed_4f" by default;
            None fine-tunes all of it). Ignored for C3D.
        frozen_batchnorm: keep BatchNorm statistics fixed (recommended for small batches).
        recompute: recompute backbone activations in the backward pass to save memory.
        fusion: two streams: "sum", "product", "weighted" or "concat".
        level: two streams: "mid" (fuse features) or "late" (fuse class scores).
        name: the model's name.
        **overrides: head overrides (`units`, `num_layers`, `residual`, `dropout`).

    Returns:
        A functional `keras.Model` with float32 logits and input "clips" (one stream) or
        inputs {"rgb", "flow"} (two streams). Its layers "segment_encoder" (or
        "rgb_encoder" and "flow_encoder") hold the backbones, and "head" the Res-LSTM model.

    Example:

    >>> model = build_video_classifier(51, num_segments=8, segment_len=16, frame_size=112)
    """
    clip = spec_of(
        num_segments=num_segments, segment_len=segment_len, frame_size=frame_size, backbone=backbone
    )
    num_segments, segment_len, frame_size = clip.num_segments, clip.segment_len, clip.frame_size
    check_choice("modality", modality, MODALITIES)
    streams = ("rgb", "flow") if modality == "two_stream" else (modality,)
    inputs, features = {}, {}
    for stream in streams:
        input_name = stream if modality == "two_stream" else "clips"
        encoder_name = f"{stream}_encoder" if modality == "two_stream" else "segment_encoder"
        inputs[stream] = _clips_input(input_name, num_segments, segment_len, frame_size, stream)
        weights = _stream_weights(backbone_weights, stream)
        encoder = _encoder(
            backbone, stream, weights, trainable_from, frozen_batchnorm, recompute, encoder_name
        )
        features[stream] = encoder(inputs[stream])
    dims = {stream: features[stream].shape[-1] for stream in streams}
    head = build_model(
        num_classes,
        modality,
        preset,
        fusion=fusion,
        level=level,
        feature_dim=dims.get("rgb", dims.get("flow")),
        flow_dim=dims.get("flow"),
        masking=False,
        name="head",
        num_steps=num_segments,
        **overrides,
    )
    if modality == "two_stream":
        return keras.Model(inputs, head(features), name=name or f"{backbone}_two_stream")
    return keras.Model(
        inputs[modality], head(features[modality]), name=name or f"{backbone}_{modality}"
    )
