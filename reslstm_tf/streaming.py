"""Streaming recognition: a model advanced one segment at a time while a video plays.

`stream_video` reads a file or a camera in a thread, keeps a sliding window of frames and
classifies each new segment as it completes; `stream_report` prints its events and says
whether recognition kept up with real time (the library side of `reslstm-stream`). This
module never imports the zoo: callers pass a `reslstm_tf.predict.Classifier` (a model with
its class names and feature spec, from `reslstm_tf.predict.load_classifier`).

A residual LSTM is causal, so the class probabilities after t segments depend only on the
first t; `StreamingClassifier` (defined in `reslstm_tf.models`, re-exported here) exposes
`step(features_t, states)`, and after T steps its probabilities equal the full-sequence
model's.
"""

import dataclasses
import pathlib
import queue
import threading
import time

import cv2
import keras
import numpy as np
import tensorflow as tf
from keras import ops

from reslstm_tf.backbones.extractor import feature_model
from reslstm_tf.checks import check_positive_int
from reslstm_tf.data.reader import frame_transform, segment_indices
from reslstm_tf.data.video import (
    VideoReadError,
    to_float,
)
from reslstm_tf.models import StreamingClassifier
from reslstm_tf.plots import pyplot, save_figure
from reslstm_tf.predict import Classifier

__all__ = [
    "StreamEvent",
    "StreamingClassifier",
    "draw_strip",
    "run_stream",
    "stream_report",
    "stream_video",
    "summarize",
    "verdict",
]


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
        paced: frames arrived at the source's frame rate (a camera, or a file played in
            real time), so the latency says whether recognition keeps up.
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
    paced: bool = True


def _open_source(source):
    """Returns (capture, fps, is_camera, announced frame count) of a file or camera index."""
    is_camera = isinstance(source, int) or (isinstance(source, str) and source.isdigit())
    if not is_camera and not pathlib.Path(source).is_file():
        missing = "does not exist" if not pathlib.Path(source).exists() else "is not a file"
        raise VideoReadError(
            source, f"the video could not be opened: it {missing}; give a video file path"
        )
    capture = cv2.VideoCapture(int(source)) if is_camera else cv2.VideoCapture(str(source))
    if not capture.isOpened():
        problem = (
            f"camera {int(source)} could not be opened: no camera with that index, or it is "
            "busy; give another camera index or a video file"
            if is_camera
            else "the video could not be opened: not a video OpenCV can decode"
        )
        raise VideoReadError(source, problem)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    count = 0 if is_camera else int(max(capture.get(cv2.CAP_PROP_FRAME_COUNT), 0))
    return capture, (fps if np.isfinite(fps) and fps > 0 else 25.0), is_camera, count


def _sliding_windows(segment_len, hop):
    """Yields the frame indices of consecutive windows: `segment_len` frames every `hop`."""
    start = 0
    while True:
        yield np.arange(start, start + segment_len)
        start += hop


def _segment_reader(capture, windows, finite, transform, out_queue, stop, pace_fps):
    """Reads frames, keeps those the next windows need, and queues each complete window.

    Queues (index, frames (L, S, S, 3), frames read, read time) per window, then None. A
    file that ends before a finite schedule's last windows fills them with its last frame.
    A finite schedule (a file cut as extraction cuts it) may revisit frames ('loop' and
    'overlap' windows of a short video): every frame a later window needs is kept.
    """
    schedule = list(windows) if finite else None
    windows = iter(schedule) if finite else windows
    kept, frame_index, segment_index, last = {}, 0, 0, None
    window = next(windows, None)
    needed = _needed(schedule, 0, window)
    started = time.perf_counter()
    while window is not None and not stop.is_set():
        ok, frame = capture.read()
        if not ok:
            break
        if pace_fps:  # Play a file at its own speed, as a camera would deliver it.
            delay = started + frame_index / pace_fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        if needed(frame_index):
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)[None]
            last = kept[frame_index] = transform(rgb)[0]
        frame_index += 1
        while window is not None and frame_index > window.max():
            frames = np.stack([kept[i] for i in window])
            out_queue.put((segment_index, frames, frame_index, time.perf_counter()))
            segment_index, window = segment_index + 1, next(windows, None)
            needed = _needed(schedule, segment_index, window)
            kept = {i: f for i, f in kept.items() if needed(i)}
    while finite and window is not None and last is not None:
        frames = np.stack([kept.get(i, last) for i in window])
        out_queue.put((segment_index, frames, frame_index, time.perf_counter()))
        segment_index, window = segment_index + 1, next(windows, None)
    out_queue.put(None)


