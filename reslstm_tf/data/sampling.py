"""Segment sampling: which frames feed the 3D CNN, and how LSTM steps map onto segments.

A video of ``n`` frames is split into ``K_v`` equal parts (segment-based sampling, TSN,
Wang et al. 2016). From part ``k`` we take one window of ``segment_len`` frames (``stride``
apart, so a window spans ``(segment_len - 1) * stride + 1`` frames):

* ``mode='train'``: the window starts at a uniformly random offset inside part ``k``;
* ``mode='eval'``: the window is centred in part ``k`` (deterministic).

When the video is shorter than ``K_v`` windows (``n < K_v * span``), ``short`` decides:

* ``'loop'`` (`ClipSpec`'s default, as the kinetics-i3d recipe): the video is played in a loop to a
  virtual length of ``K_v * span`` frames; frame ``i`` of the loop is ``i % n``. In train mode
  the loop starts at a random phase.
* ``'pad'``: the virtual video is the real one followed by copies of its last frame.
* ``'overlap'``: windows overlap, centred on the parts' centres and clipped to the video;
  a video shorter than one window falls back to ``'loop'``.

The LSTM runs ``T`` steps over the ``K_v`` segment features: step ``t`` (0-based) reads
segment ``sigma(t) = floor((t + 0.5) * K_v / T)``, i.e. the segment whose part contains the
centre of the ``t``-th of ``T`` equal slices of the video. With ``T == K_v`` this is the
identity, ``T > K_v`` repeats segments (each about ``T / K_v`` times, in order), and
``T < K_v`` takes ``T`` evenly spaced segments. ``sigma`` is non-decreasing.
"""

import dataclasses

import numpy as np

from reslstm_tf.checks import check_choice, check_positive_int
from reslstm_tf.clip_spec import SHORT_POLICIES

MODES = ("train", "eval")


@dataclasses.dataclass(frozen=True)
class SegmentSample:
    """The frames of one video's segments and the LSTM step map.

    Attributes:
        indices: int64 (K_v, segment_len) frame indices, each in [0, num_frames).
        step_map: int64 (T,) segment index read at each LSTM step (``sigma``).
        num_frames: the frame count the sample was drawn for.
        mode: 'train' or 'eval'.
        short: the short-video policy that was in force.
        looped: whether the video was too short and `short` was applied.
    """

    indices: np.ndarray
    step_map: np.ndarray
    num_frames: int
    mode: str
    short: str
    looped: bool


def step_segment_map(num_steps, num_segments):
    """Returns sigma: the segment index (0-based) read at each of `num_steps` LSTM steps.

    Args:
        num_steps: T, the number of LSTM time steps.
        num_segments: K_v, the number of segments (features) per video.

    Returns:
        int64 array (T,), ``floor((t + 0.5) * K_v / T)``; identity when T == K_v.
    """
    num_steps = check_positive_int("num_steps", num_steps)
    num_segments = check_positive_int("num_segments", num_segments)
    steps = np.arange(num_steps, dtype=np.int64)
    return ((2 * steps + 1) * num_segments) // (2 * num_steps)


def _window_starts_long(n, k, span, mode, rng):
    """Window starts when every part of the video holds a full window."""
    bounds = (np.arange(k + 1, dtype=np.int64) * n) // k
    room = bounds[1:] - bounds[:-1] - span  # >= 0
    if mode == "train":
        offsets = rng.integers(0, room + 1)
    else:
        offsets = room // 2
    return bounds[:-1] + offsets


