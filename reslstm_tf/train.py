"""Training: one custom loop for every `tf.distribute` strategy, with checkpoints and resume.

`train()` runs `strategy.run` over `strategy.experimental_distribute_dataset`, so the
same code trains on one device, on several local devices (`MirroredStrategy`) and on
several hosts (`MultiWorkerMirroredStrategy`, configured by `TF_CONFIG`), where Keras 3
`model.fit` does not work. The loss is the one `model.compile` users get
(`SparseCategoricalCrossentropy(from_logits=True)`), averaged over the *global* batch.

Resume is exact: every `checkpoint_every_steps` steps and at the end of each epoch a
`tf.train.CheckpointManager` writes the model variables (including the dropout RNG
state), the optimizer variables (including its step counter), the global step, the
epoch, the running loss and accuracy sums of the current epoch and the per-epoch
history (`history.json` is a copy, rewritten from the checkpoint on resume). The order
of the examples depends only on `(seed, epoch)`, so a restarted run rebuilds the
epoch's batches and skips the ones already consumed; a run killed at any point and
restarted ends with the same weights and the same history as an uninterrupted one.
The reliability tests kill it with a real SIGKILL (`reslstm_tf.faults`,
`RESLSTM_FAULT=point:N`, the N-th time the point is reached) at:

* ``train_step``: after a step, before anything of it is saved;
* ``checkpoint_written``: checkpoint files written, not yet recorded by the manager;
* ``checkpoint_saved``: checkpoint recorded, `history.json` not yet rewritten;
* ``epoch_end``: an epoch finished, before its checkpoint;
* ``final_weights_saved``: final weights written, the `.keras` model not yet.

Input: an unbatched `tf.data.Dataset` of `(features, label)` pairs, `features` a
float32 `(T, d_f)` tensor or a dict `{"rgb": (T, d_rgb), "flow": (T, d_flow)}`.
"""

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from reslstm_tf.faults import fault_point
from reslstm_tf.files import atomic_write
from reslstm_tf.models import MODALITIES, build_model  # noqa: F401 (re-exported)
from reslstm_tf.precision import dtype_policy

STRATEGIES = ("default", "mirrored", "multi_worker")
OPTIMIZERS = ("adam", "sgd", "adamw")
SCHEDULES = ("constant", "cosine", "step")
MIXED_PRECISION = ("none", "float16", "bfloat16")

CHECKPOINT_SUBDIR = "checkpoints"
SUMMARY_SUBDIR = "train"
FINAL_WEIGHTS = "final.weights.h5"
FINAL_MODEL = "model.keras"
CONFIG_FILE = "train_config.json"
HISTORY_FILE = "history.json"


class TrainingInputError(ValueError):
    """Training input (data, flags, output folder) that cannot be used; raised before training."""


class TrainingWriteError(OSError):
    """The model_dir cannot be written mid-run (disk full, read-only, no permission).

    The checkpoints written before stay readable; the message names the folder, the
    cause and the last intact checkpoint, and the same command resumes once fixed.
    """


_DISK_PROBLEMS = (
    ("No space left", "the disk is full (no space left on device)"),
    ("Disk quota", "the disk quota is exceeded"),
    ("Read-only file system", "the file system is read-only"),
    ("Permission denied", "permission denied"),
)


@contextlib.contextmanager
def _disk_errors(model_dir, manager):
    """Turns write failures (OSError, TensorFlow I/O errors) into a `TrainingWriteError`."""
    try:
        yield
    except (OSError, tf.errors.OpError) as error:
        text = str(error)
        problem = next((p for needle, p in _DISK_PROBLEMS if needle in text), None)
        if problem is None:
            raise
        latest = tf.train.latest_checkpoint(manager.directory) if manager else None
        kept = (
            f"the last checkpoint, {os.path.basename(latest)}, is intact"
            if latest
            else "no checkpoint had been written yet"
        )
        raise TrainingWriteError(
            f"cannot write to model_dir {os.fspath(model_dir)}: {problem}. Training stopped; "
            f"{kept}. Free space (or fix the folder) and run the same command to resume."
        ) from None


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise TrainingInputError(
            f"{name} must be one of {', '.join(map(repr, allowed))}. Received: {name}={value!r}"
        )


def _check_positive_int(name, value, allow_zero=False):
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        kind = "a non-negative" if allow_zero else "a positive"
        raise TrainingInputError(f"{name} must be {kind} integer. Received: {name}={value!r}")


# --------------------------------------------------------------------------- input data


def _has_cache_index(folder):
    return folder.is_dir() and any(folder.glob("index*.json"))