def _needed(schedule, position, window):
    """Returns a test of which frame indices the windows from `position` on still need."""
    if window is None:
        return lambda index: False
    if schedule is None:  # sliding windows only move forward
        first = int(window.min())
        return lambda index: index >= first
    indices = {int(i) for later in schedule[position:] for i in np.ravel(later)}
    return indices.__contains__


def _stack_transform(spec):
    """`reader.frame_transform` of a spec for a stack of one frame (1, H, W, 3)."""
    one = frame_transform(spec)
    return lambda stack: one(stack[0])[None]


def _live_scorer(classifier, segment_len, frame_size):
    """Returns score(uint8 frames (L, S, S, 3)) -> the current class probabilities.

    A clip classifier's current prediction is the running mean of its segments'
    probabilities; a Res-LSTM head steps with carried states after the backbone. The
    functions are traced here, before any clock starts, so the first latency is a real one.
    """
    model = classifier.model
    warm = tf.zeros((1, segment_len, frame_size, frame_size, 3))
    if classifier.takes_frames:
        forward = tf.function(lambda x: tf.nn.softmax(model(x, training=False)))
        forward(warm)
        running, count = None, 0

        def score(frames):
            nonlocal running, count
            p = forward(tf.constant(to_float(frames)[None])).numpy()[0]
            count += 1
            running = p if running is None else running + (p - running) / count
            return running

        return score
    if classifier.end_to_end:  # a fine-tuned entry: its own backbone, then its own head
        if isinstance(model.input, dict):
            raise ValueError(
                "streaming reads RGB frames; a two-stream video classifier needs flow. "
                "Received: a two-stream model"
            )
        backbone = model.get_layer("segment_encoder").backbone
        model = model.get_layer("head")
    else:
        backbone = feature_model(classifier.spec.backbone, "rgb")
    features_of = tf.function(lambda x: backbone(x, training=False))
    stream = StreamingClassifier(model)
    step = stream.tf_function()
    states = stream.initial_states(1)
    step(features_of(warm), states)

    def score(frames):
        nonlocal states
        out = step(features_of(tf.constant(to_float(frames)[None])), states)
        states = out["states"]
        return out["probabilities"].numpy()[0]

    return score


def _reporting_errors(reader):
    """Wraps a reader thread so that an error it raises is queued for the consumer."""

    def run(capture, windows, finite, transform, out_queue, stop, pace_fps):
        try:
            reader(capture, windows, finite, transform, out_queue, stop, pace_fps)
        except Exception as error:  # noqa: BLE001 - handed to the consumer, which raises it
            out_queue.put(error)

    return run


def _segments(capture, windows, transform, pace, is_camera):
    """Yields (segment item, segments dropped so far) from a reader thread; releases `capture`.

    `windows` is an array (K, L) of frame indices (a file sampled as extraction samples it)
    or an endless iterator of sliding windows (`_sliding_windows`).

    Behind a live camera the oldest waiting segments are skipped, so each yield is the newest.
    """
    waiting, stop = queue.Queue(), threading.Event()
    reader = threading.Thread(
        target=_reporting_errors(_segment_reader),
        args=(capture, iter(windows), isinstance(windows, np.ndarray), transform, waiting)
        + (stop, pace),
        daemon=True,
    )
    reader.start()
    dropped = 0
    try:
        while True:
            item = waiting.get()
            while is_camera and waiting.qsize() > 1 and item is not None:
                dropped += 1
                item = waiting.get()
            if item is None:
                return
            if isinstance(item, BaseException):  # the reader failed: fail here, not hang
                raise item
            yield item, dropped
    finally:
        stop.set()
        capture.release()


