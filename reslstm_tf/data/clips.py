"""Video clips for fine-tuning: tf.data of (clips, label), reproducible from (seed, epoch).

Fine-tuning a 3D CNN reads clips, not cached features. `VideoClips` cuts them from the videos
of a split, for one stream ("rgb", "flow") or two ("two_stream"):

- ``mode="train"``: a random window in each of the T parts of the video (TSN sampling,
  `sampling.sample_segments`), a random S x S crop and, with `flip`, a horizontal flip with
  probability 1/2 (for flow the horizontal component changes sign: the motion is mirrored);
- ``mode="eval"``: centred windows, the centre crop, no flip.

RGB clips come from `pipeline.load_clip`. Flow clips come from a `FlowCache` (flow computed
once per video, uint8) when one is given, so no epoch recomputes optical flow; without a
cache they are computed by `load_clip` each time (slow: for small tests only).

Every random choice of a video in an epoch is drawn from
``numpy.random.SeedSequence([seed, epoch, index])`` and the order of an epoch from
``[seed, epoch]``: an epoch's clips depend on nothing else, so a training run killed
mid-epoch and restarted reads the very same clips (exact resume), in parallel decoding too.

Example:

    clips = VideoClips(videos, "/data/skate", num_segments=4, segment_len=16, frame_size=112)
    for clip, label in clips.dataset("train", epoch=0).batch(2).take(1):
        print(clip.shape)  # (2, 4, 16, 112, 112, 3)
"""

import os

import numpy as np
import tensorflow as tf

from reslstm_tf.checks import check_choice
from reslstm_tf.clip_spec import ClipSpec
from reslstm_tf.data import sampling, video
from reslstm_tf.data.flow_cache import dequantize
from reslstm_tf.data.reader import read_clip, segment_indices

MODALITIES = ("rgb", "flow", "two_stream")


def clip_rng(seed, epoch, index):
    """The random generator of one video's clip in one epoch: the package's one policy.

    Every random choice of a training clip (window offsets, crop, flip) is drawn from
    ``numpy.random.SeedSequence([seed, epoch, index])``: a function of the run's seed, the
    epoch and the video's position only, so reruns, resumed runs and parallel decoders cut
    the same clips. `epoch_order` draws an epoch's video order the same way.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))


def epoch_order(seed, epoch, count):
    """The video order of a training epoch: a permutation of `count` from (seed, epoch)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)]))
    return rng.permutation(count).astype(np.int64)


def flip_clip(clip, modality):
    """Mirrors clips left to right; flow's horizontal component (channel 0) changes sign.

    Args:
        clip: float array (..., H, W, C).
        modality: "rgb" or "flow".

    Returns:
        The mirrored array (a copy).
    """
    flipped = np.array(clip[..., ::-1, :], copy=True)
    if modality == "flow":
        flipped[..., 0] *= -1.0
    return flipped


def cached_flow_clip(fields, spec, mode="eval", rng=None):
    """Cuts a flow clip out of a video's cached uint8 flow fields.

    The segments of the spec's K_v windows of L fields (the fields are already flow: L of
    them per segment, not L + 1 frames), cropped to the spec's frame size.

    Args:
        fields: uint8 (F, H, W, 2), as `FlowCache.read(video_id, quantized=True)` returns.
        spec: the `ClipSpec` (num_segments, segment_len, frame_size, short).
        mode: "train" (random windows and crop) or "eval" (centred).
        rng: a numpy Generator for the train-mode choices.

    Returns:
        float32 (T, L, S, S, 2) in [-1, 1].

    Raises:
        ValueError: the cached fields are smaller than the crop.
    """
    size = spec.frame_size
    height, width = fields.shape[1:3]
    if min(height, width) < size:
        raise ValueError(
            f"cached flow fields are {height}x{width}, smaller than frame_size={size}; "
            f"fill the flow cache with short_side >= {size}"
        )
    sample = segment_indices(spec.replace(modality="rgb"), len(fields), mode, rng)
    unique, inverse = np.unique(sample.indices, return_inverse=True)
    crop_mode = "random" if mode == "train" else "center"
    picked = video.crop(fields[unique], size, crop_mode, rng)
    clip = dequantize(picked[inverse.reshape(-1)])
    return clip.reshape(spec.num_segments, spec.segment_len, size, size, 2)


def video_items(videos):
    """Returns (relative paths, int64 labels) of a VideoList or (path, label, ...) tuples."""
    pairs = [(v.path, v.label) if hasattr(v, "path") else (v[0], v[1]) for v in videos]
    if not pairs:
        raise ValueError("videos is empty: there are no videos to read")
    paths, labels = zip(*pairs)
    return [os.fspath(p) for p in paths], np.asarray(labels, np.int64)


