"""One decoding: every path that cuts clips for a ClipSpec gives the same uint8 frames.

On real clips, for a matrix of specs (short and long clips, 'loop' and 'overlap', 112 and
224 pixels), the frames fed to the network by extraction, prediction (and so
``reslstm-classify``), streaming a file and fine-tuning's evaluation view are byte-identical
to `read_clip`'s, and the SavedModel's `read_clip_tf` is within one grey level.
"""

import keras
import numpy as np
import pytest

from reslstm_tf import streaming
from reslstm_tf.clip_spec import ClipSpec
from reslstm_tf.data import video
from reslstm_tf.data.clips import VideoClips
from reslstm_tf.data.datasets import VideoItem
from reslstm_tf.data.reader import read_clip, read_clip_tf
from reslstm_tf.extract import ExtractConfig, extract
from reslstm_tf.predict import Classifier, VideoPredictor

# Ollie3: 24 frames (shorter than every spec's K_v windows); Kickflip110: 493 frames.
CLIPS = {"short": "Ollie/Ollie3.mp4", "long": "Kickflip/Kickflip110.mp4"}
SPECS = [
    ClipSpec(num_segments=4, segment_len=8, frame_size=112, short="loop"),
    ClipSpec(num_segments=4, segment_len=8, frame_size=112, short="overlap"),
    ClipSpec(num_segments=3, segment_len=16, frame_size=224, short="overlap"),
    ClipSpec(num_segments=3, segment_len=16, frame_size=224, short="loop"),
]


def _as_uint8(clip):
    """The uint8 frames a [-1, 1] float clip was scaled from (x / 127.5 - 1 is invertible)."""
    return np.rint((np.asarray(clip, np.float64) + 1.0) * 127.5).astype(np.uint8)


class _Recorder:
    """A fake backbone that keeps the segments it is given (float32, [-1, 1])."""

    feature_dim = 3

    def __init__(self, spec):
        self.segment_len, self.frame_size, self.seen = spec.segment_len, spec.frame_size, []

    def __call__(self, segments):
        self.seen.append(np.array(segments))
        return np.asarray(segments).mean(axis=(1, 2, 3))


def _frames_classifier(spec):
    """A tiny clip classifier (5D frames in) carrying `spec`, so prediction builds no backbone."""
    inputs = keras.Input((spec.segment_len, spec.frame_size, spec.frame_size, 3))
    pooled = keras.layers.GlobalAveragePooling3D()(inputs)
    return Classifier(keras.Model(inputs, keras.layers.Dense(2)(pooled)), "t", ["a", "b"], spec)


def _head_classifier(spec):
    """A tiny Res-LSTM-shaped head (features in) carrying `spec`, for streaming."""
    inputs = keras.Input((spec.num_segments, 3))
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(inputs))
    return Classifier(keras.Model(inputs, outputs), "h", ["a", "b"], spec)


def _extracted(path, spec, tmp_path):
    recorder = _Recorder(spec)
    config = ExtractConfig(data_dir=path.parent, out_dir=tmp_path / "cache", clip=spec)
    summary = extract(config, videos=[VideoItem(path.name, 0, "x")], extractor=recorder)
    assert summary["done"] == 1, summary
    return _as_uint8(np.concatenate(recorder.seen))


def _streamed(path, spec, monkeypatch):
    seen = []

    def scorer(classifier, segment_len, frame_size):
        return lambda frames: seen.append(np.array(frames)) or np.array([0.5, 0.5])

    monkeypatch.setattr(streaming, "_live_scorer", scorer)
    events = list(streaming.stream_video(str(path), _head_classifier(spec)))
    assert len(events) == spec.num_segments
    return np.stack(seen)


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.frame_size}px-{s.short}")
@pytest.mark.parametrize("length", sorted(CLIPS))
def test_every_path_cuts_the_same_frames(shared_data, tmp_path, monkeypatch, spec, length):
    path = shared_data / "skateboard" / CLIPS[length]
    expected = read_clip(path, spec, "eval")
    frames = expected.frames
    assert frames.dtype == np.uint8 and frames.shape == spec.shape
    assert expected.sample.looped == (length == "short")
    paths = {
        "extract": _extracted(path, spec, tmp_path),
        "predict": _as_uint8(VideoPredictor(_frames_classifier(spec)).decode(str(path))[0]["rgb"]),
        "stream": _streamed(path, spec, monkeypatch),
        "finetune eval view": _as_uint8(
            VideoClips([(path.name, 0)], path.parent, spec).load(0, "eval")[0]
        ),
    }
    for name, got in paths.items():
        assert got.dtype == np.uint8 and got.shape == frames.shape, name
        assert np.array_equal(got, frames), f"{name} cuts other frames than read_clip"
    decoded = video.read_frames(path, np.arange(expected.sample.num_frames))[None]
    served = _as_uint8(read_clip_tf(decoded, spec).numpy()[0])
    difference = np.abs(served.astype(np.int16) - frames.astype(np.int16))
    assert difference.max() <= 1, "serve_video differs by more than one grey level"
