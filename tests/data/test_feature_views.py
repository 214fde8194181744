"""Training-mode views in the feature cache and the feature-set reader; the per-epoch choice."""

import numpy as np
import pytest
import tensorflow as tf

from reslstm_tf.data import feature_cache, feature_sets, sampling
from reslstm_tf.data.feature_cache import FeatureCacheError, FeatureCacheWriter
from reslstm_tf.data.feature_sets import FeatureInputError

K, D, V = 4, 5, 3


def video(i, views=V):
    """One video's centred features (K, D) and views (V, K, D), all different."""
    rng = np.random.default_rng(i)
    features = rng.uniform(0.1, 1.0, (K, D)).astype("float32")
    stack = rng.uniform(0.1, 1.0, (views, K, D)).astype("float32") if views else None
    return features, stack


def write(folder, ids, views=V, modality="rgb", shard_size=2):
    with FeatureCacheWriter(folder, shard_size=shard_size, metadata={"modality": modality}) as w:
        for i in ids:
            features, stack = video(i, views)
            w.add(f"v{i:02d}", i % 2, features, views=stack)


def test_views_round_trip_and_an_old_cache_reads_without_views(tmp_path):
    write(tmp_path / "new", range(5))
    write(tmp_path / "old", range(5), views=0)
    assert feature_cache.read_index(tmp_path / "new")["num_views"] == V
    assert feature_cache.read_index(tmp_path / "old")["num_views"] == 0
    for record in feature_cache.read_features(tmp_path / "new"):
        features, stack = video(int(record["id"][1:]))
        np.testing.assert_array_equal(record["features"], features)
        np.testing.assert_array_equal(record["views"], stack)
    assert all(r["views"] is None for r in feature_cache.read_features(tmp_path / "old"))
    # an independent reader: the raw tf.train.Example of the first record
    index = feature_cache.read_index(tmp_path / "new")
    raw = next(iter(tf.data.TFRecordDataset(index["files"][0])))
    feature = tf.train.Example.FromString(raw.numpy()).features.feature
    _, stack = video(int(feature["id"].bytes_list.value[0].decode()[1:]))
    assert list(feature["view_shape"].int64_list.value) == [V, K, D]
    np.testing.assert_allclose(feature["views"].float_list.value, stack.ravel())
    # an old cache's records hold neither key
    old = feature_cache.read_index(tmp_path / "old")["files"][0]
    keys = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(old))).numpy())
    assert not {"views", "view_shape"} & set(keys.features.feature)


def test_streamed_cache_reads_the_centred_view_of_a_cache_with_views(tmp_path):
    write(tmp_path, range(4), shard_size=4)
    dataset, _ = feature_sets.split_dataset(tmp_path, "train", "rgb")
    got = np.stack([x for x, _ in dataset.as_numpy_iterator()])
    np.testing.assert_array_equal(got, np.stack([video(i)[0] for i in range(4)]))


def test_writer_refuses_bad_views(tmp_path):
    features, stack = video(0)
    with FeatureCacheWriter(tmp_path / "a") as writer:
        with pytest.raises(FeatureCacheError, match=r"views must be \(V, K_v, d_f\)"):
            writer.add("x", 0, features, views=stack[:, :2])
        bad = stack.copy()
        bad[1, 2, 3] = np.nan
        with pytest.raises(FeatureCacheError, match="views of 'x' hold 1 NaN"):
            writer.add("x", 0, features, views=bad)
        writer.add("x", 0, features, views=stack)
        with pytest.raises(FeatureCacheError, match="'y' comes with 2 views; the cache holds 3"):
            writer.add("y", 0, features, views=stack[:2])
        with pytest.raises(FeatureCacheError, match="'z' comes with 0 views"):
            writer.add("z", 0, features)
    # resuming an index with views keeps its count
    with FeatureCacheWriter(tmp_path / "a") as writer:
        with pytest.raises(FeatureCacheError, match="comes with 1 views; the cache holds 3"):
            writer.add("w", 0, features, views=stack[:1])


