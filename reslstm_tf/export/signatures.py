"""The traced functions that exporters write: a head's full-sequence and streaming-step graphs.

Every head, one-stream or two-stream, exports the same two graphs, so LiteRT, ONNX and any
other format name their inputs and outputs alike:

- classify: the full sequence. One stream: ``features`` (B, T, d_f). Two streams: ``rgb``
  (B, T, d_rgb) and ``flow`` (B, T, d_flow). Outputs ``logits`` and ``probabilities``
  (B, C), float32.
- step: one segment with carried states (streaming recognition, as the SavedModel's
  ``serve_step``). One stream: ``features`` (B, d_f) and ``states`` (B, L, 2, H) ->
  ``logits``, ``probabilities``, ``states``. Two streams fused at mid level: ``rgb``,
  ``flow`` and ``states`` (one recurrent stack) -> the same outputs. Two streams fused
  late: ``rgb``, ``flow``, ``rgb_states`` and ``flow_states`` (one stack each) ->
  ``logits``, ``probabilities``, ``rgb_states``, ``flow_states``. Start from zero states
  and feed back the returned ones; after T steps the probabilities equal the
  full-sequence graph's (masking aside: a step never skips an all-zero feature).

A fine-tuned video classifier (`build_video_classifier`, zoo kind "video_classifier") takes
clips, not features: its one graph is `clips_function`, inputs ``clips`` (one stream) or
``rgb`` and ``flow`` (B, T, L, S, S, C) in [-1, 1] -> ``logits`` and ``probabilities``. It has
no streaming step (its backbone reads whole segments of frames).
"""

import contextlib
import functools

import keras
import tensorflow as tf

from reslstm_tf.checks import check_positive_int
from reslstm_tf.streaming import StreamingClassifier


class _StackLayers:
    """One recurrent stack of a head, under the layer names `StreamingClassifier` reads.

    A late-fusion two-stream head names its stacks `rgb_residual_lstm` / `rgb_logits` and
    `flow_residual_lstm` / `flow_logits`; this view lets `StreamingClassifier` step each
    of them as it steps a one-stream head.
    """

    def __init__(self, model, prefix=""):
        self._model = model
        self._prefix = prefix
        self.layers = [layer for layer in model.layers if layer.name.startswith(prefix)]
        recurrent = model.get_layer(f"{prefix}residual_lstm")
        input_dim = recurrent.lstm_layers[0].cell.kernel.shape[0]
        self.input_shape = (None, None, input_dim)

    def get_layer(self, name):
        """Returns the head's layer `<prefix><name>`."""
        return self._model.get_layer(self._prefix + name)


def load_head(model):
    """Returns `model` if it is a Keras model, else the head a zoo name or `.keras` path names."""
    if isinstance(model, keras.Model):
        return model
    if str(model).endswith(".keras"):
        from reslstm_tf.models import load_model

        return load_model(model)
    from reslstm_tf import zoo

    return zoo.load(str(model))


def is_clip_model(model):
    """Whether `model` takes clips (B, T, L, S, S, C), as a fine-tuned video classifier does."""
    inputs = model.input if isinstance(model.input, dict) else {"clips": model.input}
    return all(len(tensor.shape) == 6 for tensor in inputs.values())


def clips_function(model, batch_size=None):
    """Returns a video classifier's clips-to-logits graph as a `tf.function` with its signature.

    Args:
        model: a `build_video_classifier` model (one or two streams).
        batch_size: the batch dimension of the signature; None (any batch) by default.

    Returns:
        A `tf.function` mapping ``clips`` (or ``rgb`` and ``flow``), each
        (B, T, L, S, S, C) float32, to {"logits", "probabilities"}.
    """
    if batch_size is not None:
        check_positive_int("batch_size", batch_size)
    if not is_clip_model(model):
        shapes = keras.tree.map_structure(lambda tensor: tensor.shape, model.input)
        raise ValueError(
            "clips_function takes a video classifier (clips of shape (B, T, L, S, S, C) in). "
            f"Received: a model with inputs {shapes}"
        )
    if not isinstance(model.input, dict):
        spec = tf.TensorSpec((batch_size, *model.input.shape[1:]), tf.float32, "clips")

        @tf.function(input_signature=[spec])
        def classify_clips(clips):
            return _outputs(model(clips, training=False))

        return classify_clips
    rgb, flow = (
        tf.TensorSpec((batch_size, *model.input[name].shape[1:]), tf.float32, name)
        for name in ("rgb", "flow")
    )

    @tf.function(input_signature=[rgb, flow])
    def classify_stream_clips(rgb, flow):
        return _outputs(model({"rgb": rgb, "flow": flow}, training=False))

    return classify_stream_clips


