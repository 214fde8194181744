"""Two-stream fusion layers: element-wise sum, product, weighted sum and concatenation."""

import keras
from keras import ops

from reslstm_tf.checks import check_choice

FUSION_METHODS = ("sum", "product", "weighted", "concat")
FUSION_LEVELS = ("mid", "late")


def check_fusion_method(method):
    """Raises a ValueError naming `method` unless it is one of FUSION_METHODS."""
    return check_choice("fusion", method, FUSION_METHODS)


class _FusionConfig:
    """The config both fusion layers share: their constructor arguments, as attributes."""

    CONFIG_KEYS = ("method", "flow_weight", "rgb_weight", "learnable")

    def _set_config(self, method, flow_weight, rgb_weight, learnable):
        """Checks `method` and keeps the constructor arguments `get_config` returns."""
        check_fusion_method(method)
        # === Config ===
        self.method = method
        self.flow_weight = float(flow_weight)
        self.rgb_weight = float(rgb_weight)
        self.learnable = bool(learnable)

    def get_config(self):
        config = super().get_config()
        config.update({key: getattr(self, key) for key in self.CONFIG_KEYS})
        return config


@keras.saving.register_keras_serializable(package="reslstm_tf")
class StreamFusion(_FusionConfig, keras.layers.Layer):
    """Fuses an RGB and a flow tensor of the same shape element-wise or by concatenation.

    Called on a list `[rgb, flow]` (in that order):

    - `"sum"`: rgb + flow
    - `"product"`: rgb * flow
    - `"weighted"`: flow_weight * flow + rgb_weight * rgb (the paper's w1*Flow +
      w2*RGB); the two weights are fixed, or learned when `learnable=True`.
    - `"concat"`: concatenation on the last axis (output width is the sum of both).

    The layer is level-agnostic: at mid level it fuses segment features or hidden
    states; at late level the builders pass it class probabilities (see
    `LateFusion`).

    Args:
        method: one of "sum", "product", "weighted", "concat". Defaults to "sum".
        flow_weight: float, w1 of the weighted sum (initial value if learnable).
            Defaults to 0.5.
        rgb_weight: float, w2 of the weighted sum (initial value if learnable).
            Defaults to 0.5.
        learnable: bool, learn the two weights (only for "weighted"). Defaults to
            False.
        **kwargs: base `keras.layers.Layer` arguments.

    Example:

    >>> fuse = StreamFusion("weighted", flow_weight=1.5, rgb_weight=1.0)
    >>> fuse([np.ones((2, 4)), np.ones((2, 4))]).shape
    (2, 4)

    References:
        M. I. Lakhal et al. Residual Stacked RNNs for Action Recognition. ECCV
        Workshops, 2018 (fusion schemes, section 3.2).
    """

    def __init__(self, method="sum", flow_weight=0.5, rgb_weight=0.5, learnable=False, **kwargs):
        super().__init__(**kwargs)
        self._set_config(method, flow_weight, rgb_weight, learnable)
        if learnable and method != "weighted":
            raise ValueError(
                "learnable=True needs method='weighted' (the only fusion with weights). "
                f"Received: method={method!r}"
            )
        self.supports_masking = True

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError(
                "StreamFusion expects a list of two inputs [rgb, flow]. "
                f"Received: input_shape={input_shape}"
            )
        rgb_shape, flow_shape = (tuple(s) for s in input_shape)
        if self.method != "concat" and rgb_shape[1:] != flow_shape[1:]:
            raise ValueError(
                f"fusion={self.method!r} needs rgb and flow of the same shape. "
                f"Received: rgb shape={rgb_shape}, flow shape={flow_shape}"
            )
        if self.method == "weighted":
            self.flow_weight_var = self.add_weight(
                name="flow_weight",
                shape=(),
                initializer=keras.initializers.Constant(self.flow_weight),
                trainable=self.learnable,
            )
            self.rgb_weight_var = self.add_weight(
                name="rgb_weight",
                shape=(),
                initializer=keras.initializers.Constant(self.rgb_weight),
                trainable=self.learnable,
            )

    def call(self, inputs):
        rgb, flow = inputs
        if self.method == "sum":
            return rgb + flow
        if self.method == "product":
            return rgb * flow
        if self.method == "weighted":
            flow_weight = ops.cast(self.flow_weight_var, flow.dtype)
            rgb_weight = ops.cast(self.rgb_weight_var, rgb.dtype)
            return flow_weight * flow + rgb_weight * rgb
        return ops.concatenate([rgb, flow], axis=-1)

    def compute_mask(self, inputs, mask=None):
        if mask is None or all(m is None for m in mask):
            return None
        masks = [m for m in mask if m is not None]
        return masks[0] if len(masks) == 1 else ops.logical_and(masks[0], masks[1])

    def compute_output_shape(self, input_shape):
        rgb_shape, flow_shape = input_shape
        if self.method == "concat":
            return tuple(rgb_shape[:-1]) + (rgb_shape[-1] + flow_shape[-1],)
        return tuple(rgb_shape)