def stream_video(
    source,
    classifier,
    segment_len=None,
    frame_size=None,
    hop=None,
    top_k=3,
    realtime=None,
    max_segments=None,
):
    """Recognises actions while a video plays; yields a `StreamEvent` per segment.

    A reader thread decodes frames (from a file or a camera index), resized and
    cropped as extraction does. A file with the entry's segment length and hop is cut
    into the K_v windows extraction cuts from it (`reslstm_tf.data.sampling`, the
    entry's short-video policy, 'overlap' by default), so after the last segment the
    prediction is `reslstm_tf.predict.predict_video`'s; a camera, or a file with
    `segment_len` or `hop` given, uses a sliding window: every `hop` frames the last
    `segment_len` frames. Each segment goes through the backbone and, for a Res-LSTM
    head, one recurrent step with carried states, so the prediction is always the
    current one. For a clip classifier (the
    `kinetics400_i3d` entry) the prediction is the running mean of the segments'
    probabilities. If the consumer falls behind a camera, the oldest waiting
    segments are dropped and counted (`StreamEvent.dropped`).

    Args:
        source: video path, or a camera index (int or digit string).
        classifier: a `reslstm_tf.predict.Classifier`, e.g.
            `reslstm_tf.predict.load_classifier("kinetics400_i3d")`.
        segment_len: frames per segment; default the entry's (smaller: lower latency).
        frame_size: square crop side; default the entry's (smaller: faster backbone).
        hop: frames between predictions of a sliding window; default `segment_len`.
        top_k: ranked classes per event.
        realtime: pace a file at its frame rate (default: only for cameras, which
            pace themselves).
        max_segments: stop after this many segments.
    """
    if not isinstance(classifier, Classifier):
        raise TypeError(
            "classifier must be a reslstm_tf.predict.Classifier, e.g. "
            "reslstm_tf.predict.load_classifier('kinetics400_i3d'). "
            f"Received: {type(classifier).__name__}"
        )
    if classifier.two_stream:
        raise ValueError(
            f"streaming takes RGB models; {classifier.name!r} is two-stream (it needs optical "
            "flow): classify its videos with reslstm_tf.predict.predict_videos instead"
        )
    sliding = segment_len is not None or hop is not None
    entry_frames = frame_size is None  # the entry's frames: its resize target too
    segment_len = check_positive_int("segment_len", segment_len or classifier.spec.segment_len)
    frame_size = check_positive_int("frame_size", frame_size or classifier.spec.frame_size)
    hop = check_positive_int("hop", hop or segment_len)
    if classifier.takes_frames and (segment_len < 9 or frame_size < 193):
        raise ValueError(
            "the Kinetics-400 I3D head needs segment_len >= 9 and frame_size >= 193. "
            f"Received: segment_len={segment_len}, frame_size={frame_size}"
        )
    capture, fps, is_camera, count = _open_source(source)
    if is_camera or not count or sliding:
        windows = _sliding_windows(segment_len, hop)
    else:  # the K_v windows extraction cuts from the file (the entry's clip spec)
        windows = segment_indices(classifier.spec, count).indices
    try:
        score = _live_scorer(classifier, segment_len, frame_size)
    except BaseException:
        capture.release()
        raise
    pace = fps if (realtime if realtime is not None else is_camera) else None
    # the entry's frames are cut as read_clip cuts them; another size resizes as its spec would
    spec = classifier.spec
    if not entry_frames:
        spec = spec.replace(frame_size=frame_size, resize_short_side=None)
    transform = _stack_transform(spec)
    items = _segments(capture, windows, transform, pace, is_camera)
    try:
        for emitted, ((index, frames, end_frame, read_at), dropped) in enumerate(items, 1):
            started = time.perf_counter()
            current = score(frames)
            done = time.perf_counter()
            order = np.argsort(-current)[:top_k]
            yield StreamEvent(
                index=index,
                start_s=(end_frame - len(frames)) / fps,
                end_s=end_frame / fps,
                ranked=[(classifier.class_names[i], float(current[i])) for i in order],
                latency_ms=(done - read_at) * 1e3,
                compute_ms=(done - started) * 1e3,
                thumbnail=frames[-1],
                dropped=dropped,
                fps=fps,
                paced=pace is not None,
            )
            if max_segments is not None and emitted >= max_segments:
                return
    finally:
        items.close()  # Stops the reader and releases the capture.