class VideoClips:
    """The training and evaluation clips of a list of videos (see the module docstring).

    Args:
        videos: a `datasets.VideoList` or (relative path, label, ...) tuples.
        data_dir: the folder the relative paths are under.
        spec: the `ClipSpec` of the clips (default `ClipSpec()`); each stream reads it with
            its own modality.
        modality: "rgb", "flow" or "two_stream" (elements {"rgb": ..., "flow": ...});
            default the spec's.
        flow_cache: a `FlowCache` holding every video's flow (ids = relative paths), or
            None to compute flow on the fly (the spec's flow method).
        flip: flip training clips left to right with probability 1/2.
        seed: the run's seed.
        num_parallel_calls: videos decoded in parallel (default `tf.data.AUTOTUNE`).
        **spec_fields: fields replacing the spec's (`num_segments=4`, `frame_size=112`,
            `short="overlap"`, ...).
    """

    def __init__(
        self,
        videos,
        data_dir,
        spec=None,
        *,
        modality=None,
        flow_cache=None,
        flip=True,
        seed=0,
        num_parallel_calls=None,
        **spec_fields,
    ):
        self.paths, self.labels = video_items(videos)
        self.data_dir = os.fspath(data_dir)
        self.spec = (spec or ClipSpec()).replace(**spec_fields)
        self.modality = check_choice("modality", modality or self.spec.modality, MODALITIES)
        self.flow_cache = flow_cache
        self.flip, self.seed = bool(flip), int(seed)
        self.num_parallel_calls = num_parallel_calls or tf.data.AUTOTUNE

    @property
    def num_segments(self):
        """T, segments per clip (the spec's)."""
        return self.spec.num_segments

    @property
    def segment_len(self):
        """L, frames (flow fields) per segment (the spec's)."""
        return self.spec.segment_len

    @property
    def frame_size(self):
        """S, the crop side (the spec's)."""
        return self.spec.frame_size

    def stream_spec(self, stream):
        """The `ClipSpec` one stream's clips are read with."""
        return self.spec.replace(modality=stream)

    def __len__(self):
        return len(self.paths)

    @property
    def streams(self):
        """The streams of an element: ("rgb",), ("flow",) or ("rgb", "flow")."""
        return ("rgb", "flow") if self.modality == "two_stream" else (self.modality,)

    def shape(self, stream):
        """The (T, L, S, S, C) shape of one stream's clips."""
        return self.stream_spec(stream).shape

    def _stream_clip(self, index, stream, mode, rng):
        """One stream's clip of video `index`."""
        if stream == "flow" and self.flow_cache is not None:
            fields = self.flow_cache.read(self.paths[index], quantized=True)
            return cached_flow_clip(fields, self.spec, mode, rng)
        path = os.path.join(self.data_dir, self.paths[index])
        return read_clip(path, self.stream_spec(stream), mode, rng).as_float()

    def load(self, index, mode="eval", epoch=0):
        """Returns the clips of video `index` in an epoch: a tuple, one array per stream.

        Args:
            index: the video's position in the list.
            mode: "train" or "eval".
            epoch: the epoch (train mode: selects the random choices).
        """
        check_choice("mode", mode, sampling.MODES)
        rng = clip_rng(self.seed, epoch, index)
        flip = mode == "train" and self.flip and rng.random() < 0.5
        clips = []
        for stream in self.streams:
            clip = self._stream_clip(index, stream, mode, rng).astype(np.float32, copy=False)
            clips.append(flip_clip(clip, stream) if flip else clip)
        return tuple(clips)

    def order(self, mode="train", epoch=0):
        """The video order of an epoch: a permutation from (seed, epoch) in train mode."""
        if mode != "train":
            return np.arange(len(self), dtype=np.int64)
        return epoch_order(self.seed, epoch, len(self))

    def _element(self, clips, label):
        if self.modality == "two_stream":
            return dict(zip(self.streams, clips)), label
        return clips[0], label

    def dataset(self, mode="train", epoch=0):
        """Returns the unbatched tf.data of (clips, int64 label) of one epoch, in order.

        Videos are decoded in parallel (`num_parallel_calls`) with deterministic output
        order, and prefetched.
        """
        check_choice("mode", mode, sampling.MODES)
        order = self.order(mode, epoch)
        streams = self.streams

        def load(index):
            return self.load(int(index), mode, epoch)

        def decode(index, label):
            clips = tf.numpy_function(load, [index], [tf.float32] * len(streams), stateful=False)
            for clip, stream in zip(clips, streams):
                clip.set_shape(self.shape(stream))
            return self._element(clips, label)

        data = tf.data.Dataset.from_tensor_slices((order, self.labels[order]))
        data = data.map(decode, num_parallel_calls=self.num_parallel_calls, deterministic=True)
        return data.prefetch(tf.data.AUTOTUNE)

    def placeholder(self):
        """A dataset with the clips' element spec and labels but zero clips (nothing decoded).

        For checks that read every label (the count, the range) without decoding a video.
        """
        streams = self.streams

        def zeros(label):
            return self._element([tf.zeros(self.shape(s), tf.float32) for s in streams], label)

        return tf.data.Dataset.from_tensor_slices(self.labels).map(zeros)


def fill_flow_cache(cache, videos, data_dir, progress=True):
    """Computes the cached flow of every video of a list that has none yet.

    Args:
        cache: a `FlowCache`.
        videos: a `datasets.VideoList` or (relative path, label, ...) tuples; the relative
            path is the video id in the cache.
        data_dir: the folder the relative paths are under.
        progress: show a progress bar.

    Returns:
        The `FlowCache.fill` summary ("computed", "skipped", "failed").
    """
    paths, _ = video_items(videos)
    items = [(path, os.path.join(os.fspath(data_dir), path)) for path in paths]
    return cache.fill(items, progress=progress)