def _log_add_exp(a, b):
    """log(exp(a) + exp(b)), stable, with the gradient shared by softmax weight.

    `ops.logaddexp` sends the whole gradient to one argument when a == b, which
    would starve one stream of its training signal whenever the two agree.
    """
    return ops.logsumexp(ops.stack([a, b], axis=0), axis=0)


@keras.saving.register_keras_serializable(package="reslstm_tf")
class LateFusion(_FusionConfig, keras.layers.Layer):
    """Fuses two streams' class logits through their probabilities; returns log-scores.

    Each stream's logits become probabilities (softmax); the probabilities are fused
    with `StreamFusion` semantics and the layer returns the log of the fused scores.
    Fusing probabilities rather than logits is what makes "product" meaningful: the
    product of two class distributions is their joint evidence (the sum of
    log-probabilities), while a product of logits flips sign whenever both are
    negative. The log keeps the output a valid logit vector: its softmax is the
    normalised fused distribution, so models trained with
    `SparseCategoricalCrossentropy(from_logits=True)` work unchanged and the
    ranking of classes is the ranking of the fused scores.

    The log is computed exactly in log space (log-softmax, then a sum for
    "product" and a log-sum-exp for "sum" and "weighted"), never as
    log(probability + epsilon): an epsilon floor makes the loss flat once both
    streams are confidently wrong, and training stalls there.

    "concat" at late level concatenates the two probability vectors and learns a
    linear classifier on them (`num_classes` outputs).

    Args:
        method: one of "sum", "product", "weighted", "concat". Defaults to "product".
        flow_weight, rgb_weight, learnable: as in `StreamFusion`; for "weighted" the
            weights must stay positive (they are scales of probabilities).
        **kwargs: base `keras.layers.Layer` arguments.
    """

    def __init__(
        self, method="product", flow_weight=0.5, rgb_weight=0.5, learnable=False, **kwargs
    ):
        super().__init__(**kwargs)
        self._set_config(method, flow_weight, rgb_weight, learnable)
        if method == "weighted" and min(flow_weight, rgb_weight) <= 0:
            raise ValueError(
                "late weighted fusion needs positive weights (they scale probabilities). "
                f"Received: flow_weight={flow_weight}, rgb_weight={rgb_weight}"
            )
        # Probabilities are fused in float32 whatever the policy.
        self.fusion = StreamFusion(
            method, flow_weight, rgb_weight, learnable, dtype="float32", name="fusion"
        )
        self.concat_classifier = None

    def build(self, input_shape):
        rgb_shape, flow_shape = (tuple(s) for s in input_shape)
        if rgb_shape[-1] != flow_shape[-1]:
            raise ValueError(
                "LateFusion needs both streams to score the same classes. "
                f"Received: rgb logits shape={rgb_shape}, flow logits shape={flow_shape}"
            )
        self.fusion.build([rgb_shape, flow_shape])
        if self.method == "concat":
            self.concat_classifier = keras.layers.Dense(
                rgb_shape[-1], dtype="float32", name="concat_classifier"
            )
            self.concat_classifier.build(rgb_shape[:-1] + (2 * rgb_shape[-1],))

    def call(self, inputs):
        log_rgb, log_flow = (ops.log_softmax(ops.cast(x, "float32"), axis=-1) for x in inputs)
        if self.method == "product":
            return log_rgb + log_flow
        if self.method == "sum":
            return _log_add_exp(log_rgb, log_flow)
        if self.method == "weighted":
            # log(w1 * p_flow + w2 * p_rgb), with the weights kept positive.
            tiny = keras.config.epsilon()
            w_flow, w_rgb = (
                ops.cast(w, "float32")
                for w in (self.fusion.flow_weight_var, self.fusion.rgb_weight_var)
            )
            log_w_flow = ops.log(ops.maximum(w_flow, tiny))
            log_w_rgb = ops.log(ops.maximum(w_rgb, tiny))
            return _log_add_exp(log_w_flow + log_flow, log_w_rgb + log_rgb)
        return self.concat_classifier(self.fusion([ops.exp(log_rgb), ops.exp(log_flow)]))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])
