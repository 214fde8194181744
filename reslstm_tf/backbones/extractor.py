"""Segment feature extraction: video segments -> one 3D-CNN feature vector per segment.

`SegmentFeatureExtractor` wraps an I3D (1024-d, Mixed_5c averaged over time and space) or a
C3D (4096-d fc6 or fc7) backbone for the feature extraction tool: it validates segments,
batches them with a fixed batch size (so an XLA-compiled function is traced once per
segment shape) and returns float32 numpy features.
"""

import numpy as np

from reslstm_tf.checks import check_choice, check_positive_int
from reslstm_tf.clip_spec import BACKBONES, CHANNELS, MODALITIES, NATIVE_FRAME_SIZE, ClipSpec

PRECISIONS = ("float32", "mixed_bfloat16")
FEATURE_DIMS = {"i3d": 1024, "c3d": 4096}  # the pooled features of each backbone
C3D_SEGMENT_LEN = 16  # C3D's fc layers fix its clip length
_RANGE_TOLERANCE = 1e-3


def feature_model(backbone="i3d", modality="rgb", weights="kinetics400", c3d_layer="fc6"):
    """Returns the Keras model mapping segments (n, L, S, S, C) to features (n, d).

    Args:
        backbone: "i3d" or "c3d".
        modality: "rgb" (3 channels) or "flow" (2 channels, TV-L1 x and y).
        weights: for I3D "kinetics400" (RGB Kinetics-400 weights; for flow the first
            convolution is cross-modality initialised, no trained flow weights exist), None
            or a `.weights.h5` path; for C3D None or a `.weights.h5` / `.npz` path.
        c3d_layer: "fc6" or "fc7", the C3D feature layer.

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: for an invalid argument, e.g. `weights="kinetics400"` with C3D.
    """
    check_choice("backbone", backbone, BACKBONES)
    check_choice("modality", modality, MODALITIES)
    channels = CHANNELS[modality]
    if backbone == "i3d":
        from reslstm_tf.backbones.i3d import I3D

        return I3D(
            final_endpoint="Mixed_5c",
            pooling="avg",
            in_channels=channels,
            weights=weights,
            name=f"i3d_{modality}_features",
        )
    check_choice("c3d_layer", c3d_layer, ("fc6", "fc7"))
    if weights == "kinetics400":
        raise ValueError(
            "no Kinetics-400 C3D weights are available; pass weights=None (train from "
            "scratch) or the path of converted C3D weights (.weights.h5 or .npz). "
            f"Received: backbone='c3d', weights={weights!r}"
        )
    from reslstm_tf.backbones.c3d import C3D

    return C3D(
        output=c3d_layer, in_channels=channels, weights=weights, name=f"c3d_{modality}_features"
    )


