"""Training and evaluation read the feature cache written by `reslstm_tf.data.feature_cache`."""

import numpy as np
import pytest

from reslstm_tf import evaluate as evaluate_lib
from reslstm_tf import train as train_lib
from reslstm_tf.data.feature_cache import FeatureCacheWriter
from tests.train.helpers import DIM, NUM_CLASSES, STEPS, separable_features

CLASSES = ["a", "b", "c", "d"]


def _write_cache(folder, ids, x, y, modality):
    metadata = {"modality": modality, "classes": CLASSES}
    with FeatureCacheWriter(folder, shard_size=7, metadata=metadata) as writer:
        for video_id, features, label in zip(ids, x, y):
            writer.add(video_id, int(label), features)


@pytest.fixture
def cache_root(tmp_path):
    """train/{rgb,flow} and test/rgb caches; flow written in another video order."""
    x, y = separable_features(num_videos=24)
    ids = [f"video_{i:03d}" for i in range(24)]
    _write_cache(tmp_path / "train" / "rgb", ids, x, y, "rgb")
    order = np.random.default_rng(0).permutation(24)
    flow = x[:, ::-1] * 0.5
    _write_cache(
        tmp_path / "train" / "flow", [ids[i] for i in order], flow[order], y[order], "flow"
    )
    _write_cache(tmp_path / "test" / "rgb", ids[:8], x[:8], y[:8], "rgb")
    return tmp_path, ids, x, flow, y


def test_single_stream_cache_yields_the_written_features(cache_root):
    root, _, x, _, y = cache_root
    dataset, names = train_lib.feature_dataset(root, "train", "rgb")
    assert names == CLASSES
    got = {features.tobytes(): label for features, label in dataset.as_numpy_iterator()}
    expected = {features.tobytes(): int(label) for features, label in zip(x, y)}
    assert got == expected


def test_two_stream_cache_is_joined_by_video_id(cache_root):
    root, _, x, flow, y = cache_root
    dataset, _ = train_lib.feature_dataset(root, "train", "two_stream", num_steps=3)
    segments = [1, 3, 5]  # floor((t + 0.5) * 6 / 3) for t = 0, 1, 2
    seen = 0
    for features, label in dataset.as_numpy_iterator():
        match = [i for i in range(len(y)) if np.array_equal(x[i, segments], features["rgb"])]
        assert len(match) == 1
        np.testing.assert_array_equal(features["flow"], flow[match[0], segments])
        assert label == y[match[0]]
        seen += 1
    assert seen == len(y)


def test_train_and_evaluate_from_the_cache(cache_root, tmp_path):
    root = cache_root[0]
    run_dir = tmp_path / "run"
    result = train_lib.run_training(
        model_dir=run_dir,
        features_dir=root,
        modality="two_stream",
        fusion="sum",
        preset="res2",
        feature_dim=DIM,
        units=16,
        num_steps=STEPS,
        epochs=1,
        batch_size=8,
        progress=False,
    )
    assert result.global_step == 3
    metrics = evaluate_lib.run_evaluation(
        model_dir=run_dir, features_dir=root, split="train", progress=False
    )
    assert metrics["num_videos"] == 24 and metrics["num_classes"] == NUM_CLASSES


def test_missing_split_or_stream_is_named(cache_root):
    root = cache_root[0]
    with pytest.raises(train_lib.TrainingInputError, match="no flow feature cache for split"):
        train_lib.feature_dataset(root, "test", "two_stream")
    with pytest.raises(train_lib.TrainingInputError, match="holds 'rgb' features, not 'flow'"):
        train_lib.feature_dataset(root / "train" / "rgb", "train", "flow")


def test_separate_flow_folder_and_eval_on_the_runs_test_split(cache_root, tmp_path):
    root, ids, x, flow, y = cache_root
    # The zoo recipes' layout: one folder per stream, each holding <split>/ caches.
    _write_cache(tmp_path / "flow_only" / "test", ids[:8], flow[:8], y[:8], "flow")
    _write_cache(tmp_path / "flow_only" / "train", ids, flow, y, "flow")
    run_dir = tmp_path / "run2"
    train_lib.run_training(
        model_dir=run_dir,
        features_dir=root,
        flow_features_dir=tmp_path / "flow_only",
        modality="two_stream",
        preset="res2",
        feature_dim=DIM,
        units=16,
        num_steps=STEPS,
        epochs=1,
        batch_size=8,
        progress=False,
    )
    # No features given: the run's own folders, split "test" (8 videos).
    with pytest.raises(train_lib.TrainingInputError, match="no rgb feature cache"):
        evaluate_lib.run_evaluation(model_dir=run_dir, split="valid", progress=False)
    metrics = evaluate_lib.run_evaluation(model_dir=run_dir, progress=False)
    assert metrics["num_videos"] == 8


def test_eval_never_defaults_to_a_split_less_training_cache(cache_root, tmp_path):
    root = cache_root[0]
    run_dir = tmp_path / "run3"
    train_lib.run_training(
        model_dir=run_dir,
        features_dir=root / "train" / "rgb",
        preset="res2",
        feature_dim=DIM,
        units=16,
        num_steps=STEPS,
        epochs=1,
        batch_size=8,
        progress=False,
    )
    with pytest.raises(train_lib.TrainingInputError, match="no rgb feature cache for split"):
        evaluate_lib.run_evaluation(model_dir=run_dir, progress=False)