def sample_segments(
    num_frames,
    num_segments,
    segment_len,
    *,
    mode="eval",
    num_steps=None,
    stride=1,
    short,
    seed=None,
):
    """Samples `num_segments` windows of `segment_len` frames spread over a video.

    Args:
        num_frames: n, the number of frames in the video (>= 1).
        num_segments: K_v.
        segment_len: L, frames per segment (e.g. 16 for C3D, 64 for I3D; for optical flow
            ask for L + 1 frames to get L flow fields).
        mode: 'train' (random offset inside each part) or 'eval' (centred, deterministic).
        num_steps: T, LSTM steps for `SegmentSample.step_map`; default K_v.
        stride: temporal stride between the frames of a window.
        short: 'loop', 'pad' or 'overlap': what to do when n < K_v * span (module doc).
        seed: None, an int, or a `numpy.random.Generator` (used in train mode only).

    Returns:
        A `SegmentSample`.
    """
    check_choice("mode", mode, MODES)
    check_choice("short", short, SHORT_POLICIES)
    n = check_positive_int("num_frames", num_frames)
    k = check_positive_int("num_segments", num_segments)
    length = check_positive_int("segment_len", segment_len)
    stride = check_positive_int("stride", stride)
    steps = k if num_steps is None else num_steps
    rng = np.random.default_rng(seed) if mode == "train" else None
    span = (length - 1) * stride + 1
    within = np.arange(length, dtype=np.int64) * stride
    looped = n < k * span
    if not looped:
        starts = _window_starts_long(n, k, span, mode, rng)
        indices = starts[:, None] + within[None, :]
    elif short == "overlap" and n >= span:
        centres = (2 * np.arange(k, dtype=np.int64) + 1) * n // (2 * k)
        starts = np.clip(centres - span // 2, 0, n - span)
        if mode == "train":  # jitter by up to half a part, keeping the window inside
            half = max(n // (2 * k), 0)
            starts = np.clip(starts + rng.integers(-half, half + 1, size=k), 0, n - span)
            starts = np.sort(starts)
        indices = starts[:, None] + within[None, :]
    else:
        virtual = k * span
        starts = _window_starts_long(virtual, k, span, "eval", None)
        indices = starts[:, None] + within[None, :]
        if short == "pad":
            indices = np.minimum(indices, n - 1)
        else:  # loop (also the fallback of 'overlap' for videos shorter than one window)
            phase = int(rng.integers(0, n)) if mode == "train" else 0
            indices = (indices + phase) % n
    return SegmentSample(
        indices=indices.astype(np.int64),
        step_map=step_segment_map(steps, k),
        num_frames=n,
        mode=mode,
        short=short,
        looped=bool(looped),
    )


def eval_indices_tf(num_frames, num_segments, segment_len, *, stride=1, short):
    """Returns `sample_segments(..., mode='eval').indices` computed with TensorFlow ops.

    The same rules as the numpy sampler, for graphs that learn the frame count only at run
    time (a SavedModel's ``serve_video``): the exported graph holds these integer ops, so it
    samples exactly the frames extraction samples, with no Python in the loop.

    Args:
        num_frames: an int or a scalar integer tensor, n >= 1.
        num_segments: K_v, a Python int.
        segment_len: L, a Python int.
        stride: temporal stride between the frames of a window.
        short: 'loop', 'pad' or 'overlap' (module doc).

    Returns:
        int64 tensor (K_v, segment_len) of frame indices in [0, n).
    """
    import tensorflow as tf

    check_choice("short", short, SHORT_POLICIES)
    k = check_positive_int("num_segments", num_segments)
    length = check_positive_int("segment_len", segment_len)
    stride = check_positive_int("stride", stride)
    span = (length - 1) * stride + 1
    n = tf.cast(num_frames, tf.int64)
    within = tf.range(length, dtype=tf.int64) * stride
    parts = tf.range(k, dtype=tf.int64)
    bounds = tf.range(k + 1, dtype=tf.int64) * n // k
    long_starts = bounds[:-1] + (bounds[1:] - bounds[:-1] - span) // 2
    centres = (2 * parts + 1) * n // (2 * k)
    overlap_starts = tf.minimum(tf.maximum(centres - span // 2, 0), n - span)
    looped = n < k * span
    windows = tf.where(looped, overlap_starts, long_starts)[:, None] + within[None, :]
    virtual = parts[:, None] * span + within[None, :]
    fallback = tf.minimum(virtual, n - 1) if short == "pad" else virtual % n
    use_windows = tf.logical_or(~looped, n >= span) if short == "overlap" else ~looped
    return tf.where(use_windows, windows, fallback)
