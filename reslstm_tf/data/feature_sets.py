"""Feature sets: the features training, evaluation and the ablation read, from caches or `.npz`.

The one place that turns stored segment features into model input:

* `find_feature_cache` finds a split's cache (`reslstm-extract` output) under a folder;
* `cache_dataset` streams one cache folder as `tf.data` (the K_v cached segments read
  at T steps by `reslstm_tf.data.sampling.step_segment_map`);
* `load_feature_set` reads an RGB cache, and optionally a flow cache, into numpy,
  joined by video id (`FeatureSet`); `select_steps` maps its K segments onto T steps;
* `split_dataset` gives the `(features, label)` dataset of a split and modality
  (one stream streamed, two streams joined by `load_feature_set`);
* `split_views` reads the training-mode views a cache may hold (`reslstm-extract
  --views=V`) for a split and modality; `view_dataset_fn` feeds them to `Trainer.fit`,
  one per video and epoch, as `view_schedule` chooses;
* `load_features`: a split's dataset from a cache folder or a `.npz` file.

The in-memory half (`view_schedule`, `epoch_views`, `view_dataset_fn`, `select_steps`,
`numpy_dataset`, the `.npz` files and `synthetic_features`) lives in
`reslstm_tf.data.feature_arrays`; its names are importable from here too.
"""

import dataclasses
import pathlib

import numpy as np
import tensorflow as tf

from reslstm_tf.checks import check_choice
from reslstm_tf.data import feature_cache, sampling
from reslstm_tf.data.feature_arrays import (
    STREAMS,
    FeatureInputError,
    epoch_views,
    load_npz_features,
    numpy_dataset,
    select_modality,
    select_steps,
    synthetic_features,
    view_dataset_fn,
    view_schedule,
    write_npz_features,
)
from reslstm_tf.models import MODALITIES

# ------------------------------------------------------------------------------ caches


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
        FeatureInputError: `features_dir` is missing or none of the candidates is a cache.
    """
    root = pathlib.Path(features_dir)
    if not root.is_dir():
        raise FeatureInputError(
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
    raise FeatureInputError(
        f"no {modality} feature cache for split {split!r} under {str(root)!r}: none of {tried} "
        "holds a cache index (index*.json) written by reslstm-extract"
    )


def _cache_index(folder, modality=None):
    """Returns the index of a cache folder after checking it holds `modality` features."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FeatureInputError(
            f"{str(folder)!r} is not a folder; give a feature cache written by reslstm-extract "
            "(a folder with index.json and features-*.tfrecord)"
        )
    try:
        index = feature_cache.read_index(folder)
    except feature_cache.FeatureCacheError as error:
        raise FeatureInputError(f"{str(folder)!r}: {error}") from None
    stored = index["metadata"].get("modality")
    if modality is not None and stored is not None and stored != modality:
        raise FeatureInputError(
            f"the feature cache {str(folder)!r} holds {stored!r} features, not {modality!r}"
        )
    return index


def _class_names(metadata):
    names = metadata.get("classes") or metadata.get("class_names")
    return [str(n) for n in names] if names else []


