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
    """Returns {stream: shape} of an unbatched dataset's features ("features" for one stream).

    A shape is `(T, d_f)` for segment features, or `(T, ...)` of any rank for other inputs
    (e.g. clips `(T, L, S, S, C)`): axis 0 is always the time step.

    Raises:
        TrainingInputError: the elements are not `(features, label)` pairs of features of
            rank 2 or more.
    """
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise TrainingInputError(
            f"the dataset must yield (features, label) pairs. Received element spec {spec}"
        )
    feature_spec = spec[0] if isinstance(spec[0], dict) else {"features": spec[0]}
    shapes = {}
    for name, item in feature_spec.items():
        rank = item.shape.rank
        if rank is None or rank < 2:
            raise TrainingInputError(
                f"dataset features {name!r} must be unbatched (T, d_f) tensors (or (T, ...) of "
                f"higher rank). Received shape {item.shape}"
            )
        shapes[name] = tuple(item.shape.as_list())
    return shapes


def _check_stream(source, name, got, expected):
    """Checks one stream's element shape `(T, ...)` against the model's (None: any)."""
    steps, got_steps = expected[0], got[0]
    if len(got) == 2 and len(expected) == 2:
        dim, got_dim = expected[1], got[1]
        if got_dim is not None and dim is not None and got_dim != dim:
            flag = "feature_dim" if name == "features" else f"{name}_dim"
            raise TrainingInputError(
                f"{source} has {name!r} features of dimension d_f={got_dim} but the model "
                f"expects {dim} ({flag}={dim}); set {flag}={got_dim} or use matching features"
            )
    else:
        rest = [(g, e) for g, e in zip(got[1:], expected[1:])]
        if len(got) != len(expected) or any(
            g is not None and e is not None and g != e for g, e in rest
        ):
            raise TrainingInputError(
                f"{source} has {name!r} elements of shape {got} but the model expects "
                f"{expected} (axis 0: time steps; None: any)"
            )
    if steps is not None and got_steps is not None and got_steps != steps:
        raise TrainingInputError(
            f"{source} has {got_steps} time steps per video but the model expects "
            f"num_steps={steps}; set num_steps={got_steps} or resample the features"
        )


def check_shapes(dataset, expected_shapes, source="dataset"):
    """Checks the dataset's streams and element shapes against {stream: (T, ...)} of the model.

    Axis 0 is the time step T; the other axes must match where both are known (None is
    any size). Elements may have any rank >= 2: `(T, d_f)` features or `(T, L, S, S, C)`
    clips.

    Raises:
        TrainingInputError: other streams, or another d_f, T or element shape than the model's.
    """
    shapes = dataset_shapes(dataset)
    if set(shapes) != set(expected_shapes):
        raise TrainingInputError(
            f"{source} has feature streams {sorted(shapes)} but the model expects "
            f"{sorted(expected_shapes)}"
        )
    for name, expected in expected_shapes.items():
        _check_stream(source, name, shapes[name], tuple(expected))


def _label_range(labels, num_classes, source):
    """Raises if `labels` is empty or has a label outside [0, num_classes); returns N."""
    count = int(labels[0])
    low, high = int(labels[1]), int(labels[2])
    if count == 0:
        raise TrainingInputError(f"{source} is empty")
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise TrainingInputError(
            f"{source} has label {bad} outside the class range [0, {num_classes}) "
            f"(num_classes={num_classes}); labels seen span [{low}, {high}]"
        )
    return count


def _reason(error):
    """The readable part of a tf.data error: the failed assertion's text, if any."""
    text = " ".join(str(error.message).split())
    if "assertion failed:" in text:
        text = text.split("assertion failed:", 1)[1].replace("[", "").replace("]", "").strip()
        text += "; re-extract that video or remove it from the features"
    return text


def check_labels(dataset, num_classes, source="dataset", labels=None):
    """Returns N after checking the labels are in [0, C); reads the dataset once unless given.

    Args:
        dataset: the unbatched `(features, label)` dataset.
        num_classes: C.
        source: how messages name the data.
        labels: optional int array of the dataset's N labels, known without reading it
            (e.g. a list of videos, whose reading would decode every clip).

    Raises:
        TrainingInputError: an empty dataset, a label outside [0, num_classes), or
            features the input pipeline refuses (e.g. NaN values in a feature cache).
    """
    dataset_shapes(dataset)
    if labels is not None:
        labels = np.asarray(labels, dtype="int64").reshape(-1)
        if not labels.size:
            return _label_range((0, 0, 0), num_classes, source)
        return _label_range((labels.size, labels.min(), labels.max()), num_classes, source)
    only_labels = dataset.map(lambda x, y: tf.cast(y, tf.int64))
    try:
        stats = only_labels.reduce(
            (np.int64(0), np.int64(np.iinfo(np.int64).max), np.int64(np.iinfo(np.int64).min)),
            lambda s, y: (s[0] + 1, tf.minimum(s[1], y), tf.maximum(s[2], y)),
        )
    except tf.errors.InvalidArgumentError as error:
        raise TrainingInputError(f"{source} cannot be read: {_reason(error)}") from None
    return _label_range(stats, num_classes, source)


def model_input_shapes(model):
    """Returns {stream: (T, ...)} of a model's inputs (None: any size)."""
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