class SegmentFeatureExtractor:
    """Embeds video segments with a 3D CNN: (K, L, H, W, C) in [-1, 1] -> (K, feature_dim).

    Attributes:
        backbone: "i3d" or "c3d".
        modality: "rgb" or "flow".
        feature_dim: int, 1024 for I3D, 4096 for C3D.
        segment_len: int, the default frames per segment (16).
        frame_size: int, the frame side the backbone was trained on (224 I3D, 112 C3D).
            C3D needs exactly 16x112x112 segments; I3D accepts any L >= 1 and any H, W.
        channels: int, 3 for RGB, 2 for flow.
        batch_size: int, segments per forward pass (the last batch is zero-padded).
        precision: "float32" or "mixed_bfloat16".
        model: the underlying `keras.Model`.
    """

    def __init__(
        self,
        backbone="i3d",
        modality="rgb",
        weights="kinetics400",
        batch_size=8,
        jit_compile="auto",
        segment_len=None,
        c3d_layer="fc6",
        precision="float32",
    ):
        """Builds the backbone and its compiled forward function.

        Args:
            backbone: "i3d" or "c3d".
            modality: "rgb" or "flow".
            weights: see `feature_model`.
            batch_size: positive int, segments per forward pass.
            jit_compile: bool or "auto", compile the forward pass with XLA. "auto"
                (the default) compiles on GPU only: on CPU, TensorFlow's oneDNN
                kernels without XLA were about 5x faster for I3D in `bench/backbone.py`.
            segment_len: optional int, frames per segment (default 16;
                C3D allows only 16).
            c3d_layer: "fc6" or "fc7" for C3D.
            precision: "float32", or "mixed_bfloat16" (float32 weights, bfloat16
                compute; features are returned as float32). On a CPU with native
                bfloat16 (AVX512_BF16, AMX) I3D runs about 1.6x faster; on the real
                cricket clip P("playing cricket") moves from 0.9886 to 0.9869, and the
                features by ~1e-2 relative (`bench/backbone.py`).

        Raises:
            ValueError: for an invalid argument.
        """
        import tensorflow as tf

        check_choice("backbone", backbone, BACKBONES)
        check_choice("modality", modality, MODALITIES)
        batch_size = check_positive_int("batch_size", batch_size)
        self.backbone = backbone
        self.modality = modality
        self.feature_dim = FEATURE_DIMS[backbone]
        self.frame_size = NATIVE_FRAME_SIZE[backbone]
        self.channels = CHANNELS[modality]
        self.batch_size = batch_size
        if jit_compile == "auto":
            jit_compile = bool(tf.config.list_physical_devices("GPU"))
        self.jit_compile = bool(jit_compile)
        if segment_len is None:
            segment_len = ClipSpec.segment_len  # the clip spec's default
        segment_len = check_positive_int("segment_len", segment_len)
        if backbone == "c3d" and segment_len != C3D_SEGMENT_LEN:
            raise ValueError(
                f"C3D takes segments of exactly {C3D_SEGMENT_LEN} frames. "
                f"Received: segment_len={segment_len!r}"
            )
        self.segment_len = segment_len
        check_choice("precision", precision, PRECISIONS)
        self.precision = precision
        from reslstm_tf.precision import dtype_policy

        with dtype_policy(precision):
            self.model = feature_model(backbone, modality, weights, c3d_layer)
        model = self.model
        self._forward = tf.function(
            lambda x: tf.cast(model(x, training=False), tf.float32), jit_compile=self.jit_compile
        )

    def _validate(self, array, name):
        """Checks one (K, L, H, W, C) array; returns it as float32."""
        if array.ndim != 5:
            raise ValueError(
                f"{name} must have rank 5 (segments, frames, height, width, channels) or be a "
                f"list of rank-4 (frames, height, width, channels) arrays. Received: "
                f"{name} with shape {array.shape}"
            )
        if array.shape[-1] != self.channels:
            raise ValueError(
                f"{name} must have {self.channels} channels for modality={self.modality!r} "
                f"(rgb: 3, flow: 2). Received: {name} with shape {array.shape}"
            )
        if 0 in array.shape:
            raise ValueError(
                f"{name} is empty: every dimension must be >= 1. Received: {name} with shape "
                f"{array.shape}"
            )
        expected = (self.frame_size, self.frame_size)
        if self.backbone == "c3d" and (array.shape[2:4] != expected or array.shape[1] != 16):
            raise ValueError(
                f"C3D segments must be 16 frames of 112x112 pixels. Received: {name} with "
                f"shape {array.shape}"
            )
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(
            array.dtype, np.complexfloating
        ):
            raise ValueError(f"{name} must be real numbers. Received: dtype {array.dtype}")
        array = np.asarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise ValueError(
                f"{name} must hold finite pixel values in [-1, 1]. Received: {bad} NaN or "
                f"infinite values in {name} with shape {array.shape}"
            )
        low, high = float(array.min()), float(array.max())
        if low < -1.0 - _RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
            raise ValueError(
                f"{name} must be scaled to [-1, 1] (e.g. pixels / 127.5 - 1). Received: values "
                f"in [{low:g}, {high:g}]"
            )
        return array

    def _embed(self, array):
        """Runs the model over (K, L, H, W, C) float32 in fixed-size batches."""
        count = array.shape[0]
        out = np.empty((count, self.feature_dim), dtype=np.float32)
        for start in range(0, count, self.batch_size):
            chunk = array[start : start + self.batch_size]
            size = chunk.shape[0]
            if size < self.batch_size:
                pad = np.zeros((self.batch_size - size,) + chunk.shape[1:], dtype=np.float32)
                chunk = np.concatenate([chunk, pad], axis=0)
            out[start : start + size] = np.asarray(self._forward(chunk))[:size]
        return out

    def __call__(self, segments):
        """Returns the features of `segments`.

        Args:
            segments: float32 array (K, L, H, W, C) in [-1, 1], or a list of K arrays
                (L, H, W, C) (they may differ in shape for I3D; equal shapes are batched
                together).

        Returns:
            float32 numpy array (K, feature_dim).

        Raises:
            ValueError: for a wrong rank or channel count, an empty input, non-finite or
                out-of-range values, or (C3D) a segment that is not 16x112x112.
        """
        if isinstance(segments, (list, tuple)):
            if not segments:
                raise ValueError("segments is empty: received an empty list; need K >= 1")
            arrays = []
            for index, segment in enumerate(segments):
                segment = np.asarray(segment)
                if segment.ndim != 4:
                    raise ValueError(
                        f"segments[{index}] must have rank 4 (frames, height, width, channels). "
                        f"Received: segments[{index}] with shape {segment.shape}"
                    )
                arrays.append(self._validate(segment[None], f"segments[{index}]")[0])
            out = np.empty((len(arrays), self.feature_dim), dtype=np.float32)
            groups = {}
            for index, segment in enumerate(arrays):
                groups.setdefault(segment.shape, []).append(index)
            for indices in groups.values():
                out[indices] = self._embed(np.stack([arrays[i] for i in indices]))
            return out
        return self._embed(self._validate(np.asarray(segments), "segments"))