def _pool_as_2d(layer, inputs):
    """A 3D pooling layer's output, computed as a 2D pool per frame, then a pool over time."""
    (kt, kh, kw), (st, sh, sw) = layer.pool_size, layer.strides
    pool = tf.nn.max_pool2d if isinstance(layer, keras.layers.MaxPooling3D) else tf.nn.avg_pool2d
    padding = layer.padding.upper()
    dynamic = tf.shape(inputs)
    batch, steps = dynamic[0], inputs.shape[1] if inputs.shape[1] is not None else dynamic[1]
    height, width, channels = inputs.shape[2:]
    x = pool(tf.reshape(inputs, [-1, height, width, channels]), (kh, kw), (sh, sw), padding)
    height, width = x.shape[1:3]
    x = tf.reshape(x, tf.stack([batch, steps, height * width, channels]))
    x = pool(x, (kt, 1), (st, 1), padding)
    return tf.reshape(x, tf.stack([batch, -1, height, width, channels]))


@contextlib.contextmanager
def pooling_as_2d(model):
    """Within the block, `model`'s 3D max and average pooling layers compute as 2D pools.

    LiteRT has no builtin 3D pooling op (the I3D's `MaxPool3D` would need TensorFlow on the
    device). A pool over a (t, h, w) window equals a 2D pool over (h, w) on every frame then a
    pool over t: the window and its padding are products over the axes (an average counts
    the valid elements, a product too), so graphs traced inside use builtin ops only and
    compute the same values.
    """
    pooling = (keras.layers.MaxPooling3D, keras.layers.AveragePooling3D)
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, pooling) and layer.data_format == "channels_last"
    ]
    saved = [(layer, layer.__dict__.get("call")) for layer in layers]
    for layer in layers:
        layer.call = functools.partial(_pool_as_2d, layer)
    try:
        yield
    finally:
        for layer, call in saved:
            if call is None:
                del layer.call
            else:
                layer.call = call


def head_kind(model):
    """Returns "one_stream", "mid" or "late" (two streams fused at that level)."""
    if not isinstance(model.input, dict):
        return "one_stream"
    names = {layer.name for layer in model.layers}
    return "late" if "rgb_residual_lstm" in names else "mid"


def _sequence_specs(model, batch_size):
    """Returns the full-sequence input specs, named as the model's inputs, in call order."""
    inputs = model.input if isinstance(model.input, dict) else {"features": model.input}
    names = ("features",) if "features" in inputs else ("rgb", "flow")
    specs = []
    for name in names:
        _, steps, dim = inputs[name].shape
        if steps is None:
            raise ValueError(
                "export needs a head with a fixed number of steps T; rebuild it with "
                f"num_steps=T. Received: input {name!r} of shape {inputs[name].shape}"
            )
        specs.append(tf.TensorSpec((batch_size, steps, dim), tf.float32, name))
    return specs


def _outputs(logits):
    logits = tf.cast(logits, tf.float32)
    return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}


def classify_function(model, batch_size=None):
    """Returns the head's full-sequence graph as a `tf.function` with its input signature.

    Args:
        model: a head from `reslstm_tf.models` (one-stream or two-stream, fixed T).
        batch_size: the batch dimension of the signature; None (any batch) by default.

    Returns:
        A `tf.function` mapping the inputs named in the module docstring to
        {"logits", "probabilities"}.
    """
    if batch_size is not None:
        check_positive_int("batch_size", batch_size)
    specs = _sequence_specs(model, batch_size)
    if head_kind(model) == "one_stream":

        @tf.function(input_signature=specs)
        def classify(features):
            return _outputs(model(features, training=False))

        return classify

    @tf.function(input_signature=specs)
    def classify_streams(rgb, flow):
        return _outputs(model({"rgb": rgb, "flow": flow}, training=False))

    return classify_streams


