"""Streaming recognition: a one-stream model advanced one segment at a time with carried states.

A residual LSTM is causal, so the class probabilities after t segments depend only
on the first t. `StreamingClassifier` wraps a trained one-stream model (from
`build_single_stream` or the zoo) and exposes `step(features_t, states)`; after T
steps its probabilities equal the full-sequence model's. States travel as one
tensor of shape (batch, L, 2, H) (h and c of each layer), which a TF Serving
client can keep between requests.
"""

import keras
import tensorflow as tf
from keras import ops


class StreamingClassifier:
    """Runs a trained one-stream Res-LSTM model step by step.

    Args:
        model: a one-stream model with layers "residual_lstm" and "logits".

    Example:

    >>> stream = StreamingClassifier(model)
    >>> states = stream.initial_states(batch_size=1)
    >>> for feature in segment_features:  # each (1, d_f)
    ...     probabilities, states = stream.step(feature, states)
    """

    def __init__(self, model):
        try:
            self.recurrent = model.get_layer("residual_lstm")
            self.classifier = model.get_layer("logits")
        except ValueError:
            raise ValueError(
                "StreamingClassifier needs a one-stream model with layers 'residual_lstm' and "
                f"'logits'. Received a model with layers {[layer.name for layer in model.layers]}"
            ) from None
        self.model = model
        self.num_layers = self.recurrent.num_layers
        self.units = self.recurrent.units
        self.feature_dim = model.input_shape[-1]

    def initial_states(self, batch_size=1):
        """Returns zero states of shape (batch, L, 2, H), float32."""
        return ops.zeros((batch_size, self.num_layers, 2, self.units), dtype="float32")

    def step(self, features, states):
        """Consumes one segment feature (batch, d_f); returns (probabilities, new states)."""
        logits, states = self.step_logits(features, states)
        return ops.softmax(logits, axis=-1), states

    def step_logits(self, features, states):
        """Consumes one segment feature (batch, d_f); returns (logits, new states)."""
        features = ops.convert_to_tensor(features, dtype="float32")
        if len(features.shape) != 2 or features.shape[-1] != self.feature_dim:
            raise ValueError(
                f"features must have shape (batch, {self.feature_dim}). "
                f"Received: shape={tuple(features.shape)}"
            )
        dtype = self.recurrent.compute_dtype
        unpacked = [
            [ops.cast(states[:, layer, 0], dtype), ops.cast(states[:, layer, 1], dtype)]
            for layer in range(self.num_layers)
        ]
        output, new_states = self.recurrent.step(ops.cast(features, dtype), unpacked)
        packed = ops.stack(
            [
                ops.stack([ops.cast(h, "float32"), ops.cast(c, "float32")], axis=1)
                for h, c in new_states
            ],
            axis=1,
        )
        return ops.cast(self.classifier(output), "float32"), packed

    def tf_function(self):
        """Returns a traced `tf.function(features, states)` for export and fast loops."""
        spec = [
            tf.TensorSpec((None, self.feature_dim), tf.float32, name="features"),
            tf.TensorSpec((None, self.num_layers, 2, self.units), tf.float32, name="states"),
        ]

        @tf.function(input_signature=spec)
        def serve_step(features, states):
            logits, new_states = self.step_logits(features, states)
            return {
                "logits": logits,
                "probabilities": tf.nn.softmax(logits, axis=-1),
                "states": new_states,
            }

        return serve_step


def run_stream(model, features):
    """Feeds features (batch, T, d_f) one step at a time; returns probabilities (batch, T, C)."""
    stream = StreamingClassifier(model)
    features = keras.ops.convert_to_tensor(features, dtype="float32")
    states = stream.initial_states(features.shape[0])
    outputs = []
    for t in range(features.shape[1]):
        probabilities, states = stream.step(features[:, t], states)
        outputs.append(probabilities)
    return ops.stack(outputs, axis=1)