def test_feature_set_exposes_the_views_of_both_streams(tmp_path):
    write(tmp_path / "rgb", range(5))
    write(tmp_path / "flow", [4, 2, 0, 3, 1], modality="flow")  # another order
    data = feature_sets.load_feature_set(tmp_path / "rgb", tmp_path / "flow")
    assert data.ids == [f"v{i:02d}" for i in range(5)]
    expected = np.stack([video(i)[1] for i in range(5)])
    np.testing.assert_array_equal(data.views, expected)
    np.testing.assert_array_equal(data.flow_views, expected)
    np.testing.assert_array_equal(data.rgb, np.stack([video(i)[0] for i in range(5)]))
    write(tmp_path / "plain", range(5), views=0)
    assert feature_sets.load_feature_set(tmp_path / "plain").views is None


def test_split_views_reads_a_split_at_t_steps_and_refuses_streams_that_disagree(tmp_path):
    root = tmp_path / "features"
    write(root / "train" / "rgb", range(6))
    write(root / "train" / "flow", range(6), views=2, modality="flow")
    assert feature_sets.split_num_views(root, "train", "two_stream") == {"rgb": V, "flow": 2}
    views, labels, _ = feature_sets.split_views(root, "train", "rgb", num_steps=6)
    step_map = sampling.step_segment_map(6, K)
    expected = np.stack([video(i)[1] for i in range(6)])[:, :, step_map]
    np.testing.assert_array_equal(views, expected)
    np.testing.assert_array_equal(labels, np.arange(6) % 2)
    with pytest.raises(FeatureInputError, match=r"same number of views .*: 3, .*: 2"):
        feature_sets.split_views(root, "train", "two_stream")
    write(root / "test" / "rgb", range(3), views=0)
    with pytest.raises(FeatureInputError, match="train_views off"):
        feature_sets.split_views(root, "test", "rgb")


def reference_schedule(num_videos, num_views, epoch, seed):
    """The documented choice: video n reads view (o_n + epoch) mod V, o_n from (seed, n)."""
    offsets = [
        np.random.default_rng(np.random.SeedSequence([seed, n])).integers(num_views)
        for n in range(num_videos)
    ]
    return (np.asarray(offsets) + epoch) % num_views


def test_view_schedule_cycles_through_every_view_and_depends_on_seed_epoch_video():
    n, views = 40, 4
    table = np.stack([feature_sets.view_schedule(n, views, e, seed=7) for e in range(8)])
    for start in (0, 3):  # any V consecutive epochs show every view once
        assert all(sorted(column) == list(range(views)) for column in table[start:][:views].T)
    assert len(set(table[0])) == views  # videos start at different views
    np.testing.assert_array_equal(table[5], reference_schedule(n, views, 5, 7))
    # a video's choice does not depend on how many videos follow it
    np.testing.assert_array_equal(feature_sets.view_schedule(10, views, 5, 7), table[5][:10])
    assert not np.array_equal(feature_sets.view_schedule(n, views, 5, seed=8), table[5])
    with pytest.raises(FeatureInputError, match="seed must be a non-negative integer"):
        feature_sets.view_schedule(n, views, 0, seed=-1)


def test_view_dataset_fn_feeds_each_video_its_view_of_the_epoch():
    rng = np.random.default_rng(0)
    views = {
        "rgb": rng.random((6, 3, K, D), "float32"),
        "flow": rng.random((6, 3, K, 2), "float32"),
    }
    labels = np.arange(6) % 2
    dataset_fn = feature_sets.view_dataset_fn(views, labels, seed=2, num_steps=8)
    step_map = sampling.step_segment_map(8, K)
    for epoch in (0, 1, 4):
        chosen = reference_schedule(6, 3, epoch, 2)
        elements = list(dataset_fn(epoch).as_numpy_iterator())
        assert [int(y) for _, y in elements] == list(labels)
        for n, (x, _) in enumerate(elements):
            for stream in ("rgb", "flow"):  # both streams read the same view
                expected = views[stream][n, chosen[n]][step_map]
                np.testing.assert_array_equal(x[stream], expected)
    with pytest.raises(FeatureInputError, match="labels must be \\(N,\\)"):
        feature_sets.view_dataset_fn(views["rgb"], labels[:5])
    with pytest.raises(FeatureInputError, match="same N videos and V views"):
        feature_sets.view_dataset_fn({"rgb": views["rgb"], "flow": views["flow"][:, :2]}, labels)