def find_feature_cache(features_dir, split, modality, allow_single=True):
    """Returns the cache folder of one split and stream under `features_dir`.

    Looked up, in order: `<dir>/<split>/<modality>`, `<dir>/<modality>/<split>`,
    `<dir>/<split>`, then (split-less caches) `<dir>/<modality>` and `<dir>` itself;
    the first that holds a cache index (`index*.json`, written by `reslstm-extract`)
    wins.

    Args:
        features_dir: the features folder.
        split: the split name, e.g. "train".
        modality: "rgb" or "flow".
        allow_single: accept a split-less cache (`<dir>/<modality>` or `<dir>`), which
            is then used whatever `split` is.

    Raises:
        TrainingInputError: `features_dir` is missing or none of the candidates is a cache.
    """
    root = pathlib.Path(features_dir)
    if not root.is_dir():
        raise TrainingInputError(
            f"features_dir {str(root)!r} is not an existing folder; expected the output folder "
            "of reslstm-extract (a feature cache), or use features_npz"
        )
    candidates = [root / split / modality, root / modality / split, root / split]
    if allow_single:
        candidates += [root / modality, root]
    for folder in candidates:
        if _has_cache_index(folder):
            return folder
    tried = ", ".join(repr(str(c)) for c in candidates)
    raise TrainingInputError(
        f"no {modality} feature cache for split {split!r} under {str(root)!r}: none of {tried} "
        "holds a cache index (index*.json) written by reslstm-extract"
    )


def _cache_info(folder, modality):
    """Returns the index of a cache folder after checking it holds `modality` features."""
    from reslstm_tf.data import feature_cache as features_lib

    index = features_lib.read_index(folder)
    stored = index["metadata"].get("modality")
    if stored is not None and stored != modality:
        raise TrainingInputError(
            f"the feature cache {str(folder)!r} holds {stored!r} features, not {modality!r}"
        )
    return index


def _class_names(index):
    names = index["metadata"].get("classes") or index["metadata"].get("class_names")
    return [str(n) for n in names] if names else None


def feature_dataset(
    features_dir, split, modality="rgb", num_steps=None, flow_features_dir=None, allow_single=True
):
    """Returns `(dataset, class_names)` of one split of the feature cache (`reslstm-extract`).

    Single streams stream from the sharded TFRecords; two streams are read into memory
    and joined by video id. With `num_steps=T`, the K_v cached segments of a video are
    read at T steps (`reslstm_tf.data.sampling.step_segment_map`).

    Args:
        features_dir: the features folder (see `find_feature_cache` for the layout).
        split: the split name, e.g. "train" or "test".
        modality: "rgb", "flow" or "two_stream".
        num_steps: T, or None for the cached K_v.
        flow_features_dir: two_stream: a separate folder of the flow caches (looked
            up like `features_dir`, which then holds the rgb ones).
        allow_single: accept split-less caches (see `find_feature_cache`).

    Returns:
        An unbatched `tf.data.Dataset` of `(features, label)` and the class names
        recorded in the cache (or None).

    Raises:
        TrainingInputError: no cache found, a cache of the wrong stream, or two-stream
            caches that do not hold the same videos.
    """
    _check_choice("modality", modality, MODALITIES)
    from reslstm_tf.data import feature_cache as features_lib
    from reslstm_tf.data import pipeline, sampling

    if modality != "two_stream":
        folder = find_feature_cache(features_dir, split, modality, allow_single)
        index = _cache_info(folder, modality)
        dataset = pipeline.feature_dataset(
            folder, num_steps=num_steps, batch_size=None, shuffle=False
        )
        return dataset, _class_names(index)

    streams, names = {}, None
    folders = {}
    for stream in ("rgb", "flow"):
        root = flow_features_dir if stream == "flow" and flow_features_dir else features_dir
        folders[stream] = find_feature_cache(root, split, stream, allow_single)
    if folders["rgb"] == folders["flow"]:
        raise TrainingInputError(
            f"two_stream needs separate rgb and flow caches ({split}/rgb and {split}/flow "
            f"under {str(features_dir)!r}, or flow_features_dir); found only "
            f"{str(folders['rgb'])!r}"
        )
    for stream, folder in folders.items():
        names = names or _class_names(_cache_info(folder, stream))
        streams[stream] = {r["id"]: r for r in features_lib.read_features(folder)}
    ids = sorted(streams["rgb"])
    if set(ids) != set(streams["flow"]):
        missing = sorted(set(ids) ^ set(streams["flow"]))
        raise TrainingInputError(
            f"the rgb and flow caches of split {split!r} hold different videos "
            f"({len(missing)} in only one, e.g. {missing[:3]}); extract both streams for the "
            "same split list"
        )
    labels = np.array([streams["rgb"][i]["label"] for i in ids], dtype="int64")
    flow_labels = np.array([streams["flow"][i]["label"] for i in ids], dtype="int64")
    if not np.array_equal(labels, flow_labels):
        raise TrainingInputError(f"the rgb and flow caches of split {split!r} disagree on labels")
    arrays = {}
    for stream, records in streams.items():
        stacked = np.stack([records[i]["features"] for i in ids]).astype("float32")
        if num_steps is not None:
            stacked = stacked[:, sampling.step_segment_map(num_steps, stacked.shape[1])]
        arrays[stream] = stacked
    return numpy_dataset(arrays, labels), names