def cache_dataset(
    cache_dir,
    *,
    num_steps=None,
    batch_size=32,
    shuffle=True,
    seed=None,
    drop_remainder=False,
    repeat=False,
):
    """Streams one feature cache folder as a `tf.data` pipeline of `(features (T, d_f), label)`.

    Args:
        cache_dir: a folder written by `feature_cache.FeatureCacheWriter`.
        num_steps: T; each step t reads segment sigma(t) (default T = K_v).
        batch_size: batch size (None: unbatched).
        shuffle: shuffle the videos each epoch (buffer = the whole cache).
        seed: seed of the shuffle.
        drop_remainder: drop the last partial batch.
        repeat: repeat forever.

    Returns:
        A `tf.data.Dataset` of (float32 (batch, T, d_f), int32 (batch,)).
    """
    index = feature_cache.read_index(cache_dir)
    num_segments, feature_dim = index["feature_shape"]
    steps = num_segments if num_steps is None else num_steps
    step_map = tf.constant(sampling.step_segment_map(steps, num_segments), tf.int32)
    ds = feature_cache.tfrecord_dataset(cache_dir, index=index)

    def _to_input(example):
        feats = tf.reshape(example["features"], (num_segments, feature_dim))
        return tf.gather(feats, step_map), tf.cast(example["label"], tf.int32)

    if shuffle:
        ds = ds.shuffle(max(len(index["ids"]), 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(_to_input, num_parallel_calls=tf.data.AUTOTUNE)
    if repeat:
        ds = ds.repeat()
    if batch_size:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------- numpy sets


@dataclasses.dataclass
class FeatureSet:
    """The cached features of one or two streams in memory, aligned by video id.

    Attributes:
        ids: list of N video ids (sorted).
        labels: int64 (N,).
        rgb: float32 (N, K, d_f), the centred (evaluation) view.
        flow: float32 (N, K, d_f) or None.
        class_names: list of class names from the cache metadata (may be empty).
        metadata: the RGB cache's metadata dict.
        views: float32 (N, V, K, d_f), the RGB cache's training-mode views, or None (a
            cache extracted without `views`).
        flow_views: float32 (N, V, K, d_f) of the flow cache, or None.
    """

    ids: list
    labels: np.ndarray
    rgb: np.ndarray
    flow: np.ndarray = None
    class_names: list = dataclasses.field(default_factory=list)
    metadata: dict = dataclasses.field(default_factory=dict)
    views: np.ndarray = None
    flow_views: np.ndarray = None


def _read_records(folder, modality):
    """Returns ({video id: record}, index) of a whole cache, checked to be one shape."""
    index = _cache_index(folder, modality)
    try:
        records = feature_cache.read_features(folder)
    except feature_cache.FeatureCacheError as error:
        raise FeatureInputError(f"{str(folder)!r}: {error}") from None
    if not records:
        raise FeatureInputError(f"the feature cache {str(folder)!r} holds no videos")
    shapes = {r["features"].shape for r in records}
    if len(shapes) != 1:
        raise FeatureInputError(
            f"the feature cache {str(folder)!r} holds videos with different feature shapes "
            f"{sorted(shapes)}; every video needs K segments of d_f features"
        )
    return {r["id"]: r for r in records}, index


def _stack(records, ids):
    return np.stack([records[i]["features"] for i in ids]).astype(np.float32)


def _stack_views(records, ids, folder):
    """Returns the views (N, V, K, d_f) of the records, or None if the cache has none."""
    counts = {0 if records[i]["views"] is None else len(records[i]["views"]) for i in ids}
    if counts == {0}:
        return None
    if len(counts) != 1 or 0 in counts:
        raise FeatureInputError(
            f"the feature cache {str(folder)!r} holds videos with different numbers of "
            f"views {sorted(counts)}; extract it again with one --views"
        )
    return np.stack([records[i]["views"] for i in ids]).astype(np.float32)


def _read_stream(folder, modality, ids=None, labels=None, other=None):
    """Returns (records, index) of a cache, checked to hold `ids` with `labels` if given."""
    records, index = _read_records(folder, modality)
    if ids is None:
        return records, index
    differ = sorted(set(ids) ^ set(records))
    if differ:
        raise FeatureInputError(
            f"the rgb cache {str(other)!r} and the flow cache {str(folder)!r} hold different "
            f"videos ({len(differ)} in only one, e.g. {differ[:3]}); extract both streams for "
            "the same list of videos"
        )
    if not np.array_equal(np.asarray([records[i]["label"] for i in ids], np.int64), labels):
        raise FeatureInputError(
            f"the rgb cache {str(other)!r} and the flow cache {str(folder)!r} give different "
            "labels to some videos"
        )
    return records, index


def load_feature_set(features_dir, flow_features_dir=None):
    """Reads an RGB feature cache (and optionally a flow cache) into a `FeatureSet`.

    The flow cache must hold the same video ids with the same labels; its videos may
    be stored in another order.

    Args:
        features_dir: the RGB feature cache folder (from `reslstm-extract`).
        flow_features_dir: optional flow feature cache folder.

    Returns:
        A `FeatureSet` (with `views` / `flow_views` when the caches hold them).

    Raises:
        FeatureInputError: a folder is missing or not a cache, or the caches disagree.
    """
    rgb, index = _read_records(features_dir, "rgb")
    ids = sorted(rgb)
    labels = np.asarray([rgb[i]["label"] for i in ids], np.int64)
    flow = flow_views = None
    if flow_features_dir:
        flow_records, _ = _read_stream(flow_features_dir, "flow", ids, labels, features_dir)
        flow = _stack(flow_records, ids)
        flow_views = _stack_views(flow_records, ids, flow_features_dir)
    metadata = index["metadata"]
    return FeatureSet(
        ids,
        labels,
        _stack(rgb, ids),
        flow,
        _class_names(metadata),
        metadata,
        views=_stack_views(rgb, ids, features_dir),
        flow_views=flow_views,
    )


def split_dataset(
    features_dir, split, modality="rgb", num_steps=None, flow_features_dir=None, allow_single=True
):
    """Returns `(dataset, class_names)` of one split of the feature cache, for one modality.

    Single streams stream from the sharded TFRecords (`cache_dataset`); two streams
    are read into memory and joined by video id (`load_feature_set`). With
    `num_steps=T`, the K_v cached segments of a video are read at T steps.

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
        FeatureInputError: no cache found, a cache of the wrong stream, or two-stream
            caches that do not hold the same videos.
    """
    folders = _split_folders(features_dir, split, modality, flow_features_dir, allow_single)
    if modality != "two_stream":
        folder = folders[modality]
        names = _class_names(_cache_index(folder, modality)["metadata"])
        dataset = cache_dataset(folder, num_steps=num_steps, batch_size=None, shuffle=False)
        return dataset, names or None
    rgb_folder, flow_folder = _separate_streams(folders, features_dir, split)
    data = load_feature_set(rgb_folder, flow_folder)
    names = data.class_names or _class_names(_cache_index(flow_folder)["metadata"])
    arrays = {"rgb": data.rgb, "flow": data.flow}
    if num_steps is not None:
        arrays = {stream: select_steps(values, num_steps) for stream, values in arrays.items()}
    return numpy_dataset(arrays, data.labels), names or None


def split_video_ids(features_dir, split, modality="rgb", flow_features_dir=None, allow_single=True):
    """The video ids of `split_dataset`'s examples, in its order (same arguments)."""
    folders = _split_folders(features_dir, split, modality, flow_features_dir, allow_single)
    if modality == "two_stream":
        rgb_folder, flow_folder = _separate_streams(folders, features_dir, split)
        return load_feature_set(rgb_folder, flow_folder).ids
    ids = feature_cache.tfrecord_ids(folders[modality])
    return [video_id.decode() for video_id in ids.as_numpy_iterator()]


def _split_folders(features_dir, split, modality, flow_features_dir, allow_single):
    """Returns {stream: cache folder} `split_dataset` reads for these arguments."""
    check_choice("modality", modality, MODALITIES, FeatureInputError)
    if modality != "two_stream":
        return {modality: find_feature_cache(features_dir, split, modality, allow_single)}
    flow_root = flow_features_dir or features_dir
    return {
        "rgb": find_feature_cache(features_dir, split, "rgb", allow_single),
        "flow": find_feature_cache(flow_root, split, "flow", allow_single),
    }


def _separate_streams(folders, features_dir, split):
    """Returns the (rgb, flow) folders of two streams, refusing one cache for both."""
    if folders["rgb"] == folders["flow"]:
        raise FeatureInputError(
            f"two_stream needs separate rgb and flow caches ({split}/rgb and {split}/flow "
            f"under {str(features_dir)!r}, or flow_features_dir); found only "
            f"{str(folders['rgb'])!r}"
        )
    return folders["rgb"], folders["flow"]


def split_num_views(
    features_dir, split, modality="rgb", flow_features_dir=None, allow_single=True
):  # fmt: skip
    """Returns {stream: V}, the training-mode views per video of a split's caches (0: none).

    Reads only the cache indexes (cheap); `split_views` reads the views.

    Raises:
        FeatureInputError: as `split_dataset`.
    """
    folders = _split_folders(features_dir, split, modality, flow_features_dir, allow_single)
    return {stream: _cache_index(folder, stream)["num_views"] for stream, folder in folders.items()}


def split_views(
    features_dir, split, modality="rgb", num_steps=None, flow_features_dir=None,
    allow_single=True,
):  # fmt: skip
    """Returns `(views, labels, class_names)`: a split's training-mode views in memory.

    Args:
        features_dir, split, modality, flow_features_dir, allow_single: as
            `split_dataset`.
        num_steps: T; the K cached segments are read at T steps (default K).

    Returns:
        views float32 (N, V, T, d_f) (a dict {"rgb", "flow"} of such for two_stream),
        in the order of the sorted video ids; int64 labels (N,); the class names recorded
        in the cache (or None).

    Raises:
        FeatureInputError: as `split_dataset`, or a cache without views, or streams with
            different numbers of views.
    """
    folders = _split_folders(features_dir, split, modality, flow_features_dir, allow_single)
    if modality == "two_stream":
        data = load_feature_set(*_separate_streams(folders, features_dir, split))
        arrays = {"rgb": data.views, "flow": data.flow_views}
        names = data.class_names or _class_names(_cache_index(folders["flow"])["metadata"])
        labels = data.labels
    else:
        records, index = _read_records(folders[modality], modality)
        ids = sorted(records)
        arrays = {modality: _stack_views(records, ids, folders[modality])}
        labels = np.asarray([records[i]["label"] for i in ids], np.int64)
        names = _class_names(index["metadata"])
    counts = {s: 0 if a is None else a.shape[1] for s, a in arrays.items()}
    if 0 in counts.values() or len(set(counts.values())) != 1:
        listed = ", ".join(f"{str(folders[s])!r}: {v}" for s, v in counts.items())
        raise FeatureInputError(
            f"training on views needs every stream's cache to hold the same number of views "
            f"per video; the caches hold {listed}: extract them with one reslstm-extract "
            "--views, or train on the centred view (train_views off)"
        )
    if num_steps is not None:
        arrays = {
            s: a[:, :, sampling.step_segment_map(num_steps, a.shape[2])] for s, a in arrays.items()
        }
    views = arrays if modality == "two_stream" else arrays[modality]
    return views, labels, names or None


def split_metadata(
    features_dir, split, modality="rgb", flow_features_dir=None, allow_single=True
):  # fmt: skip
    """Returns {stream: index metadata} of the caches `split_dataset` reads for these arguments.

    The metadata records how the features were extracted (backbone, weights, segments,
    segment length, frame size, ...; see `reslstm_tf.runs.feature_spec`).

    Raises:
        FeatureInputError: as `split_dataset`.
    """
    folders = _split_folders(features_dir, split, modality, flow_features_dir, allow_single)
    return {stream: _cache_index(folder, stream)["metadata"] for stream, folder in folders.items()}


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
        raise FeatureInputError(
            "give exactly one feature input: features_npz (a .npz file) or features_dir "
            f"(the feature cache). Received: features_npz={features_npz!r}, "
            f"features_dir={features_dir!r}"
        )
    if features_npz is not None:
        features, labels, names = load_npz_features(features_npz)
        features = select_modality(features, modality, source=str(features_npz))
        return numpy_dataset(features, labels), names
    return split_dataset(features_dir, split, modality, num_steps, flow_features_dir, allow_single)


__all__ = [
    "STREAMS",
    "FeatureInputError",
    "FeatureSet",
    "cache_dataset",
    "epoch_views",
    "find_feature_cache",
    "load_feature_set",
    "load_features",
    "load_npz_features",
    "numpy_dataset",
    "select_modality",
    "select_steps",
    "split_dataset",
    "split_metadata",
    "split_num_views",
    "split_video_ids",
    "split_views",
    "synthetic_features",
    "view_dataset_fn",
    "view_schedule",
    "write_npz_features",
]
