"""tf.data input pipelines: clips decoded from videos.

``load_clip`` is the numpy function for one video (probe, sample segments, sparse decode,
resize/crop, scale to [-1, 1], optional optical flow); ``video_dataset`` runs it in parallel
inside ``tf.data`` (``tf.numpy_function``, ``num_parallel_calls=AUTOTUNE``, prefetch).
Cached segment features are read by `reslstm_tf.data.feature_sets`.
"""

import logging
import os

import numpy as np
import tensorflow as tf

from reslstm_tf.checks import check_choice
from reslstm_tf.clip_spec import spec_of
from reslstm_tf.data import sampling, video
from reslstm_tf.data.clips import clip_rng, epoch_order, video_items
from reslstm_tf.data.reader import read_clip

MODALITIES = ("rgb", "flow")
DTYPES = ("float32", "uint8")
logger = logging.getLogger(__name__)


def load_clip(
    path,
    num_segments,
    segment_len,
    *,
    mode="eval",
    short_side=None,
    seed=None,
    return_info=False,
    dtype="float32",
    threads=None,
    stride=1,
    num_steps=None,
    **clip_fields,
):
    """Decodes the K_v segments of one video as network input (`reader.read_clip`).

    The `ClipSpec` of the arguments (None: the spec's default) cut by `reader.read_clip`,
    then scaled for the network.

    Args:
        path: the video file.
        num_segments: K_v.
        segment_len: L frames per segment (for 'flow', L flow fields from L + 1 frames).
        mode: 'train' (random offsets, random crop) or 'eval' (centred, centre crop).
        short_side: resize the shorter side to this first (default: S * 256 / 224).
        seed: int, numpy Generator or None, for the train-mode randomness.
        return_info: also return the `video.VideoInfo` (frame count as announced).
        dtype: 'float32' scales RGB to [-1, 1]; 'uint8' returns the RGB bytes (0-255) for
            scaling on the device (`video.to_float_tf`): a quarter of the host memory
            traffic. Flow is always float32.
        threads: decoder threads (None: OpenCV's choice, one per core; 1: this thread).
        stride: temporal stride between frames of a segment.
        num_steps: T for the returned sample's step map.
        **clip_fields: the clip's other `ClipSpec` fields (None: the spec's default):
            `frame_size` S, `modality` 'rgb' (3 channels) or 'flow' (2, in [-1, 1]),
            `flow_method`, `short` (the short-video policy).

    Returns:
        (clip, sample): float32 (K_v, L, S, S, C) in [-1, 1] (uint8 RGB with
        ``dtype="uint8"``), and the `SegmentSample`
        (whose ``num_frames`` is the real count if the container over-announced it);
        (clip, sample, info) with `return_info`.
    """
    spec = spec_of(
        num_segments=num_segments, segment_len=segment_len, resize_short_side=short_side,
        **clip_fields,
    )  # fmt: skip
    _check_output(spec.modality, dtype)
    clip = read_clip(path, spec, mode, seed, threads=threads, stride=stride, num_steps=num_steps)
    frames = clip.frames if dtype == "uint8" else clip.as_float()
    if return_info:
        return frames, clip.sample, clip.info
    return frames, clip.sample


def _check_output(modality, dtype):
    """Raises ValueError for an unknown modality or dtype, or uint8 flow."""
    check_choice("modality", modality, MODALITIES)
    check_choice("dtype", dtype, DTYPES)
    if modality == "flow" and dtype != "float32":
        raise ValueError(f"flow clips are float32. Received: dtype={dtype!r}")


def video_dataset(
    items,
    data_dir,
    num_segments,
    segment_len,
    *,
    mode="eval",
    batch_size=None,
    shuffle=None,
    seed=0,
    epoch=0,
    on_error="raise",
    num_parallel_calls=None,
    dtype="float32",
    **clip_kwargs,
):
    """Builds a tf.data pipeline of (clip, label) from video files, for one epoch.

    Randomness follows the package's one policy (`reslstm_tf.data.clips.clip_rng`): video i
    of the list is cut with the generator of (seed, epoch, i) and a shuffled epoch's order is
    `clips.epoch_order(seed, epoch, N)`, so a dataset is the same however often it is
    iterated, and another epoch gets other clips by passing another `epoch`.

    Args:
        items: a `datasets.VideoList` or (relative path, label, ...) tuples.
        data_dir: folder the relative paths are under.
        num_segments: K_v.
        segment_len: L.
        mode: 'train' or 'eval' (see `load_clip`).
        batch_size: batch the output (None: unbatched).
        shuffle: shuffle the video order (default: True in train mode).
        seed: the seed of the order and of the train-mode sampling and cropping.
        epoch: the epoch whose order and clips to read.
        on_error: 'raise' stops on an unreadable video; 'skip' logs and drops it.
        num_parallel_calls: decode parallelism (default tf.data.AUTOTUNE).
        dtype: 'float32' (in [-1, 1]) or 'uint8' RGB clips, a quarter of the bytes, to
            scale on the device with `video.to_float_tf` (see `load_clip`).
        **clip_kwargs: the clip's other settings, passed to `load_clip`: `frame_size`,
            `short_side`, `modality`, `flow_method`, `short`, `stride`, `threads`.

    Returns:
        A `tf.data.Dataset` of (`dtype` (K_v, L, S, S, C), int32 label), prefetched.

    Example:
        ```python
        ds = video_dataset(items, root, 8, 16, dtype="uint8", batch_size=8)
        for clips, labels in ds:
            clips = video.to_float_tf(clips)  # on the GPU, after the copy
        ```
    """
    check_choice("on_error", on_error, ("raise", "skip"))
    check_choice("mode", mode, sampling.MODES)
    modality = clip_kwargs.get("modality", "rgb")
    _check_output(modality, dtype)
    paths, labels = video_items(items)
    labels = labels.astype(np.int32)
    paths = [os.path.join(os.fspath(data_dir), p) for p in paths]
    fields = {k: clip_kwargs.get(k) for k in ("frame_size", "modality", "flow_method", "short")}
    shape = spec_of(num_segments=num_segments, segment_len=segment_len, **fields).shape
    shuffle = mode == "train" if shuffle is None else shuffle
    order = epoch_order(seed, epoch, len(paths)) if shuffle else np.arange(len(paths))

    def _load(index):
        path = paths[int(index)]
        try:
            clip, _ = load_clip(
                path,
                num_segments,
                segment_len,
                mode=mode,
                seed=clip_rng(seed, epoch, index),
                dtype=dtype,
                **clip_kwargs,
            )
            return clip, np.bool_(True)
        except (video.VideoReadError, ValueError) as err:
            if on_error == "raise":
                raise
            logger.warning("skipping unreadable video: %s", err)
            return np.zeros(shape, dtype), np.bool_(False)

    def _map(index, label):
        clip, ok = tf.numpy_function(_load, [index], (tf.as_dtype(dtype), tf.bool), stateful=False)
        clip.set_shape(shape)
        ok.set_shape(())
        return clip, label, ok

    ds = tf.data.Dataset.from_tensor_slices((order.astype(np.int64), labels[order]))
    ds = ds.map(_map, num_parallel_calls=num_parallel_calls or tf.data.AUTOTUNE)
    if on_error == "skip":
        ds = ds.filter(lambda clip, label, ok: ok)
    ds = ds.map(lambda clip, label, ok: (clip, label))
    if batch_size:
        ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)
