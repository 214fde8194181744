"""Streaming recognition: a one-stream model advanced one segment at a time with carried states.

A residual LSTM is causal, so the class probabilities after t segments depend only
on the first t. `StreamingClassifier` wraps a trained one-stream model (from
`build_single_stream` or the zoo) and exposes `step(features_t, states)`; after T
steps its probabilities equal the full-sequence model's. States travel as one
tensor of shape (batch, L, 2, H) (h and c of each layer), which a TF Serving
client can keep between requests.
"""

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops


class StreamingClassifier:
    """Runs a trained one-stream Res-LSTM model step by step.

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


def run_stream(model, features):
    """Feeds features (batch, T, d_f) one step at a time; returns probabilities (batch, T, C)."""
    stream = StreamingClassifier(model)
    features = keras.ops.convert_to_tensor(features, dtype="float32")
    states = stream.initial_states(features.shape[0])
    outputs = []
    for t in range(features.shape[1]):
        probabilities, states = stream.step(features[:, t], states)
        outputs.append(probabilities)
    return ops.stack(outputs, axis=1)


@dataclasses.dataclass
class StreamEvent:
    """One segment's result in `stream_video`.

    Attributes:
        index: segment number, from 0.
        start_s, end_s: the segment's time span in the video, in seconds.
        ranked: the current top-k (class name, probability) pairs.
        latency_ms: from the segment's last frame being read to its prediction.
        compute_ms: backbone and recurrent step time for this segment.
        thumbnail: the segment's last frame (uint8, S x S x 3).
        dropped: segments skipped so far because the consumer fell behind a camera.
        fps: the source's frame rate.
    """

    index: int
    start_s: float
    end_s: float
    ranked: list
    latency_ms: float
    compute_ms: float
    thumbnail: np.ndarray
    dropped: int = 0
    fps: float = 0.0


def _open_source(source):
    import cv2

    from reslstm_tf.data.video import VideoReadError

    is_camera = isinstance(source, int) or (isinstance(source, str) and source.isdigit())
    capture = cv2.VideoCapture(int(source)) if is_camera else cv2.VideoCapture(str(source))
    if not capture.isOpened():
        kind = "camera" if is_camera else "video"
        raise VideoReadError(source, f"the {kind} could not be opened")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    return capture, (fps if np.isfinite(fps) and fps > 0 else 25.0), is_camera


def _segment_reader(capture, segment_len, hop, frame_size, out_queue, stop, pace_fps):
    """Reads frames, keeps a sliding window, and queues (index, frames, t_end, read time)."""
    import cv2

    from reslstm_tf.data.video import crop, resize_short_side

    window, frame_index, segment_index = [], 0, 0
    next_emit = segment_len
    started = time.perf_counter()
    while not stop.is_set():
        ok, frame = capture.read()
        if not ok:
            break
        if pace_fps:  # Play a file at its own speed, as a camera would deliver it.
            delay = started + frame_index / pace_fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)[None]
        window.append(crop(resize_short_side(rgb, frame_size), frame_size)[0])
        window = window[-segment_len:]
        frame_index += 1
        if frame_index >= next_emit:
            out_queue.put((segment_index, np.stack(window), frame_index, time.perf_counter()))
            segment_index += 1
            next_emit += hop
    out_queue.put(None)


def stream_video(
    source,
    model="kinetics400_i3d",
    segment_len=None,
    frame_size=None,
    hop=None,
    top_k=3,
    realtime=None,
    max_segments=None,
):
    """Recognises actions while a video plays; yields a `StreamEvent` per segment.

    A reader thread decodes frames (from a file or a camera index) into a sliding
    window; every `hop` frames the window of the last `segment_len` frames goes
    through the backbone and, for a Res-LSTM zoo entry, one recurrent step with
    carried states, so the prediction is always the current one. For the
    `kinetics400_i3d` entry the prediction is the running mean of the segments'
    probabilities. If the consumer falls behind a camera, the oldest waiting
    segments are dropped and counted (`StreamEvent.dropped`).

    Args:
        source: video path, or a camera index (int or digit string).
        model: zoo entry name (with published weights) or a model from `zoo.load`.
        segment_len: frames per segment; default the entry's (smaller: lower latency).
        frame_size: square crop side; default the entry's (smaller: faster backbone).
        hop: frames between predictions; default `segment_len`.
        top_k: ranked classes per event.
        realtime: pace a file at its frame rate (default: only for cameras, which
            pace themselves).
        max_segments: stop after this many segments.
    """
    import queue
    import threading

    from reslstm_tf import zoo
    from reslstm_tf.data.video import to_float

    model = zoo.load(model) if isinstance(model, str) else model
    entry = getattr(model, "zoo_entry", None)
    if entry is None:
        raise ValueError("stream_video needs a zoo entry name or a model from zoo.load")
    spec = entry["features"]["rgb"]
    names = zoo.class_names(entry["name"])
    segment_len = int(segment_len or spec["segment_len"])
    frame_size = int(frame_size or spec["frame_size"])
    hop = int(hop or segment_len)
    for name, value in (("segment_len", segment_len), ("frame_size", frame_size), ("hop", hop)):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer. Received: {name}={value}")
    backbone_only = entry["architecture"]["kind"] == "backbone"
    if backbone_only and (segment_len < 9 or frame_size < 193):
        raise ValueError(
            "the Kinetics-400 I3D head needs segment_len >= 9 and frame_size >= 193. "
            f"Received: segment_len={segment_len}, frame_size={frame_size}"
        )
    if backbone_only:
        forward = tf.function(lambda x: tf.nn.softmax(model(x, training=False)))
        running = None
    else:
        from reslstm_tf.backbones.extractor import feature_model

        backbone = feature_model(spec.get("backbone", "i3d"), "rgb")
        features_of = tf.function(lambda x: backbone(x, training=False))
        stream = StreamingClassifier(model)
        step = stream.tf_function()
        states = stream.initial_states(1)

    # Trace before the clock starts, so the first segment's latency is a real one.
    warm = tf.zeros((1, segment_len, frame_size, frame_size, 3))
    if backbone_only:
        forward(warm)
    else:
        step(features_of(warm), states)
    capture, fps, is_camera = _open_source(source)
    pace = fps if (realtime if realtime is not None else is_camera) else None
    segments, stop = queue.Queue(), threading.Event()
    reader = threading.Thread(
        target=_segment_reader,
        args=(capture, segment_len, hop, frame_size, segments, stop, pace),
        daemon=True,
    )
    reader.start()
    dropped = 0
    try:
        emitted = 0
        while max_segments is None or emitted < max_segments:
            item = segments.get()
            while is_camera and segments.qsize() > 1 and item is not None:
                dropped += 1  # Behind a live camera: skip to the newest.
                item = segments.get()
            if item is None:
                break
            index, frames, end_frame, read_at = item
            started = time.perf_counter()
            clip = tf.constant(to_float(frames)[None])
            if backbone_only:
                p = forward(clip).numpy()[0]
                running = p if running is None else running + (p - running) / (emitted + 1)
                current = running
            else:
                out = step(features_of(clip), states)
                states, current = out["states"], out["probabilities"].numpy()[0]
            done = time.perf_counter()
            order = np.argsort(-current)[:top_k]
            yield StreamEvent(
                index=index,
                start_s=(end_frame - len(frames)) / fps,
                end_s=end_frame / fps,
                ranked=[(names[i], float(current[i])) for i in order],
                latency_ms=(done - read_at) * 1e3,
                compute_ms=(done - started) * 1e3,
                thumbnail=frames[-1],
                dropped=dropped,
                fps=fps,
            )
            emitted += 1
    finally:
        stop.set()
        capture.release()
