"""3D-CNN backbones that turn video segments into features: I3D, C3D and the extractor.

Importing this package imports `convert`, which installs the I3D weights loader into
`i3d` (the architecture file never imports the converter back).
"""

from reslstm_tf.backbones.c3d import C3D, load_c3d_weights, save_c3d_npz
from reslstm_tf.backbones.convert import (
    CKPT_SHA256,
    SafeUnpickler,
    cross_modality_kernel,
    kinetics400_weights_path,
    load_i3d_weights,
    safe_load_pickle,
)
from reslstm_tf.backbones.extractor import SegmentFeatureExtractor, feature_model
from reslstm_tf.backbones.i3d import I3D, VALID_ENDPOINTS, endpoint_model

__all__ = [
    "C3D",
    "CKPT_SHA256",
    "I3D",
    "VALID_ENDPOINTS",
    "SafeUnpickler",
    "SegmentFeatureExtractor",
    "cross_modality_kernel",
    "endpoint_model",
    "feature_model",
    "kinetics400_class_names",
    "kinetics400_weights_path",
    "load_c3d_weights",
    "load_i3d_weights",
    "safe_load_pickle",
    "save_c3d_npz",
]


def kinetics400_class_names():
    """Returns the 400 Kinetics-400 class names in the order of the I3D logits."""
    from reslstm_tf.assets import asset_path

    path = asset_path("data", "kinetics400_classes.txt")
    return path.read_text(encoding="utf-8").splitlines()
