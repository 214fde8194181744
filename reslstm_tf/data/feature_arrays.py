"""Features in memory: the one training-view schedule, each epoch's views, `.npz`, synthetic.

Nothing here reads a feature cache (`reslstm_tf.data.feature_sets` does, and re-exports
every name of this module):

* `view_schedule`: which training-mode view each video reads in an epoch, the policy
  of every trainer that cycles through stored views (documented there, once);
* `epoch_views` / `view_dataset_fn`: the features of an epoch under that schedule;
* `select_steps` maps K segments onto T steps; `numpy_dataset` makes `tf.data` of arrays;
* `write_npz_features` / `load_npz_features` / `select_modality`: the `.npz` alternative;
* `synthetic_features`: a separable smoke-test input, no video needed.
"""

import pathlib
import zipfile

import numpy as np
import tensorflow as tf

from reslstm_tf.checks import check_choice, check_positive_int
from reslstm_tf.data import sampling
from reslstm_tf.files import atomic_write
from reslstm_tf.models import MODALITIES

STREAMS = ("rgb", "flow")


class FeatureInputError(ValueError):
    """Features (folder, cache, `.npz`) that cannot be used; raised before any training."""


def select_steps(features, num_steps):
    """Returns features (N, K, d) read at T steps: step t reads segment sigma(t)."""
    return features[:, sampling.step_segment_map(num_steps, features.shape[1])]


def numpy_dataset(features, labels):
    """Returns an unbatched `tf.data.Dataset` of `(features, label)` from numpy arrays."""
    return tf.data.Dataset.from_tensor_slices((features, np.asarray(labels, dtype="int64")))


# ------------------------------------------------------------- training-mode views


def view_schedule(num_videos, num_views, epoch, seed=0):
    """Returns the view each video trains on in an epoch: int64 (N,) in [0, V).

    The one schedule of stored training views, for everything that trains on V stored
    views per video: the feature-cache views of `reslstm-train` (`view_dataset_fn`), the
    cached trunk outputs of fine-tuning (`reslstm_tf.training.trunk_cache.TrunkSource`)
    and the study's runs. Other docstrings point here.

    Video n (its row in the run's fixed list of videos: the sorted ids of a feature cache,
    the index of a `VideoClips`) reads view ``(o_n + epoch) mod V``, where the offset
    ``o_n`` is drawn from ``numpy.random.SeedSequence([seed, n])``:

    * every V consecutive epochs show each video each of its views once;
    * videos start at different views, so one epoch mixes the views;
    * the choice depends on nothing but (seed, epoch, n): not on the epoch's order, the
      batching or the videos after n, so a resumed run reads the very same views and a
      subset of the videos (a fold) reads the views it would read in the whole list.

    Args:
        num_videos: N.
        num_views: V, views per video.
        epoch: the 0-based epoch.
        seed: the run's seed.

    Raises:
        FeatureInputError: N or V is not a positive integer, or the seed is negative.
    """
    num_videos = check_positive_int("num_videos", num_videos, error=FeatureInputError)
    num_views = check_positive_int("num_views", num_views, error=FeatureInputError)
    seed = check_positive_int("seed", seed, allow_zero=True, error=FeatureInputError)
    offsets = np.asarray(
        [
            np.random.default_rng(np.random.SeedSequence([seed, n])).integers(num_views)
            for n in range(num_videos)
        ],
        dtype=np.int64,
    )
    return (offsets + int(epoch)) % num_views


def _views_by_stream(views):
    """Returns ({stream: views (N, V, K, d)}, is_dict), checked to agree in N and V."""
    is_dict = isinstance(views, dict)
    arrays = {k: np.asarray(v) for k, v in (views.items() if is_dict else [("", views)])}
    shapes = {name: array.shape for name, array in arrays.items()}
    if any(len(shape) != 4 for shape in shapes.values()):
        raise FeatureInputError(
            f"views must be float arrays (N, V, K, d_f). Received shapes {shapes}"
        )
    if len({shape[:2] for shape in shapes.values()}) != 1:
        raise FeatureInputError(
            f"the streams' views must have the same N videos and V views. Received shapes {shapes}"
        )
    return arrays, is_dict


def epoch_views(views, epoch, seed=0, num_steps=None):
    """Returns the features of one epoch: each video's view of `view_schedule`.

    Args:
        views: float (N, V, K, d_f), or a dict {"rgb": ..., "flow": ...} of such (both
            streams read the same view index, so they share its flip: `reslstm-extract`
            draws view v of a video from the same seeds for both).
        epoch: the 0-based epoch.
        seed: the run's seed.
        num_steps: T; each step t reads segment sigma(t) (default T = K).

    Returns:
        float32 (N, T, d_f), or a dict of such.
    """
    arrays, is_dict = _views_by_stream(views)
    num_videos, num_views = next(iter(arrays.values())).shape[:2]
    chosen = view_schedule(num_videos, num_views, epoch, seed)
    rows = np.arange(num_videos)
    out = {}
    for name, array in arrays.items():
        picked = np.asarray(array[rows, chosen], dtype=np.float32)
        out[name] = picked if num_steps is None else select_steps(picked, num_steps)
    return out if is_dict else out[""]


