"""Training input: checks of a dataset against the model, and the batches of each epoch."""

import numpy as np
import tensorflow as tf

from reslstm_tf.data.feature_sets import numpy_dataset
from reslstm_tf.training.errors import TrainingInputError


def as_dataset(x, y=None):
    """Returns an unbatched `(features, label)` dataset from a dataset or numpy arrays.

    Args:
        x: an unbatched `tf.data.Dataset` of `(features, label)` (then `y` is None), or
            float features `(N, T, d_f)`, or a dict `{"rgb": ..., "flow": ...}` of such.
        y: int labels `(N,)` with numpy features.
    """
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise TrainingInputError(
                "pass labels inside the dataset, not as y, with a tf.data input"
            )
        return x
    if y is None:
        raise TrainingInputError("numpy features need their labels: pass y")
    if isinstance(x, dict):
        x = {name: np.asarray(v, dtype="float32") for name, v in x.items()}
    else:
        x = np.asarray(x, dtype="float32")
    return numpy_dataset(x, y)


def dataset_shapes(dataset):
    """Returns {stream: (T, d_f)} of an unbatched dataset ("features" for one stream).

    Raises:
        TrainingInputError: the elements are not `(features, label)` pairs of rank-2 features.
    """
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise TrainingInputError(
            f"the dataset must yield (features, label) pairs. Received element spec {spec}"
        )
    feature_spec = spec[0] if isinstance(spec[0], dict) else {"features": spec[0]}
    shapes = {}
    for name, item in feature_spec.items():
        if item.shape.rank != 2:
            raise TrainingInputError(
                f"dataset features {name!r} must be unbatched (T, d_f) tensors. "
                f"Received shape {item.shape}"
            )
        shapes[name] = tuple(item.shape.as_list())
    return shapes


def check_shapes(dataset, expected_shapes, source="dataset"):
    """Checks the dataset's feature streams and shapes against {stream: (T or None, d_f)}.

    Raises:
        TrainingInputError: other streams, another d_f or another T than the model's.
    """
    shapes = dataset_shapes(dataset)
    if set(shapes) != set(expected_shapes):
        raise TrainingInputError(
            f"{source} has feature streams {sorted(shapes)} but the model expects "
            f"{sorted(expected_shapes)}"
        )
    for name, (steps, dim) in expected_shapes.items():
        got_steps, got_dim = shapes[name]
        if got_dim is not None and got_dim != dim:
            flag = "feature_dim" if name == "features" else f"{name}_dim"
            raise TrainingInputError(
                f"{source} has {name!r} features of dimension d_f={got_dim} but the model "
                f"expects {dim} ({flag}={dim}); set {flag}={got_dim} or use matching features"
            )
        if steps is not None and got_steps is not None and got_steps != steps:
            raise TrainingInputError(
                f"{source} has {got_steps} time steps per video but the model expects "
                f"num_steps={steps}; set num_steps={got_steps} or resample the features"
            )


def check_labels(dataset, num_classes, source="dataset"):
    """Reads the dataset once; returns N, or raises if empty or a label is outside [0, C).

    Raises:
        TrainingInputError: an empty dataset or a label outside [0, num_classes).
    """
    dataset_shapes(dataset)
    labels = dataset.map(lambda x, y: tf.cast(y, tf.int64))
    count, low, high = labels.reduce(
        (np.int64(0), np.int64(np.iinfo(np.int64).max), np.int64(np.iinfo(np.int64).min)),
        lambda s, y: (s[0] + 1, tf.minimum(s[1], y), tf.maximum(s[2], y)),
    )
    count, low, high = int(count), int(low), int(high)
    if count == 0:
        raise TrainingInputError(f"{source} is empty")
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise TrainingInputError(
            f"{source} has label {bad} outside the class range [0, {num_classes}) "
            f"(num_classes={num_classes}); labels seen span [{low}, {high}]"
        )
    return count


def model_input_shapes(model):
    """Returns {stream: (T or None, d_f)} of a model built by `reslstm_tf.models`."""
    if isinstance(model.input, dict):
        return {name: tuple(t.shape[1:]) for name, t in model.input.items()}
    return {"features": tuple(model.inputs[0].shape[1:])}


def epoch_seed(seed, epoch):
    """Returns the shuffle seed of one epoch: a function of (seed, epoch) only."""
    return int((int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**31 - 1))


def epoch_batches(
    dataset, epoch, batch_size, seed, num_examples, skip_batches=0, shuffle_buffer=None
):
    """Returns the epoch's batches: seeded shuffle, fixed-size batches, consumed ones skipped.

    The order depends only on `(seed, epoch)`, so a restarted run gets the same
    batches. The last partial batch is dropped (every step sees `batch_size` examples).

    Args:
        dataset: unbatched `(features, label)` dataset.
        epoch: int, 0-based epoch.
        batch_size: int, global batch size.
        seed: int, the run's seed.
        num_examples: int, N.
        skip_batches: int, batches of this epoch already trained on.
        shuffle_buffer: int, size of the shuffle buffer; default N (a full shuffle).

    Returns:
        A batched `tf.data.Dataset`.
    """
    buffer = max(1, shuffle_buffer or num_examples)
    data = dataset.shuffle(buffer, seed=epoch_seed(seed, epoch), reshuffle_each_iteration=False)
    data = data.batch(batch_size, drop_remainder=True)
    if skip_batches:
        data = data.skip(skip_batches)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options).prefetch(2)
