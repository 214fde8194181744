"""read_clip: the one decoder of a clip for a `ClipSpec`, and its TensorFlow twin.

Every path that cuts clips from a video file goes through `read_clip`: extraction
(`reslstm_tf.extract`), prediction and ``reslstm-classify`` (`reslstm_tf.predict`),
streaming a file (`reslstm_tf.streaming`, through `frame_transform` and `segment_indices`,
frame by frame), fine-tuning and the study (`reslstm_tf.data.clips.VideoClips`). For one spec
they give the same uint8 frames, byte for byte. `read_clip_tf` is the same cut in TensorFlow
ops, for a SavedModel's ``serve_video`` (equal within one grey level after resizing:
`reslstm_tf.data.video.transform_frames_tf`).

A clip is read in one opening of the file: the header gives the frame count, the sampler
(`reslstm_tf.data.sampling.sample_segments`, with the spec's short-video policy) picks the
frames, each distinct frame is resized (shorter side to `ClipSpec.short_side`) and cropped
(centred in eval mode, one random window in train mode) as it is decoded. When the container
over-announced its length the segments are re-sampled for the real count.

Randomness (train mode) comes only from the `rng` given; `reslstm_tf.data.clips` draws it per
(seed, epoch, video), the one randomness policy of the package.
"""

import dataclasses

import numpy as np

from reslstm_tf.checks import check_choice
from reslstm_tf.clip_spec import ClipSpec
from reslstm_tf.data import flow as flow_lib
from reslstm_tf.data import sampling, video


@dataclasses.dataclass(frozen=True)
class Clip:
    """The clip `read_clip` cut from one video.

    Attributes:
        frames: RGB: uint8 (K_v, L, S, S, 3); flow: float32 (K_v, L, S, S, 2) in [-1, 1].
        sample: the `sampling.SegmentSample` (its `num_frames` is the real count when the
            container over-announced it).
        info: the `video.VideoInfo` of the file's header.
        spec: the `ClipSpec` it was cut for.
    """

    frames: np.ndarray
    sample: object
    info: object
    spec: ClipSpec

    def as_float(self):
        """The clip as network input: float32 in [-1, 1] (RGB scaled, flow as it is)."""
        if self.frames.dtype == np.uint8:
            return video.to_float(self.frames)
        return self.frames.astype(np.float32, copy=False)


def frame_transform(spec, mode="eval", rng=None):
    """The per-frame transform of a spec: resize the shorter side, then crop, as uint8.

    The crop window is drawn on the first frame (centred in eval mode, random in train mode)
    and kept for every later frame, as `video.crop` does for a stack of frames.

    Args:
        spec: a `ClipSpec`.
        mode: 'train' (random window) or 'eval' (centred).
        rng: a numpy Generator for the train-mode window.

    Returns:
        A function uint8 (H, W, C) -> uint8 (S, S, C).
    """
    check_choice("mode", mode, sampling.MODES)
    crop_mode = "random" if mode == "train" else "center"
    short_side, size = spec.short_side, spec.frame_size
    window = []

    def transform(frame):
        frame = video.resize_short_side(frame, short_side)
        if not window:
            window.extend(video.crop_offsets(*frame.shape[:2], size, crop_mode, rng))
        top, left = window
        # a copy, so the full frame's memory is freed (and reused) at once
        return frame[top : top + size, left : left + size].copy()

    return transform


def segment_indices(spec, num_frames, mode="eval", rng=None, *, num_steps=None, stride=1):
    """The frames a spec samples from a video of `num_frames`: a `sampling.SegmentSample`."""
    return sampling.sample_segments(
        num_frames,
        spec.num_segments,
        spec.frames_per_segment,
        mode=mode,
        num_steps=num_steps,
        stride=stride,
        short=spec.short,
        seed=rng,
    )