def view_dataset_fn(views, labels, seed=0, num_steps=None):
    """Returns `dataset_fn(epoch)` for `Trainer.fit`: each epoch one view per video.

    Epoch e feeds row n the view `view_schedule(N, V, e, seed)[n]` of video n (see
    `epoch_views`); the Trainer then shuffles the rows by (seed, epoch) as for any data.

    Args:
        views: float (N, V, K, d_f), or a dict {"rgb": ..., "flow": ...} of such.
        labels: int (N,).
        seed: the run's seed (use the Trainer's).
        num_steps: T, the model's steps (default K).

    Returns:
        A callable epoch -> unbatched `tf.data.Dataset` of `(features (T, d_f), label)`.

    Example:

        data = load_feature_set("features/train/rgb")
        dataset_fn = view_dataset_fn(data.views, data.labels, seed=0, num_steps=16)
        trainer.fit(dataset_fn)
    """
    arrays, is_dict = _views_by_stream(views)
    labels = np.asarray(labels, dtype="int64")
    if labels.shape != (next(iter(arrays.values())).shape[0],):
        raise FeatureInputError(
            f"labels must be (N,) for the N videos of views. Received labels of shape "
            f"{labels.shape} for views of shapes { ({k: v.shape for k, v in arrays.items()}) }"
        )
    views = arrays if is_dict else arrays[""]

    def dataset_fn(epoch):
        return numpy_dataset(epoch_views(views, epoch, seed, num_steps), labels)

    return dataset_fn


# -------------------------------------------------------------------------------- .npz


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


def _npz_arrays(path, data):
    """Returns `(features, labels, class_names)` as stored in an open `.npz`."""
    keys = set(data.files)
    expected = "expected 'labels' and either 'features' or both 'rgb' and 'flow'"
    if "labels" not in keys:
        raise FeatureInputError(
            f"features file {str(path)!r} has arrays {sorted(keys)}; {expected}"
        )
    if "features" in keys:
        features = np.asarray(data["features"], dtype="float32")
    elif set(STREAMS) <= keys:
        features = {k: np.asarray(data[k], dtype="float32") for k in STREAMS}
    else:
        raise FeatureInputError(
            f"features file {str(path)!r} has arrays {sorted(keys)}; expected 'features' "
            "(one stream) or both 'rgb' and 'flow' (two streams)"
        )
    names = [str(n) for n in data["class_names"]] if "class_names" in keys else None
    return features, np.asarray(data["labels"]), names


def _check_npz_features(path, array, num_labels):
    if array.ndim not in (3, 4) or array.shape[0] != num_labels:
        raise FeatureInputError(
            f"features in {str(path)!r} must have shape (N, T, d_f), or (N, clips, T, d_f) "
            f"for multi-clip evaluation, with N = {num_labels} labels. "
            f"Received shape {array.shape}"
        )
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.argwhere(~finite.reshape(array.shape[0], -1).all(axis=1)).ravel()
        raise FeatureInputError(
            f"features in {str(path)!r} hold {int(array.size - finite.sum())} NaN or "
            f"infinite values, in {bad.size} of {array.shape[0]} videos (first: row "
            f"{int(bad[0])}); re-extract them or drop those rows"
        )


def load_npz_features(path):
    """Reads a features `.npz` file: `features` (or `rgb` and `flow`), `labels`, `class_names`.

    Features are `(N, T, d_f)`, or `(N, clips, T, d_f)` for multi-clip evaluation.

    Args:
        path: the `.npz` file.

    Returns:
        `(features, labels, class_names)`: an array (or a dict of two), an int64
        array, and a list of names or None.

    Raises:
        FeatureInputError: the file is missing, does not hold the expected arrays, or
            holds NaN or infinite features.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FeatureInputError(f"features file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            features, labels, names = _npz_arrays(path, data)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        if isinstance(error, FeatureInputError):
            raise
        raise FeatureInputError(
            f"features file {str(path)!r} cannot be read ({type(error).__name__}: {error}); "
            "it is truncated or not a .npz: write it again (write_npz_features)"
        ) from None
    for array in features.values() if isinstance(features, dict) else [features]:
        _check_npz_features(path, array, labels.shape[0])
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise FeatureInputError(
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
    check_choice("modality", modality, MODALITIES, FeatureInputError)
    if isinstance(features, dict):
        return dict(features) if modality == "two_stream" else features[modality]
    if modality == "two_stream":
        raise FeatureInputError(
            f"modality='two_stream' needs 'rgb' and 'flow' features, but {source} holds a "
            "single stream ('features'); use modality 'rgb' or 'flow'"
        )
    return features


# --------------------------------------------------------------------------- synthetic


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