def _state_spec(stream, batch_size, name):
    return tf.TensorSpec((batch_size, stream.num_layers, 2, stream.units), tf.float32, name)


def step_function(model, batch_size=None):
    """Returns the head's streaming step as a `tf.function` with its input signature.

    Args:
        model: a head from `reslstm_tf.models` (one-stream or two-stream).
        batch_size: the batch dimension of the signature; None (any batch) by default.

    Returns:
        A `tf.function` mapping one segment per stream and the states to logits,
        probabilities and new states (names in the module docstring).
    """
    if batch_size is not None:
        check_positive_int("batch_size", batch_size)
    kind = head_kind(model)
    if kind == "one_stream":
        stream = StreamingClassifier(model)
        step = stream.tf_function()
        specs = [
            tf.TensorSpec((batch_size, stream.feature_dim), tf.float32, "features"),
            _state_spec(stream, batch_size, "states"),
        ]
        return tf.function(step.python_function, input_signature=specs)
    rgb_dim, flow_dim = (model.input[name].shape[-1] for name in ("rgb", "flow"))
    feature_specs = [
        tf.TensorSpec((batch_size, rgb_dim), tf.float32, "rgb"),
        tf.TensorSpec((batch_size, flow_dim), tf.float32, "flow"),
    ]
    fusion = model.get_layer("fusion")
    if kind == "mid":
        stream = StreamingClassifier(_StackLayers(model))

        @tf.function(input_signature=[*feature_specs, _state_spec(stream, batch_size, "states")])
        def step_mid(rgb, flow, states):
            logits, new_states = stream.step_logits(fusion([rgb, flow]), states)
            return {**_outputs(logits), "states": new_states}

        return step_mid
    rgb_stream = StreamingClassifier(_StackLayers(model, "rgb_"))
    flow_stream = StreamingClassifier(_StackLayers(model, "flow_"))
    state_specs = [
        _state_spec(rgb_stream, batch_size, "rgb_states"),
        _state_spec(flow_stream, batch_size, "flow_states"),
    ]

    @tf.function(input_signature=[*feature_specs, *state_specs])
    def step_late(rgb, flow, rgb_states, flow_states):
        rgb_logits, rgb_new = rgb_stream.step_logits(rgb, rgb_states)
        flow_logits, flow_new = flow_stream.step_logits(flow, flow_states)
        logits = fusion([rgb_logits, flow_logits])
        return {**_outputs(logits), "rgb_states": rgb_new, "flow_states": flow_new}

    return step_late


def forward_function(model, output_name="outputs", batch_size=None):
    """Returns any one-input Keras model's inference call as a `tf.function` (e.g. I3D).

    Args:
        model: a Keras model with one input.
        output_name: the name of the output. Defaults to "outputs".
        batch_size: the batch dimension of the signature; None (any batch) by default.

    Returns:
        A `tf.function` mapping the model's input (named as it is) to {output_name: ...}.
    """
    if isinstance(model.input, (dict, list, tuple)):
        raise ValueError(
            "forward_function takes a model with one input. "
            f"Received inputs: {[tensor.name for tensor in keras.tree.flatten(model.input)]}"
        )
    spec = tf.TensorSpec((batch_size, *model.input.shape[1:]), tf.float32, model.input.name)

    @tf.function(input_signature=[spec])
    def forward(inputs):
        return {output_name: tf.cast(model(inputs, training=False), tf.float32)}

    return forward


def initial_states(model, batch_size=1):
    """Returns the zero states of the step graph, as {input name: float32 numpy array}."""
    kind = head_kind(model)
    stacks = {"one_stream": {"states": ""}, "mid": {"states": ""}}.get(
        kind, {"rgb_states": "rgb_", "flow_states": "flow_"}
    )
    return {
        name: keras.ops.convert_to_numpy(
            StreamingClassifier(_StackLayers(model, prefix)).initial_states(batch_size)
        )
        for name, prefix in stacks.items()
    }