def read_clip(path, spec, mode="eval", rng=None, *, threads=None, stride=1, num_steps=None):
    """Decodes the clip a `ClipSpec` cuts from one video file.

    Args:
        path: the video file.
        spec: a `ClipSpec` (segments, frames, size, resize, short-video policy, modality).
        mode: 'train' (random windows and crop) or 'eval' (centred, deterministic).
        rng: None, an int seed or a numpy Generator, for the train-mode choices.
        threads: decoder threads (None: OpenCV's choice; 1: this thread).
        stride: temporal stride between the frames of a segment.
        num_steps: T, for the sample's LSTM step map (default K_v).

    Returns:
        A `Clip`.

    Raises:
        VideoReadError: the file is missing, empty or not a video.
    """
    check_choice("mode", mode, sampling.MODES)
    rng = np.random.default_rng(rng)
    samples = []  # the samples drawn: the header's count first

    def sample(count):
        samples.append(segment_indices(spec, count, mode, rng, num_steps=num_steps, stride=stride))
        return samples[-1]

    # Each distinct frame is resized and cropped as it is decoded (short videos repeat
    # frames), and the reader gathers the crops straight into the clip's order.
    crop = frame_transform(spec, mode, rng)
    try:  # one opening of the file: header, sampling, decoding
        info, frames = video.read_clip(
            path, lambda count: sample(count).indices, threads=threads, transform=crop
        )
    except video.VideoTooShortError as err:
        info, frames = _reread_shorter(path, err, sample(err.decoded_frames), crop, threads)
    frames = frames.reshape((spec.num_segments, spec.frames_per_segment) + frames.shape[1:])
    if spec.modality == "flow":
        frames = flow_lib.segment_flow(frames, spec.flow_method).astype(np.float32, copy=False)
    return Clip(frames, samples[-1], info, spec)


def _reread_shorter(path, err, sample, crop, threads):
    """(info, frames) of a file that over-announced its length, for the re-drawn `sample`.

    The frames the first pass decoded are reused; only the others are read again.
    """
    info = video.probe(path, decode_first=False)
    if info.frame_count <= 0:  # as video.read_clip: counted by decoding
        info = video.probe(path, count_frames=True)
    need = sorted({int(i) for i in sample.indices.flat} - set(err.frames))
    have = dict(err.frames)
    if need:
        more = video.read_frames(path, need, on_missing="last", threads=threads, transform=crop)
        have.update(zip(need, more))
    return info, np.stack([have[int(i)] for i in sample.indices.flat])


def read_clip_tf(frames, spec):
    """`read_clip` in eval mode in TensorFlow ops, on already decoded frames.

    The frames `sampling.sample_segments` picks for N frames (the spec's policy), their
    shorter side resized to `ClipSpec.short_side` and centre-cropped to `frame_size`
    (`video.transform_frames_tf` says where a pixel may differ by one grey level). Only
    TensorFlow ops: an exported graph runs it without reslstm_tf.

    Args:
        frames: uint8 tensor (B, N, H, W, 3), N >= 1.
        spec: an RGB `ClipSpec`.

    Returns:
        float32 tensor (B, K_v, L, S, S, 3) in [-1, 1] (uint8 / 127.5 - 1).
    """
    import tensorflow as tf

    if spec.modality != "rgb":
        raise ValueError(f"read_clip_tf cuts RGB clips. Received: modality={spec.modality!r}")
    k, length, size = spec.num_segments, spec.segment_len, spec.frame_size
    shape = tf.shape(frames)
    batch, count = shape[0], shape[1]
    indices = sampling.eval_indices_tf(count, k, length, short=spec.short)
    picked = tf.gather(frames, tf.reshape(indices, [-1]), axis=1)
    flat = tf.reshape(picked, tf.concat([[-1], shape[2:]], axis=0))
    segments = video.transform_frames_tf(flat, short_side=spec.short_side, crop_size=size)
    return tf.reshape(segments, [batch, k, length, size, size, 3])
