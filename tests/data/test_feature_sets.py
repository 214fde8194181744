"""Feature sets: caches and `.npz` files read as model input, and the RGB/flow join by video id."""

import numpy as np
import pytest
import tensorflow as tf

from reslstm_tf.data import feature_sets, sampling
from reslstm_tf.data.feature_cache import FeatureCacheWriter
from reslstm_tf.data.feature_sets import FeatureInputError
from tests.training.helpers import CLASS_NAMES, write_cache, write_cache_root


@pytest.fixture
def cache_root(tmp_path):
    """train/{rgb,flow} and test/rgb caches (flow in another video order)."""
    return (tmp_path, *write_cache_root(tmp_path))


def test_cache_dataset(tmp_path):
    rng = np.random.default_rng(0)
    stored = {}
    with FeatureCacheWriter(tmp_path, shard_size=3) as writer:
        for i in range(7):
            feats = rng.standard_normal((4, 5)).astype(np.float32)
            stored[i] = feats
            writer.add(f"v{i}", i % 3, feats, meta={"i": i})
    ds = feature_sets.cache_dataset(tmp_path, num_steps=8, batch_size=3, seed=1)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [3, 3, 1]
    x, y = batches[0]
    assert x.shape == (3, 8, 5) and y.dtype == tf.int32
    sigma = sampling.step_segment_map(8, 4)
    seen = 0
    for xb, yb in batches:
        for feats, label in zip(xb.numpy(), yb.numpy()):
            match = [i for i, f in stored.items() if np.array_equal(f[sigma], feats)]
            assert len(match) == 1 and match[0] % 3 == label
            seen += 1
    assert seen == 7

    def order():
        return [int(v) for _, y in feature_sets.cache_dataset(tmp_path, seed=3) for v in y]

    assert order() == order()


def test_single_stream_cache_yields_the_written_features(cache_root):
    root, _, x, _, y = cache_root
    dataset, names = feature_sets.split_dataset(root, "train", "rgb")
    assert names == CLASS_NAMES
    got = {features.tobytes(): label for features, label in dataset.as_numpy_iterator()}
    expected = {features.tobytes(): int(label) for features, label in zip(x, y)}
    assert got == expected


def test_two_stream_cache_is_joined_by_video_id(cache_root):
    root, _, x, flow, y = cache_root
    dataset, _ = feature_sets.split_dataset(root, "train", "two_stream", num_steps=3)
    segments = [1, 3, 5]  # floor((t + 0.5) * 6 / 3) for t = 0, 1, 2
    seen = 0
    for features, label in dataset.as_numpy_iterator():
        match = [i for i in range(len(y)) if np.array_equal(x[i, segments], features["rgb"])]
        assert len(match) == 1
        np.testing.assert_array_equal(features["flow"], flow[match[0], segments])
        assert label == y[match[0]]
        seen += 1
    assert seen == len(y)


def test_feature_set_joins_rgb_and_flow_by_id(cache_root):
    root, ids, x, flow, y = cache_root
    data = feature_sets.load_feature_set(root / "train" / "rgb", root / "train" / "flow")
    assert data.ids == sorted(ids) == ids
    np.testing.assert_array_equal(data.labels, y)
    np.testing.assert_array_equal(data.rgb, x)
    np.testing.assert_array_equal(data.flow, flow)  # stored in another order, joined by id
    assert data.class_names == CLASS_NAMES and data.metadata["modality"] == "rgb"
    only_rgb = feature_sets.load_feature_set(root / "train" / "rgb")
    assert only_rgb.flow is None
    np.testing.assert_array_equal(feature_sets.select_steps(x, 3), x[:, [1, 3, 5]])


def test_feature_set_refuses_caches_that_disagree(cache_root, tmp_path):
    root, ids, x, flow, y = cache_root
    write_cache(tmp_path / "short_flow", ids[:5], flow[:5], y[:5], "flow")
    with pytest.raises(FeatureInputError, match="hold different videos"):
        feature_sets.load_feature_set(root / "train" / "rgb", tmp_path / "short_flow")
    write_cache(tmp_path / "relabelled", ids, flow, (y + 1) % 4, "flow")
    with pytest.raises(FeatureInputError, match="different labels"):
        feature_sets.load_feature_set(root / "train" / "rgb", tmp_path / "relabelled")
    with pytest.raises(FeatureInputError, match="is not a folder"):
        feature_sets.load_feature_set(tmp_path / "absent")


def test_missing_split_or_stream_is_named(cache_root):
    root = cache_root[0]
    with pytest.raises(FeatureInputError, match="no flow feature cache for split"):
        feature_sets.split_dataset(root, "test", "two_stream")
    with pytest.raises(FeatureInputError, match="holds 'rgb' features, not 'flow'"):
        feature_sets.split_dataset(root / "train" / "rgb", "train", "flow")


def test_split_dataset_requires_an_existing_folder(tmp_path):
    with pytest.raises(FeatureInputError, match="is not an existing folder"):
        feature_sets.split_dataset(tmp_path / "absent", "train")


def test_npz_without_labels_is_refused(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, features=np.zeros((2, 3, 4), "float32"))
    with pytest.raises(FeatureInputError, match="expected 'labels'"):
        feature_sets.load_npz_features(path)


def test_npz_round_trip_and_modality_selection(tmp_path):
    x, y = feature_sets.synthetic_features(8, 2, 3, 4, two_stream=True)
    path = tmp_path / "two.npz"
    feature_sets.write_npz_features(path, x, y, ["p", "q"])
    features, labels, names = feature_sets.load_npz_features(path)
    np.testing.assert_array_equal(features["flow"], x["flow"])
    np.testing.assert_array_equal(labels, y)
    assert names == ["p", "q"]
    assert feature_sets.select_modality(features, "rgb") is features["rgb"]
    with pytest.raises(FeatureInputError, match="needs 'rgb' and 'flow'"):
        feature_sets.select_modality(features["rgb"], "two_stream")
    with pytest.raises(FeatureInputError, match="exactly one feature input"):
        feature_sets.load_features()
