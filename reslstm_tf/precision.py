"""Keras dtype policies, shared by the backbones and the Res-LSTM models."""

import contextlib

import keras


@contextlib.contextmanager
def dtype_policy(name):
    """Sets the global Keras dtype policy inside the block and restores it afterwards.

    Args:
        name: a Keras dtype policy name, e.g. "float32", "mixed_float16",
            "mixed_bfloat16".

    Example:

    >>> from reslstm_tf.models import build_single_stream
    >>> with dtype_policy("mixed_bfloat16"):
    ...     model = build_single_stream(51)
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
