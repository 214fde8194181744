"""From decoded clips to class probabilities, per segment and for the whole video.

Two kinds of classifier score a video here:

- a Res-LSTM head on segment features (`prefix_probabilities`): the backbone runs apart
  (`SegmentFeatureExtractor`), and row k of the result is the head's prediction after
  segments 1..k;
- an end-to-end video classifier (`build_video_classifier`, e.g. a fine-tuned zoo entry of
  kind "video_classifier"): its clips (T, L, S, S, C) go through its own fine-tuned I3D
  encoder(s) once, then through its head, and row k is the head's prediction after the
  first k segments (`EndToEndScorer`). The last row is the classifier's output.

`clip_specs` says how videos are read for an end-to-end classifier: the clip shape its
input fixes, and the rest of the entry's `ClipSpec` (what it does not record, the spec's
defaults, as fine-tuning evaluates).
"""

import keras
import numpy as np

from reslstm_tf.clip_spec import ClipSpec
from reslstm_tf.data.sampling import step_segment_map
from reslstm_tf.models import StreamingClassifier


def softmax(logits):
    """Softmax over the last axis, in float64."""
    logits = np.asarray(logits, np.float64)
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _first_input(model):
    return model.input["rgb"] if isinstance(model.input, dict) else model.input


def is_end_to_end(model):
    """True for a classifier of clips (batch, T, L, S, S, C), as `build_video_classifier` builds."""
    return len(_first_input(model).shape) == 6


def _takes_flow(model):
    return isinstance(model.input, dict) or model.input.shape[-1] == 2


def clip_specs(model, features, overrides=None):
    """Returns the (rgb, flow or None) `ClipSpec`s of an end-to-end classifier.

    Args:
        model: the classifier.
        features: the entry's `features` ({"rgb": {...}, "flow": {...}}), or {}.
        overrides: spec values replacing the entry's; the clip shape cannot change.

    Returns:
        (rgb spec, flow spec): the flow spec for a classifier with a flow input, else None.
        A flow-only classifier still gets an RGB spec, for the segments' thumbnails.

    Raises:
        ValueError: `overrides` changes the number of segments, frames or the frame size.
    """
    _, steps, length, size = _first_input(model).shape[:4]
    shape = {"num_segments": steps, "segment_len": length, "frame_size": size}
    overrides = dict(overrides or {})
    changed = {k: v for k, v in overrides.items() if k in shape and v != shape[k]}
    if changed:
        raise ValueError(
            f"{model.name!r} takes clips of {steps} segments of {length} frames of "
            f"{size}x{size} pixels; they cannot be changed. Received: {changed}"
        )
    specs = {
        stream: ClipSpec.from_record(features.get(stream), **{**overrides, **shape}).replace(
            modality=stream
        )
        for stream in ("rgb", "flow")
    }
    return specs["rgb"], specs["flow"] if _takes_flow(model) else None


def _variable_length(head):
    """A copy of a Res-LSTM head (same weights) that takes any number of time steps."""
    config = head.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            batch_shape = list(layer["config"]["batch_shape"])
            layer["config"]["batch_shape"] = [batch_shape[0], None, *batch_shape[2:]]
    copy = keras.Model.from_config(config)
    copy.set_weights(head.get_weights())
    return copy


class EndToEndScorer:
    """Scores the clips of one video with an end-to-end classifier, built once for many videos.

    Args:
        model: a `build_video_classifier` model (layers "segment_encoder" or "rgb_encoder"
            and "flow_encoder", and "head").
        num_segments: the segments per video asked for; must be the classifier's T.

    Raises:
        ValueError: `num_segments` is not the classifier's number of segments.
    """

    def __init__(self, model, num_segments):
        steps = _first_input(model).shape[1]
        if num_segments != steps:
            raise ValueError(
                f"{model.name!r} classifies videos cut into exactly {steps} segments. "
                f"Received: num_segments={num_segments}"
            )
        if isinstance(model.input, dict):
            self.encoders = {s: model.get_layer(f"{s}_encoder").backbone for s in model.input}
        else:
            stream = "flow" if _takes_flow(model) else "rgb"
            self.encoders = {stream: model.get_layer("segment_encoder").backbone}
        self.head = _variable_length(model.get_layer("head"))

    def __call__(self, clips):
        """Returns (per-segment probabilities (K, C), whole-video probabilities (C,)).

        Args:
            clips: {stream: float32 (K, L, S, S, C) in [-1, 1]} (extra streams ignored).
        """
        features = {s: encoder.predict_on_batch(clips[s]) for s, encoder in self.encoders.items()}
        rows = []
        for count in range(1, len(next(iter(features.values()))) + 1):
            prefix = {s: value[None, :count] for s, value in features.items()}
            inputs = prefix if len(prefix) > 1 else next(iter(prefix.values()))
            rows.append(softmax(keras.ops.convert_to_numpy(self.head(inputs, training=False)))[0])
        return np.stack(rows), rows[-1]


def prefix_probabilities(model, features, num_segments):
    """Per-segment probabilities (K, C) of a head: row k is its prediction after segments 1..k.

    The head reads its T steps at the segments of `step_segment_map(T, K)`. A head that masks
    all-zero steps gets all K prefixes in one batch (the steps after segment k zeroed); the
    last row is the whole video. A one-stream head without masking is stepped instead.
    """
    inputs = model.input if isinstance(model.input, dict) else {"features": model.input}
    num_steps = next(iter(inputs.values())).shape[1] or num_segments
    step_map = step_segment_map(num_steps, num_segments)
    steps = {name: value[step_map] for name, value in features.items()}
    if not any(isinstance(layer, keras.layers.Masking) for layer in model.layers):
        if len(steps) != 1:
            raise ValueError(
                "per-segment predictions of a two-stream head need masking=True (it skips "
                f"all-zero steps); {model.name!r} has no Masking layer"
            )
        stream = StreamingClassifier(model)
        states, rows = stream.initial_states(1), []
        for feature in features["features"]:
            logits, states = stream.step_logits(feature[None], states)
            rows.append(softmax(keras.ops.convert_to_numpy(logits))[0])
        return np.stack(rows)
    lengths = np.searchsorted(step_map, np.arange(num_segments), side="right")
    keep = (np.arange(num_steps)[None, :] < lengths[:, None])[..., None]
    batch = {
        name: np.where(keep, value[None], 0.0).astype(np.float32) for name, value in steps.items()
    }
    logits = model(batch if len(batch) > 1 else batch["features"], training=False)
    return softmax(keras.ops.convert_to_numpy(logits))