def synthetic_features(
    num_videos=64,
    num_classes=5,
    num_steps=16,
    feature_dim=1024,
    seed=0,
    noise=1.0,
    two_stream=False,
):
    """Returns deterministic synthetic features: a per-class direction buried in noise.

    A smoke-test input (no video, no extractor) whose classes are separable, like
    real I3D features. Non-negative, so no time step is masked as padding.

    Args:
        num_videos: int, number of videos N.
        num_classes: int, number of classes C.
        num_steps: int, segments per video T.
        feature_dim: int, d_f.
        seed: int, the numpy seed.
        noise: float, standard deviation of the noise.
        two_stream: bool, return `{"rgb", "flow"}` features (the flow stream is a
            second, independent direction per class).

    Returns:
        `(features, labels)`: float32 `(N, T, d_f)` (or a dict of two) and int64 `(N,)`.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(num_videos) % num_classes
    rng.shuffle(labels)

    def stream():
        centers = rng.normal(size=(num_classes, feature_dim))
        values = centers[labels][:, None, :] + rng.normal(
            scale=noise, size=(num_videos, num_steps, feature_dim)
        )
        return (np.abs(values) + 1e-3).astype("float32")

    features = {"rgb": stream(), "flow": stream()} if two_stream else stream()
    return features, labels.astype("int64")


def write_npz_features(path, features, labels, class_names=None):
    """Writes features and labels as the `.npz` file that `--features_npz` reads.

    Args:
        path: output file (".npz").
        features: float `(N, T, d_f)` array, or a dict `{"rgb": ..., "flow": ...}`.
        labels: int `(N,)` array.
        class_names: optional list of C class names.
    """
    arrays = dict(features) if isinstance(features, dict) else {"features": features}
    arrays["labels"] = np.asarray(labels, dtype="int64")
    if class_names is not None:
        arrays["class_names"] = np.asarray(class_names, dtype=str)
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)


def load_npz_features(path):
    """Reads a features `.npz` file: `features` (or `rgb` and `flow`), `labels`, `class_names`.

    Args:
        path: the `.npz` file.

    Features are `(N, T, d_f)`, or `(N, clips, T, d_f)` for multi-clip evaluation.

    Returns:
        `(features, labels, class_names)`: an array (or a dict of two), an int64
        array, and a list of names or None.

    Raises:
        TrainingInputError: the file is missing, does not hold the expected arrays, or
            holds NaN or infinite features.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise TrainingInputError(f"features file {str(path)!r} does not exist")
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
        if "labels" not in keys:
            raise TrainingInputError(
                f"features file {str(path)!r} has arrays {sorted(keys)}; expected 'labels' and "
                "either 'features' or both 'rgb' and 'flow'"
            )
        if "features" in keys:
            features = np.asarray(data["features"], dtype="float32")
        elif {"rgb", "flow"} <= keys:
            features = {k: np.asarray(data[k], dtype="float32") for k in ("rgb", "flow")}
        else:
            raise TrainingInputError(
                f"features file {str(path)!r} has arrays {sorted(keys)}; expected 'features' "
                "(one stream) or both 'rgb' and 'flow' (two streams)"
            )
        labels = np.asarray(data["labels"])
        names = [str(n) for n in data["class_names"]] if "class_names" in keys else None
    arrays = features.values() if isinstance(features, dict) else [features]
    for array in arrays:
        if array.ndim not in (3, 4) or array.shape[0] != labels.shape[0]:
            raise TrainingInputError(
                f"features in {str(path)!r} must have shape (N, T, d_f), or (N, clips, T, d_f) "
                f"for multi-clip evaluation, with N = {labels.shape[0]} labels. "
                f"Received shape {array.shape}"
            )
        finite = np.isfinite(array)
        if not finite.all():
            bad = np.argwhere(~finite.reshape(array.shape[0], -1).all(axis=1)).ravel()
            raise TrainingInputError(
                f"features in {str(path)!r} hold {int(array.size - finite.sum())} NaN or "
                f"infinite values, in {bad.size} of {array.shape[0]} videos (first: row "
                f"{int(bad[0])}); re-extract them or drop those rows"
            )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise TrainingInputError(
            f"labels in {str(path)!r} must be a 1-D integer array. "
            f"Received shape {labels.shape}, dtype {labels.dtype}"
        )
    return features, labels.astype("int64"), names


