"""Data: video decoding, segment sampling, optical flow, split lists, feature cache, tf.data.

Importing this package does not import TensorFlow; `pipeline`, `feature_cache` and
`feature_sets` do, on first use of their names.
"""

from reslstm_tf.data.datasets import (
    SplitFileError,
    VideoItem,
    VideoList,
    folder,
    hmdb51,
    load_class_names,
    load_dataset,
    ucf101,
)
from reslstm_tf.data.flow import compute_flow, flow_stack, scale_flow, segment_flow
from reslstm_tf.data.sampling import SegmentSample, sample_segments, step_segment_map
from reslstm_tf.data.video import (
    VideoInfo,
    VideoReadError,
    VideoTooShortError,
    crop,
    probe,
    read_clip,
    read_frames,
    resize_short_side,
    to_float,
    transform_frames,
)

_LAZY = {
    "FeatureCacheWriter": "feature_cache",
    "read_features": "feature_cache",
    "read_index": "feature_cache",
    "tfrecord_dataset": "feature_cache",
    "cache_dataset": "feature_sets",
    "load_feature_set": "feature_sets",
    "load_clip": "pipeline",
    "video_dataset": "pipeline",
}


def __getattr__(name):
    """Imports the TensorFlow-based names on first use."""
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"reslstm_tf.data.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'reslstm_tf.data' has no attribute {name!r}")


__all__ = [
    "FeatureCacheWriter",
    "SegmentSample",
    "SplitFileError",
    "VideoInfo",
    "VideoItem",
    "VideoList",
    "VideoReadError",
    "VideoTooShortError",
    "compute_flow",
    "crop",
    "cache_dataset",
    "flow_stack",
    "folder",
    "hmdb51",
    "load_class_names",
    "load_clip",
    "load_dataset",
    "load_feature_set",
    "probe",
    "read_features",
    "read_clip",
    "read_frames",
    "read_index",
    "resize_short_side",
    "sample_segments",
    "scale_flow",
    "segment_flow",
    "step_segment_map",
    "tfrecord_dataset",
    "to_float",
    "transform_frames",
    "ucf101",
    "video_dataset",
]
