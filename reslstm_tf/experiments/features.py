"""Cached feature sets of an ablation: RGB (and flow) caches read into numpy, joined by clip id."""

import dataclasses
import pathlib

import numpy as np

from reslstm_tf.data.sampling import step_segment_map
from reslstm_tf.experiments.config import AblationError


@dataclasses.dataclass
class FeatureSet:
    """The cached features of one or two modalities, aligned by clip id.

    Attributes:
        ids: list of N clip ids (sorted).
        labels: int64 (N,).
        rgb: float32 (N, K, d_f).
        flow: float32 (N, K, d_f) or None.
        class_names: list of class names from the cache metadata (may be empty).
        metadata: the RGB cache's metadata dict.
    """

    ids: list
    labels: np.ndarray
    rgb: np.ndarray
    flow: np.ndarray = None
    class_names: list = dataclasses.field(default_factory=list)
    metadata: dict = dataclasses.field(default_factory=dict)


def _read_cache(cache_dir, flag_name):
    from reslstm_tf.data.feature_cache import FeatureCacheError, read_features

    path = pathlib.Path(cache_dir)
    if not path.is_dir():
        raise AblationError(
            f"{flag_name}={cache_dir} is not a folder; give a feature cache written by "
            "reslstm-extract (a folder with index.json and features-*.tfrecord)"
        )
    try:
        records = read_features(path)
    except FeatureCacheError as error:
        raise AblationError(f"{flag_name}={cache_dir}: {error}") from None
    if not records:
        raise AblationError(f"{flag_name}={cache_dir} holds no clips")
    shapes = {r["features"].shape for r in records}
    if len(shapes) != 1:
        raise AblationError(
            f"{flag_name}={cache_dir} holds clips with different feature shapes {sorted(shapes)}; "
            "the ablation needs K segments of d_f features for every clip"
        )
    return {r["id"]: r for r in records}


def load_feature_set(features_dir, flow_features_dir=None):
    """Reads an RGB feature cache (and optionally a flow cache) into a `FeatureSet`.

    Args:
        features_dir: RGB feature cache folder (from `reslstm-extract`).
        flow_features_dir: optional flow feature cache holding the same clip ids.

    Returns:
        A `FeatureSet`.

    Raises:
        AblationError: a folder is missing or not a cache, or the caches disagree.
    """
    from reslstm_tf.data.feature_cache import read_index

    rgb = _read_cache(features_dir, "features_dir")
    ids = sorted(rgb)
    labels = np.asarray([rgb[i]["label"] for i in ids], np.int64)
    metadata = read_index(features_dir)["metadata"]
    flow = None
    if flow_features_dir:
        flow_records = _read_cache(flow_features_dir, "flow_features_dir")
        missing = sorted(set(ids) ^ set(flow_records))
        if missing:
            raise AblationError(
                f"flow_features_dir={flow_features_dir} and features_dir={features_dir} hold "
                f"different clips ({len(missing)} differ, e.g. {missing[:3]}); finish the "
                "flow extraction or pass the matching caches"
            )
        flow_labels = np.asarray([flow_records[i]["label"] for i in ids])
        if not np.array_equal(flow_labels, labels):
            raise AblationError("the RGB and flow caches give different labels to some clips")
        flow = np.stack([flow_records[i]["features"] for i in ids]).astype(np.float32)
    return FeatureSet(
        ids=ids,
        labels=labels,
        rgb=np.stack([rgb[i]["features"] for i in ids]).astype(np.float32),
        flow=flow,
        class_names=list(metadata.get("classes", [])),
        metadata=metadata,
    )


def select_steps(features, num_steps):
    """Returns features (N, K, d) resampled to T steps: step t reads segment sigma(t)."""
    return features[:, step_segment_map(num_steps, features.shape[1])]
