"""What a training run is set up with: strategy, dtype policy, learning rate, optimizer."""

import contextlib
import json
import os
import time

import keras
import tensorflow as tf

from reslstm_tf.checks import check_choice, check_positive_int
from reslstm_tf.training.errors import TrainingInputError

STRATEGIES = ("default", "mirrored", "multi_worker")
OPTIMIZERS = ("adam", "sgd", "adamw")
SCHEDULES = ("constant", "cosine", "step")
MIXED_PRECISION = ("none", "float16", "bfloat16")


def make_strategy(name="default"):
    """Returns the `tf.distribute.Strategy` called `name` ("default", "mirrored", "multi_worker").

    "multi_worker" reads the cluster from the `TF_CONFIG` environment variable and
    must be created before any other TensorFlow op runs in the process.
    """
    check_choice("strategy", name, STRATEGIES, TrainingInputError)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if "TF_CONFIG" not in os.environ:
        raise TrainingInputError(
            "strategy='multi_worker' needs the TF_CONFIG environment variable describing the "
            'cluster, e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}'
        )
    try:
        json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as error:
        raise TrainingInputError(f"TF_CONFIG is not valid JSON: {error}") from error
    return tf.distribute.MultiWorkerMirroredStrategy()


def task_info(strategy):
    """Returns (task_type, task_id, is_chief) of this process in the strategy's cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", None) or 0
    if task_type is None:
        return None, 0, True
    cluster = resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return task_type, task_id, task_type == "chief"
    return task_type, task_id, task_type == "worker" and task_id == 0


def mixed_precision_policy(name):
    """Returns the Keras dtype-policy name of a --mixed_precision value."""
    check_choice("mixed_precision", name, MIXED_PRECISION, TrainingInputError)
    return {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}[name]


def make_learning_rate(
    learning_rate,
    schedule="constant",
    total_steps=1,
    steps_per_epoch=1,
    decay_epochs=None,
    decay_rate=0.1,
):
    """Returns a learning rate (float or Keras schedule over optimizer steps).

    Args:
        learning_rate: float > 0, the initial rate.
        schedule: "constant", "cosine" (to 0 over `total_steps`) or "step"
            (times `decay_rate` every `decay_epochs` epochs).
        total_steps: int, steps of the whole run.
        steps_per_epoch: int, steps per epoch.
        decay_epochs: int, the step schedule's period; default a third of the run.
        decay_rate: float, the step schedule's factor.

    Returns:
        A float or a `keras.optimizers.schedules.LearningRateSchedule`.
    """
    if not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
        raise TrainingInputError(
            f"learning_rate must be a positive number. Received: learning_rate={learning_rate!r}"
        )
    check_choice("schedule", schedule, SCHEDULES, TrainingInputError)
    if schedule == "constant":
        return float(learning_rate)
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(float(learning_rate), max(1, total_steps))
    if decay_epochs is None:
        decay_epochs = max(1, total_steps // steps_per_epoch // 3)
    check_positive_int("lr_decay_epochs", decay_epochs, error=TrainingInputError)
    if not 0 < decay_rate <= 1:
        raise TrainingInputError(
            f"lr_decay_rate must be in (0, 1]. Received: lr_decay_rate={decay_rate!r}"
        )
    return keras.optimizers.schedules.ExponentialDecay(
        float(learning_rate), decay_epochs * steps_per_epoch, decay_rate, staircase=True
    )


def make_optimizer(name, learning_rate, weight_decay=0.0, momentum=0.9, mixed_precision="none"):
    """Returns a Keras optimizer: "adam", "sgd" (with momentum) or "adamw".

    `weight_decay` is decoupled weight decay (as AdamW) for all three. With
    `mixed_precision="float16"` the optimizer is wrapped in a `LossScaleOptimizer`.
    """
    check_choice("optimizer", name, OPTIMIZERS, TrainingInputError)
    if not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise TrainingInputError(
            f"weight_decay must be a number >= 0. Received: weight_decay={weight_decay!r}"
        )
    decay = float(weight_decay) or None
    if name == "adam":
        optimizer = keras.optimizers.Adam(learning_rate, weight_decay=decay)
    elif name == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=float(weight_decay))
    else:
        optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum, weight_decay=decay)
    if mixed_precision_policy(mixed_precision) == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


@contextlib.contextmanager
def op_determinism(enabled):
    """Enables deterministic ops for the block, then restores the previous setting."""
    from tensorflow.python.framework import config as tf_config

    was_enabled = getattr(tf_config, "is_op_determinism_enabled", lambda: True)()
    if enabled and not was_enabled:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if enabled and not was_enabled and hasattr(tf_config, "disable_op_determinism"):
            tf_config.disable_op_determinism()


class StepTimer:
    """Steps per second, from the end of the first step (which includes tracing)."""

    def __init__(self):
        self.start, self.steps = None, 0

    def tick(self):
        if self.start is None:
            self.start = time.perf_counter()
        else:
            self.steps += 1

    def rate(self):
        elapsed = time.perf_counter() - self.start if self.start is not None else 0.0
        return self.steps / elapsed if elapsed > 0 else float("nan")