def summarize(events, hop):
    """Returns a dict: compute and latency (ms), the segment budget, keeps_up, behind_from.

    A segment spans `hop` frames of video, its budget. When frames arrive at the video's
    rate (`StreamEvent.paced`), recognition keeps up when the p95 latency (last frame read
    to prediction) stays within the budget; otherwise it falls behind from the first
    segment (`behind_from`, from 1) whose latency exceeds the budget, and the latency grows.
    Unpaced (a file read as fast as possible), segments wait in a queue, so the latency
    says nothing: the verdict is the compute time per segment against the budget.
    """
    if not events:
        return {"segments": 0}
    compute = np.array([e.compute_ms for e in events])
    latency = np.array([e.latency_ms for e in events])
    budget_ms = hop / events[0].fps * 1e3
    factor = budget_ms / compute.mean()
    paced = bool(events[0].paced)
    late = np.flatnonzero(latency > budget_ms)
    p95 = float(np.percentile(latency, 95))
    keeps_up = p95 <= budget_ms if paced else factor >= 1.0
    return {
        "segments": len(events),
        "compute_ms_mean": float(compute.mean()),
        "latency_ms_mean": float(latency.mean()),
        "latency_ms_p95": p95,
        "latency_ms_first": float(latency[0]),
        "latency_ms_last": float(latency[-1]),
        "segment_budget_ms": float(budget_ms),
        "realtime_factor": float(factor),
        "paced": paced,
        "keeps_up": bool(keeps_up),
        "behind_from": int(late[0]) + 1 if paced and not keeps_up else None,
        "dropped": int(events[-1].dropped),
    }


def verdict(summary, events):
    """The summary line of `stream_report`: whether recognition keeps up, and from when not."""
    budget = summary["segment_budget_ms"]
    compute = (
        f"compute {summary['compute_ms_mean']:.0f} ms per segment "
        f"({summary['realtime_factor']:.1f}x real time); dropped {summary['dropped']} segments"
    )
    if not summary["paced"]:
        would = "would keep up" if summary["keeps_up"] else "would NOT keep up"
        return (
            f"{would} with real time: {compute} for {budget:.0f} ms of video per segment "
            "(read as fast as possible, so latencies include queueing; play in real time "
            "to measure them)"
        )
    if summary["keeps_up"]:
        return (
            f"keeps up with real time: p95 latency {summary['latency_ms_p95']:.0f} ms within "
            f"the {budget:.0f} ms of video per segment; {compute}"
        )
    first = summary["behind_from"]
    return (
        f"falls behind real time from segment {first} (at {events[first - 1].end_s:.1f} s): "
        f"latency went from {summary['latency_ms_first']:.0f} ms to "
        f"{summary['latency_ms_last']:.0f} ms (p95 {summary['latency_ms_p95']:.0f} ms) against "
        f"{budget:.0f} ms of video per segment; {compute}"
    )


def draw_strip(events, out_png, columns=8):
    """Writes a PNG of the segments' last frames, each titled with its top class."""
    plt = pyplot()
    rows = -(-len(events) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 3.0 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.set_axis_off()
    for axis, event in zip(axes.ravel(), events):
        axis.imshow(event.thumbnail)
        name, p = event.ranked[0]
        axis.set_title(f"{event.end_s:.1f}s {name}\n{p:.0%}, {event.latency_ms:.0f} ms", fontsize=7)
    return save_figure(fig, out_png, dpi=90, pad=1.5)


def stream_report(source, classifier, strip=None, **stream_kwargs):
    """Streams `source`, prints each event and a real-time summary; returns (events, summary).

    Args:
        source: video path or camera index, as in `stream_video`.
        classifier: a `reslstm_tf.predict.Classifier`.
        strip: optional PNG path for `draw_strip`.
        **stream_kwargs: `segment_len`, `frame_size`, `hop`, `top_k`, `realtime`,
            `max_segments`, as in `stream_video`.
    """
    events = []
    for event in stream_video(source, classifier, **stream_kwargs):
        ranked = ", ".join(f"{n} {p:.2f}" for n, p in event.ranked)
        print(
            f"segment {event.index + 1:3d} [{event.start_s:5.1f}-{event.end_s:5.1f} s] "
            f"latency {event.latency_ms:6.0f} ms: {ranked}",
            flush=True,
        )
        events.append(event)
    hop = stream_kwargs.get("hop") or stream_kwargs.get("segment_len")
    summary = summarize(events, hop or classifier.spec.segment_len)
    if summary["segments"]:
        print(verdict(summary, events))
    if strip and events:
        print(f"strip: {draw_strip(events, strip)}")
    return events, summary