def select_modality(features, modality, source="features"):
    """Returns the stream(s) a modality trains on: one array for rgb/flow, a dict for two_stream.

    Args:
        features: an array (single-stream data) or a dict `{"rgb", "flow"}`.
        modality: "rgb", "flow" or "two_stream".
        source: name of the input, for error messages.

    Returns:
        The array or dict of arrays to train on.
    """
    _check_choice("modality", modality, MODALITIES)
    if isinstance(features, dict):
        return dict(features) if modality == "two_stream" else features[modality]
    if modality == "two_stream":
        raise TrainingInputError(
            f"modality='two_stream' needs 'rgb' and 'flow' features, but {source} holds a "
            "single stream ('features'); use modality 'rgb' or 'flow'"
        )
    return features


def numpy_dataset(features, labels):
    """Returns an unbatched `tf.data.Dataset` of `(features, label)` from numpy arrays."""
    return tf.data.Dataset.from_tensor_slices((features, np.asarray(labels, dtype="int64")))


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
    inputs = model.inputs
    if isinstance(model.input, dict):
        return {name: tuple(t.shape[1:]) for name, t in model.input.items()}
    return {"features": tuple(inputs[0].shape[1:])}


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


# ----------------------------------------------------------------- strategy and optimizer


def make_strategy(name="default"):
    """Returns the `tf.distribute.Strategy` called `name` ("default", "mirrored", "multi_worker").

    "multi_worker" reads the cluster from the `TF_CONFIG` environment variable and
    must be created before any other TensorFlow op runs in the process.
    """
    _check_choice("strategy", name, STRATEGIES)
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
    _check_choice("mixed_precision", name, MIXED_PRECISION)
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
    _check_choice("schedule", schedule, SCHEDULES)
    if schedule == "constant":
        return float(learning_rate)
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(float(learning_rate), max(1, total_steps))
    if decay_epochs is None:
        decay_epochs = max(1, total_steps // steps_per_epoch // 3)
    _check_positive_int("lr_decay_epochs", decay_epochs)
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
    _check_choice("optimizer", name, OPTIMIZERS)
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


def check_model_dir(model_dir):
    """Creates `model_dir` and checks it is writable; raises a `TrainingInputError` if not."""
    path = pathlib.Path(model_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_probe_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise TrainingInputError(
            f"model_dir {str(path)!r} is not a writable folder ({error.strerror or error}); "
            "pass a folder you can create and write to"
        ) from error
    return path


# ------------------------------------------------------------------------- the training


@dataclasses.dataclass
class TrainResult:
    """What `train()` returns.

    Attributes:
        model: the trained `keras.Model`.
        history: per-epoch dicts (epoch, loss, accuracy, learning_rate, steps).
        global_step: int, optimizer steps taken in total (across restarts).
        steps_per_second: float, training speed of this process (after the first step).
        resumed_from: the checkpoint the run resumed from, or None.
        is_chief: bool, this process writes summaries and the final weights.
    """

    model: keras.Model
    history: list
    global_step: int
    steps_per_second: float
    resumed_from: str | None
    is_chief: bool


@contextlib.contextmanager
def _op_determinism(enabled):
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


def _variable_dict(variables):
    return {f"v{i:05d}": v for i, v in enumerate(variables)}


def _temporary_sibling(path):
    """Returns `.tmp-<pid>-<name>` beside `path`, after removing those of killed runs."""
    for stale in path.parent.glob(f".tmp-*-{path.name}"):
        stale.unlink(missing_ok=True)
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


def _save_weights(model, path):
    """Saves weights to `path` atomically (a temporary .weights.h5 then a rename)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    model.save_weights(tmp)
    os.replace(tmp, path)


def _save_model(model, path):
    """Saves the whole model (`keras.saving.load_model`) to `path` atomically."""
    path = pathlib.Path(path)
    tmp = _temporary_sibling(path)
    model.save(tmp)
    os.replace(tmp, path)


def train(
    model_fn,
    dataset,
    *,
    num_classes,
    model_dir,
    epochs=10,
    batch_size=32,
    optimizer="adam",
    learning_rate=1e-3,
    schedule="constant",
    weight_decay=0.0,
    momentum=0.9,
    lr_decay_epochs=None,
    lr_decay_rate=0.1,
    seed=0,
    strategy=None,
    mixed_precision="none",
    checkpoint_every_steps=0,
    max_checkpoints=3,
    max_steps=None,
    log_every_steps=10,
    shuffle_buffer=None,
    deterministic=True,
    jit_compile=False,
    progress=True,
    save_worker_weights=False,
    config=None,
):
    """Trains a model with a custom loop under any strategy; checkpoints and resumes.

    Checks the inputs (model_dir writable, dataset shapes against the model, labels in
    [0, num_classes)) before the first step. If `model_dir` holds a checkpoint, the
    run resumes from it; a finished run is not trained further.

    Args:
        model_fn: callable with no arguments returning a new `keras.Model` (logits
            out); called inside the strategy scope, under the dtype policy.
        dataset: unbatched `tf.data.Dataset` of `(features, label)`.
        num_classes: int, number of classes C.
        model_dir: folder for checkpoints (`checkpoints/`), TensorBoard summaries
            (`train/`), `final.weights.h5`, `model.keras` and `history.json`.
        epochs: int, passes over the data.
        batch_size: int, global batch size (over all replicas); the last partial
            batch of each epoch is dropped.
        optimizer: "adam", "sgd" or "adamw", or a `keras.optimizers.Optimizer`
            (created in the strategy scope by the caller).
        learning_rate: float, initial learning rate.
        schedule: "constant", "cosine" or "step".
        weight_decay: float, decoupled weight decay.
        momentum: float, SGD momentum.
        lr_decay_epochs: int, period of the "step" schedule.
        lr_decay_rate: float, factor of the "step" schedule.
        seed: int, seeds weights, dropout and the per-epoch shuffles.
        strategy: a `tf.distribute.Strategy`, a name from `STRATEGIES`, or None
            (the default strategy).
        mixed_precision: "none", "float16" or "bfloat16".
        checkpoint_every_steps: int, checkpoint every N steps (0: only at epoch ends).
        max_checkpoints: int, checkpoints to keep.
        max_steps: optional int, stop (with a checkpoint) once the global step reaches
            it; a later call with the same `model_dir` continues.
        log_every_steps: int, write step summaries every N steps.
        shuffle_buffer: int, shuffle buffer size; default the dataset size (a full
            shuffle; lower it when the features do not fit in memory).
        deterministic: bool, run with `tf.config.experimental.enable_op_determinism()`
            (restored afterwards), so runs and resumed runs are reproducible.
        jit_compile: bool, compile the forward and backward pass with XLA (often
            faster); the gradient all-reduce and the update stay outside.
        progress: bool, show a tqdm progress bar (chief only).
        save_worker_weights: bool, non-chief workers also write their final weights
            to `model_dir/workers/<task_type>_<id>/final.weights.h5`.
        config: optional dict recorded in `model_dir/train_config.json` (chief).

    Returns:
        A `TrainResult`.

    Raises:
        TrainingInputError: bad arguments, data or model_dir, found before training.
    """
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("checkpoint_every_steps", checkpoint_every_steps, allow_zero=True)
    _check_positive_int("log_every_steps", log_every_steps)
    if max_steps is not None:
        _check_positive_int("max_steps", max_steps)
    if shuffle_buffer is not None:
        _check_positive_int("shuffle_buffer", shuffle_buffer)
    policy = mixed_precision_policy(mixed_precision)
    if isinstance(optimizer, str):
        _check_choice("optimizer", optimizer, OPTIMIZERS)
    _check_choice("schedule", schedule, SCHEDULES)
    if strategy is None or isinstance(strategy, str):
        strategy = make_strategy(strategy or "default")
    model_dir = check_model_dir(model_dir)
    task_type, task_id, is_chief = task_info(strategy)

    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise TrainingInputError(
            f"batch_size={batch_size} must be divisible by the number of replicas ({replicas})"
        )
    num_examples = check_labels(dataset, num_classes)
    steps_per_epoch = num_examples // batch_size
    if steps_per_epoch == 0:
        raise TrainingInputError(
            f"batch_size={batch_size} is larger than the dataset ({num_examples} examples); "
            f"use batch_size <= {num_examples}"
        )
    total_steps = epochs * steps_per_epoch

    with _op_determinism(deterministic):
        keras.utils.set_random_seed(seed)

        with dtype_policy(policy), strategy.scope():
            model = model_fn()
            check_shapes(dataset, model_input_shapes(model))
            if isinstance(optimizer, str):
                lr = make_learning_rate(
                    learning_rate,
                    schedule,
                    total_steps,
                    steps_per_epoch,
                    lr_decay_epochs,
                    lr_decay_rate,
                )
                opt = make_optimizer(optimizer, lr, weight_decay, momentum, mixed_precision)
            else:
                opt = optimizer
            opt.build(model.trainable_variables)
            step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            spe_var = tf.Variable(steps_per_epoch, dtype=tf.int64, trainable=False)
            loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

        # The running sums of the current epoch (loss, correct, examples) and the history
        # of the finished epochs travel with the checkpoint, so an epoch interrupted mid-way
        # reports the loss of an uninterrupted one and history.json can always be rewritten
        # to agree with the checkpoint it resumes from.
        totals_var = tf.Variable(
            [0.0, 0.0, 0.0], dtype=tf.float64, trainable=False, name="epoch_totals"
        )
        history_var = tf.Variable("[]", dtype=tf.string, trainable=False, name="history")
        core = dict(
            model_variables=_variable_dict(model.variables),
            optimizer_variables=_variable_dict(opt.variables),
            step=step_var,
            epoch=epoch_var,
            steps_per_epoch=spe_var,
        )
        checkpoint = tf.train.Checkpoint(**core, epoch_totals=totals_var, history=history_var)
        chief_ckpt_dir = model_dir / CHECKPOINT_SUBDIR
        if is_chief:
            write_dir = chief_ckpt_dir
        else:
            write_dir = model_dir / ".worker_tmp" / f"{task_type}_{task_id}"
        manager = tf.train.CheckpointManager(
            checkpoint, str(write_dir), max_to_keep=max_checkpoints, checkpoint_name="ckpt"
        )
        latest = tf.train.latest_checkpoint(str(chief_ckpt_dir))
        history, totals = [], (0.0, 0.0, 0.0)
        if latest:
            saved = {name.split("/")[0] for name, _ in tf.train.list_variables(latest)}
            if "history" in saved:
                checkpoint.restore(latest).assert_existing_objects_matched()
                history = json.loads(history_var.numpy().decode("utf-8"))
                totals = tuple(float(v) for v in totals_var.numpy())
            else:
                # A checkpoint written before the history moved into it.
                tf.train.Checkpoint(**core).restore(latest).assert_existing_objects_matched()
                history = _load_history(model_dir)
                history = [e for e in history if e["epoch"] <= int(epoch_var.numpy())]
            logging.warning("resuming from checkpoint %s at step %d", latest, int(step_var.numpy()))
            if int(spe_var.numpy()) != steps_per_epoch:
                raise TrainingInputError(
                    f"model_dir {str(model_dir)!r} holds a run with {int(spe_var.numpy())} steps "
                    f"per epoch, but this run has {steps_per_epoch} ({num_examples} examples, "
                    f"batch_size={batch_size}); resume with the same data and batch size or use a "
                    "new model_dir"
                )

        # Runs after the checkpoint files are written, before the manager records them.
        written = tf.train.CheckpointOptions(
            experimental_write_callbacks=[lambda: fault_point("checkpoint_written")]
        )

        def save_checkpoint(totals):
            totals_var.assign(totals)
            history_var.assign(json.dumps(history))
            path = manager.save(checkpoint_number=int(step_var.numpy()), options=written)
            if not is_chief:
                shutil.rmtree(write_dir, ignore_errors=True)
            fault_point("checkpoint_saved")
            return path

        if is_chief and config is not None:
            record = dict(config, num_examples=num_examples, steps_per_epoch=steps_per_epoch)
            with _disk_errors(model_dir, manager), atomic_write(model_dir / CONFIG_FILE, "w") as f:
                json.dump(record, f, indent=2, sort_keys=True)

        def forward_backward(features, labels):
            with tf.GradientTape() as tape:
                logits = model(features, training=True)
                per_example = loss_fn(labels, logits)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=batch_size)
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
                scaled = opt.scale_loss(loss) if hasattr(opt, "scale_loss") else loss
            grads = tape.gradient(scaled, model.trainable_variables)
            return logits, per_example, grads

        if jit_compile:
            forward_backward = tf.function(forward_backward, jit_compile=True)

        def step_fn(features, labels):
            labels = tf.cast(labels, tf.int32)
            logits, per_example, grads = forward_backward(features, labels)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
            correct = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))
            return tf.reduce_sum(per_example), correct

        @tf.function
        def distributed_step(iterator):
            features, labels = next(iterator)
            loss_sum, correct = strategy.run(step_fn, args=(features, labels))
            sum_ = tf.distribute.ReduceOp.SUM
            return strategy.reduce(sum_, loss_sum, axis=None), strategy.reduce(
                sum_, correct, axis=None
            )

        if is_chief:
            writer = tf.summary.create_file_writer(str(model_dir / SUMMARY_SUBDIR))
        else:
            writer = tf.summary.create_noop_writer()

        def current_lr():
            value = opt.learning_rate
            return float(value.numpy() if hasattr(value, "numpy") else value)

        start_step = int(step_var.numpy())
        stop_step = total_steps if max_steps is None else min(total_steps, max_steps)
        progress_bar = None
        if progress and is_chief:
            from tqdm.auto import tqdm

            progress_bar = tqdm(
                total=total_steps, initial=start_step, unit="step", desc="train", dynamic_ncols=True
            )
        timer_start, timed_steps = None, 0
        step = start_step
        last_saved = start_step if latest else -1
        with _disk_errors(model_dir, manager):
            if latest and is_chief:
                # A run killed after a checkpoint, before history.json caught up with it.
                _write_history(model_dir, history)
            try:
                with writer.as_default():
                    while step < stop_step:
                        epoch = step // steps_per_epoch
                        epoch_var.assign(epoch)
                        skip = step % steps_per_epoch
                        batches = epoch_batches(
                            dataset, epoch, batch_size, seed, num_examples, skip, shuffle_buffer
                        )
                        iterator = iter(strategy.experimental_distribute_dataset(batches))
                        epoch_loss, epoch_correct, epoch_seen = 0.0, 0.0, 0
                        if skip and step == start_step:
                            epoch_loss, epoch_correct, seen = totals
                            epoch_seen = int(seen)
                        epoch_end = min((epoch + 1) * steps_per_epoch, stop_step)
                        while step < epoch_end:
                            loss_sum, correct = distributed_step(iterator)
                            step += 1
                            step_var.assign(step)
                            fault_point("train_step")
                            loss_sum, correct = float(loss_sum), float(correct)
                            epoch_loss += loss_sum
                            epoch_correct += correct
                            epoch_seen += batch_size
                            if timer_start is None:
                                timer_start = time.perf_counter()
                            else:
                                timed_steps += 1
                            if step % log_every_steps == 0 or step == epoch_end:
                                tf.summary.scalar("loss", loss_sum / batch_size, step=step)
                                tf.summary.scalar("accuracy", correct / batch_size, step=step)
                                tf.summary.scalar("learning_rate", current_lr(), step=step)
                            # A step checkpoint at the epoch's end waits for the epoch count.
                            if (
                                checkpoint_every_steps
                                and step % checkpoint_every_steps == 0
                                and step != epoch_end
                            ):
                                save_checkpoint((epoch_loss, epoch_correct, epoch_seen))
                                last_saved = step
                            if progress_bar is not None:
                                progress_bar.update(1)
                                progress_bar.set_postfix(
                                    epoch=epoch + 1,
                                    loss=f"{epoch_loss / epoch_seen:.4f}",
                                    acc=f"{epoch_correct / epoch_seen:.3f}",
                                )
                        if step % steps_per_epoch == 0:
                            entry = {
                                "epoch": epoch + 1,
                                "loss": epoch_loss / epoch_seen,
                                "accuracy": epoch_correct / epoch_seen,
                                "learning_rate": current_lr(),
                                "steps": epoch_seen // batch_size,
                            }
                            history.append(entry)
                            tf.summary.scalar("epoch_loss", entry["loss"], step=step)
                            tf.summary.scalar("epoch_accuracy", entry["accuracy"], step=step)
                            epoch_var.assign(epoch + 1)
                            fault_point("epoch_end")
                        if last_saved != step:
                            save_checkpoint((epoch_loss, epoch_correct, epoch_seen))
                            last_saved = step
                        if is_chief:
                            _write_history(model_dir, history)
                    writer.flush()
            finally:
                writer.close()
                if progress_bar is not None:
                    progress_bar.close()
            if step >= total_steps:
                if is_chief:
                    _save_weights(model, model_dir / FINAL_WEIGHTS)
                    fault_point("final_weights_saved")
                    _save_model(model, model_dir / FINAL_MODEL)
                elif save_worker_weights:
                    _save_weights(
                        model, model_dir / "workers" / f"{task_type}_{task_id}" / FINAL_WEIGHTS
                    )
        elapsed = time.perf_counter() - timer_start if timer_start is not None else 0.0
        rate = timed_steps / elapsed if elapsed > 0 else float("nan")
        return TrainResult(model, history, step, rate, latest, is_chief)


def _load_history(model_dir):
    path = pathlib.Path(model_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    return json.loads(path.read_text())


def _write_history(model_dir, history):
    with atomic_write(pathlib.Path(model_dir) / HISTORY_FILE, "w") as handle:
        json.dump(history, handle, indent=2)


# ----------------------------------------------------------------- features to a trained model


def load_features(
    features_npz=None,
    features_dir=None,
    split="train",
    modality="rgb",
    num_steps=None,
    flow_features_dir=None,
    allow_single=True,
):
    """Returns `(dataset, class_names)` from a features `.npz` file or a feature-cache folder.

    Exactly one of `features_npz` and `features_dir` must be given. `class_names` is
    None when the input does not record them. `num_steps` (T) resamples the cached
    segments of `features_dir`; `.npz` features are used as they are.
    """
    if (features_npz is None) == (features_dir is None):
        raise TrainingInputError(
            "give exactly one feature input: features_npz (a .npz file) or features_dir "
            f"(the feature cache). Received: features_npz={features_npz!r}, "
            f"features_dir={features_dir!r}"
        )
    if features_npz is not None:
        features, labels, names = load_npz_features(features_npz)
        features = select_modality(features, modality, source=str(features_npz))
        return numpy_dataset(features, labels), names
    return feature_dataset(
        features_dir, split, modality, num_steps, flow_features_dir, allow_single
    )


def run_training(
    *,
    model_dir,
    features_npz=None,
    features_dir=None,
    flow_features_dir=None,
    split="train",
    num_classes=None,
    modality="rgb",
    preset="res3",
    fusion="product",
    level="late",
    feature_dim=1024,
    flow_dim=None,
    units=None,
    num_steps=None,
    dropout=None,
    masking=True,
    strategy="default",
    **train_kwargs,
):
    """Trains a model from features end to end: checks inputs, builds the model, runs `train`.

    The strategy is created first (MultiWorkerMirroredStrategy must precede other
    TensorFlow ops). Everything is checked before the first training step.

    Args:
        model_dir: output folder (see `train`).
        features_npz: a `.npz` with `features` (or `rgb` and `flow`), `labels` and
            optionally `class_names`.
        features_dir: the feature cache folder (alternative to `features_npz`).
        flow_features_dir: two_stream: a separate folder of the flow caches.
        split: split of the feature cache to train on.
        num_classes: int C; default the number of class names the input records.
        modality, preset, fusion, level, feature_dim, flow_dim, masking: see
            `build_model`.
        units, num_steps, dropout: architecture overrides (None: the preset's).
        strategy: "default", "mirrored" or "multi_worker".
        **train_kwargs: passed to `train` (epochs, batch_size, optimizer, ...).

    Returns:
        The `TrainResult`.
    """
    from reslstm_tf import models

    _check_choice("modality", modality, MODALITIES)
    _check_choice("strategy", strategy, STRATEGIES)
    arch = {"units": units, "num_steps": num_steps, "dropout": dropout}
    given = {k: v for k, v in arch.items() if v is not None}
    steps = models.resolve_architecture(preset, **given)["num_steps"]
    if dropout is not None and not 0 <= dropout < 1:
        raise TrainingInputError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")
    _check_positive_int("feature_dim", feature_dim)
    check_model_dir(model_dir)
    if features_npz is None and features_dir is not None and not os.path.isdir(features_dir):
        raise TrainingInputError(
            f"features_dir {str(features_dir)!r} is not an existing folder; expected the "
            "feature cache written by the extractor"
        )
    if flow_features_dir is not None and not os.path.isdir(flow_features_dir):
        raise TrainingInputError(
            f"flow_features_dir {str(flow_features_dir)!r} is not an existing folder; expected "
            "the flow feature cache written by reslstm-extract"
        )
    if features_npz is not None and not os.path.isfile(features_npz):
        raise TrainingInputError(f"features_npz {str(features_npz)!r} does not exist")
    dist = make_strategy(strategy)
    dataset, class_names = load_features(
        features_npz, features_dir, split, modality, steps, flow_features_dir
    )
    if num_classes is None:
        if not class_names:
            raise TrainingInputError(
                "num_classes is not set and the features record no class names; pass num_classes"
            )
        num_classes = len(class_names)
    elif class_names and len(class_names) != num_classes:
        raise TrainingInputError(
            f"num_classes={num_classes} but the features record {len(class_names)} class names"
        )
    _check_positive_int("num_classes", num_classes)
    model_config = dict(
        num_classes=num_classes,
        modality=modality,
        preset=preset,
        fusion=fusion,
        level=level,
        feature_dim=feature_dim,
        flow_dim=flow_dim,
        masking=masking,
        **arch,
    )
    if modality == "two_stream":
        expected = {"rgb": (steps, feature_dim), "flow": (steps, flow_dim or feature_dim)}
    else:
        expected = {"features": (steps, feature_dim)}
    check_shapes(dataset, expected, source=str(features_npz or features_dir))
    config = {
        "model": model_config,
        "class_names": class_names,
        "strategy": strategy,
        "features_npz": None if features_npz is None else str(features_npz),
        "features_dir": None if features_dir is None else str(features_dir),
        "flow_features_dir": None if flow_features_dir is None else str(flow_features_dir),
        "split": split,
        **{k: v for k, v in train_kwargs.items() if isinstance(v, (int, float, str, bool))},
    }
    return train(
        lambda: build_model(**model_config),
        dataset,
        num_classes=num_classes,
        model_dir=model_dir,
        strategy=dist,
        config=config,
        **train_kwargs,
    )
