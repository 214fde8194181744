"""Evaluation metrics, multi-clip averaging and outputs, checked against plain numpy loops."""

import csv
import json

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf

from reslstm_tf import evaluate as evaluate_lib
from reslstm_tf import plots
from reslstm_tf.data.feature_sets import FeatureInputError, numpy_dataset
from reslstm_tf.models import build_single_stream, build_two_stream
from reslstm_tf.runs import RunDir
from reslstm_tf.training import run_training
from tests.training.helpers import (
    NUM_CLASSES,
    TINY_RUN,
    separable_features,
    write_cache,
    write_cache_root,
    write_features,
)

CLASSES = 7
T, D = 5, 8


@pytest.fixture
def features_npz(tmp_path):
    """A .npz feature file (48 videos, 4 classes, T=6, d_f=16)."""
    return write_features(tmp_path / "train_features.npz")


@pytest.fixture
def cache_root(tmp_path):
    """train/{rgb,flow} and test/rgb feature caches; returns (root, ids, rgb, flow, labels)."""
    root = tmp_path / "features"
    return (root, *write_cache_root(root))


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return build_single_stream(CLASSES, "res2", feature_dim=D, units=8, num_steps=T)


def _reference_probs(model, clips):
    """Softmax of each clip separately (one forward pass per clip), averaged per video."""
    out = []
    for video in clips:
        logits = np.stack([model.predict(clip[None], verbose=0)[0] for clip in video])
        e = np.exp(logits.astype("float64") - logits.max(axis=1, keepdims=True))
        out.append((e / e.sum(axis=1, keepdims=True)).mean(axis=0))
    return np.array(out)


def _reference_metrics(probs, labels):
    top1 = np.mean([np.argmax(p) == y for p, y in zip(probs, labels)])
    top5 = np.mean([y in np.argsort(p)[::-1][:5] for p, y in zip(probs, labels)])
    per_class = {}
    for c in range(probs.shape[1]):
        idx = [i for i, y in enumerate(labels) if y == c]
        if idx:
            per_class[c] = (len(idx), sum(np.argmax(probs[i]) == c for i in idx))
    mean_class = np.mean([correct / n for n, correct in per_class.values()])
    return top1, top5, mean_class, per_class


@pytest.mark.slow
@pytest.mark.parametrize("num_clips", [1, 3])
def test_metrics_and_outputs_match_numpy(tmp_path, num_clips):
    rng = np.random.default_rng(num_clips)
    n = 23
    clips = rng.normal(size=(n, num_clips, T, D)).astype("float32")
    # Class 6 has no video: it must be left out of the mean class accuracy.
    labels = rng.integers(0, CLASSES - 1, size=n)
    model = _model()
    features = clips[:, 0] if num_clips == 1 else clips
    names = [f"action {c}" for c in range(CLASSES)]
    frames = {
        0: rng.integers(0, 256, size=(6, 24, 32, 3), dtype=np.uint8),
        4: rng.random(size=(24, 32, 3)),
    }
    metrics = evaluate_lib.evaluate(
        model,
        numpy_dataset(features, labels),
        names,
        tmp_path,
        num_clips=num_clips,
        batch_size=5,
        frames=frames,
        top5_videos=[0, 4, 9],
        progress=False,
    )
    probs = _reference_probs(model, clips)
    top1, top5, mean_class, per_class = _reference_metrics(probs, labels)

    saved = np.load(tmp_path / "predictions.npz")
    np.testing.assert_allclose(saved["probabilities"], probs, atol=1e-6)
    np.testing.assert_array_equal(saved["labels"], labels)
    assert metrics == json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["top1"] == pytest.approx(top1)
    assert metrics["top5"] == pytest.approx(top5)
    assert metrics["mean_class_accuracy"] == pytest.approx(mean_class)
    assert metrics["num_videos"] == n and metrics["num_clips"] == num_clips

    with open(tmp_path / "per_class_accuracy.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["class_name"] for r in rows] == names
    for c, row in enumerate(rows):
        videos, correct = per_class.get(c, (0, 0))
        assert int(row["num_videos"]) == videos and int(row["num_correct"]) == correct
        if videos:
            assert float(row["accuracy"]) == pytest.approx(correct / videos, abs=1e-6)
        else:
            assert row["accuracy"] == ""

    for name in ("confusion_matrix.png", "top5_predictions.png"):
        image = matplotlib.image.imread(tmp_path / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_top_k_and_confusion_against_loops():
    rng = np.random.default_rng(3)
    probs = rng.random(size=(40, 6))
    labels = rng.integers(0, 6, size=40)
    for k in (1, 2, 5, 6, 9):
        expected = np.mean([np.sum(p > p[y]) < k for p, y in zip(probs, labels)])
        assert evaluate_lib.top_k_accuracy(probs, labels, k) == pytest.approx(expected)
    predicted = probs.argmax(axis=1)
    matrix = evaluate_lib.confusion_matrix(labels, predicted, 6)
    for i in range(6):
        for j in range(6):
            assert matrix[i, j] == np.sum((labels == i) & (predicted == j))


def test_two_stream_multi_clip_evaluation(tmp_path):
    rng = np.random.default_rng(1)
    keras.utils.set_random_seed(1)
    model = build_two_stream(
        CLASSES, "res2", fusion="sum", level="late", rgb_dim=D, flow_dim=D, units=8, num_steps=T
    )
    rgb = rng.normal(size=(6, 2, T, D)).astype("float32")
    flow = rng.normal(size=(6, 2, T, D)).astype("float32")
    labels = np.arange(6)
    dataset = tf.data.Dataset.from_tensor_slices(({"rgb": rgb, "flow": flow}, labels))
    probs, got_labels = evaluate_lib.predict_probabilities(model, dataset, 2, progress=False)
    logits = model.predict({"rgb": rgb.reshape(12, T, D), "flow": flow.reshape(12, T, D)})
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected = (e / e.sum(axis=1, keepdims=True)).reshape(6, 2, CLASSES).mean(axis=1)
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.slow
def test_evaluates_a_trained_run_from_its_model_dir(tmp_path, features_npz):
    run_dir = tmp_path / "run"
    result = run_training(model_dir=run_dir, features_npz=features_npz, **TINY_RUN)
    metrics = evaluate_lib.run_evaluation(
        model_dir=run_dir, features_npz=features_npz, progress=False
    )
    data = np.load(features_npz)
    predicted = result.model.predict(data["features"], verbose=0).argmax(axis=1)
    assert metrics["top1"] == pytest.approx(np.mean(predicted == data["labels"]))
    assert (run_dir / "eval_test" / "metrics.json").is_file()
    with open(run_dir / "eval_test" / "per_class_accuracy.csv") as handle:
        assert [row["class_name"] for row in csv.DictReader(handle)] == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"class_names": ["a", "b"]}, "got 2 class names but the model predicts 7 classes"),
        ({"num_clips": 4}, "hold 3 clips per video but num_clips=4"),
        ({"top5_videos": [50]}, "top5_videos [50] are not video indices in [0, 4)"),
        ({"labels": [0, 1, 7, 2]}, "label 7 outside the class range [0, 7)"),
    ],
)
def test_bad_evaluation_input(tmp_path, kwargs, message):
    features = np.zeros((4, 3, T, D), "float32")
    labels = kwargs.pop("labels", [0, 1, 2, 3])
    args = {"class_names": None, "num_clips": 3, "progress": False, **kwargs}
    with pytest.raises(evaluate_lib.EvaluationInputError) as info:
        evaluate_lib.evaluate(_model(), numpy_dataset(features, labels), out_dir=tmp_path, **args)
    assert message in str(info.value)


def test_run_without_weights_or_config_is_refused(tmp_path):
    with pytest.raises(evaluate_lib.EvaluationInputError, match="has no train_config.json"):
        evaluate_lib.load_trained_model(tmp_path)


# ------------------------------------------------------------------ runs on feature caches


@pytest.mark.slow
def test_train_and_evaluate_from_the_cache(cache_root, tmp_path):
    root = cache_root[0]
    run_dir = tmp_path / "run"
    result = run_training(
        model_dir=run_dir, features_dir=root, modality="two_stream", fusion="sum", **TINY_RUN
    )
    assert result.global_step == 3
    metrics = evaluate_lib.run_evaluation(
        model_dir=run_dir, features_dir=root, split="train", progress=False
    )
    assert metrics["num_videos"] == 24 and metrics["num_classes"] == NUM_CLASSES
    assert RunDir(run_dir).metrics() == {"train": metrics}


@pytest.mark.slow
def test_separate_flow_folder_and_eval_on_the_runs_test_split(cache_root, tmp_path):
    root, ids, x, flow, y = cache_root
    # The zoo recipes' layout: one folder per stream, each holding <split>/ caches.
    write_cache(tmp_path / "flow_only" / "test", ids[:8], flow[:8], y[:8], "flow")
    write_cache(tmp_path / "flow_only" / "train", ids, flow, y, "flow")
    run_dir = tmp_path / "run2"
    run_training(
        model_dir=run_dir,
        features_dir=root,
        flow_features_dir=tmp_path / "flow_only",
        modality="two_stream",
        **TINY_RUN,
    )
    # No features given: the run's own folders, split "test" (8 videos).
    with pytest.raises(FeatureInputError, match="no rgb feature cache"):
        evaluate_lib.run_evaluation(model_dir=run_dir, split="valid", progress=False)
    metrics = evaluate_lib.run_evaluation(model_dir=run_dir, progress=False)
    assert metrics["num_videos"] == 8


def test_eval_never_defaults_to_a_split_less_training_cache(cache_root, tmp_path):
    root = cache_root[0]
    run_dir = tmp_path / "run3"
    run_training(model_dir=run_dir, features_dir=root / "train" / "rgb", **TINY_RUN)
    with pytest.raises(FeatureInputError, match="no rgb feature cache for split"):
        evaluate_lib.run_evaluation(model_dir=run_dir, progress=False)


@pytest.mark.slow
def test_a_run_without_final_weights_is_evaluated_from_its_checkpoint(tmp_path, features_npz):
    run_dir = tmp_path / "run"
    partial = run_training(
        model_dir=run_dir, features_npz=features_npz, **{**TINY_RUN, "epochs": 2}, max_steps=3
    )
    assert not RunDir(run_dir).model_file.exists()
    model, _ = evaluate_lib.load_trained_model(run_dir)
    data = np.load(features_npz)
    np.testing.assert_allclose(
        model.predict(data["features"][:4], verbose=0),
        partial.model.predict(data["features"][:4], verbose=0),
        atol=1e-6,
    )


# ---------------------------------------------------- class ids by name, feature specs

SPEC = dict(
    backbone="i3d", weights="kinetics400", num_segments=6, segment_len=8, frame_size=224,
    short="loop", feature_dim=16,
)  # fmt: skip


@pytest.fixture
def spec_run(tmp_path):
    """A run trained on a cache with a full feature spec; returns (run_dir, ids, x, y)."""
    x, y = separable_features(num_videos=48)
    ids = [f"video_{i:03d}" for i in range(48)]
    write_cache(tmp_path / "train", ids, x, y, "rgb", **SPEC)
    run_dir = tmp_path / "run"
    run_training(model_dir=run_dir, features_dir=tmp_path / "train", **{**TINY_RUN, "epochs": 4})
    assert RunDir(run_dir).feature_spec()["rgb"] == {
        **SPEC,
        "modality": "rgb",
        "precision": "float32",
    }
    return run_dir, ids, x, y


@pytest.mark.slow
def test_a_cache_of_some_classes_keeps_the_runs_class_ids(spec_run, tmp_path):
    run_dir, ids, x, y = spec_run
    # A cache of class "c" videos only: its own class list is ["c"], so its label is 0.
    only_c = y == 2
    cache = tmp_path / "c_only"
    write_cache(cache, [i for i, keep in zip(ids, only_c) if keep], x[only_c],
                np.zeros(only_c.sum(), "int64"), "rgb", classes=["c"], **SPEC)  # fmt: skip
    metrics = evaluate_lib.run_evaluation(
        model_dir=run_dir, features_dir=cache, out_dir=tmp_path / "out", progress=False
    )
    model, _ = evaluate_lib.load_trained_model(run_dir)
    predicted = model.predict(x[only_c], verbose=0).argmax(-1)
    assert metrics["top1"] == pytest.approx(np.mean(predicted == 2))
    with open(tmp_path / "out" / "per_class_accuracy.csv", newline="") as handle:
        rows = {row["class_name"]: row for row in csv.DictReader(handle)}
    assert rows["c"]["num_videos"] == str(only_c.sum()) and rows["a"]["num_videos"] == "0"
    assert rows["c"]["num_correct"] == str(int(np.sum(predicted == 2)))
    # predictions.npz names each row's video: its probabilities are that video's.
    with np.load(tmp_path / "out" / "predictions.npz") as saved:
        videos, probabilities = list(saved["videos"]), saved["probabilities"]
    assert sorted(videos) == sorted(i for i, keep in zip(ids, only_c) if keep)
    by_id = dict(zip(ids, x))
    logits = model.predict(np.stack([by_id[v] for v in videos]), verbose=0).astype("float64")
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probabilities, expected / expected.sum(1, keepdims=True), atol=1e-5)


def test_a_cache_of_other_classes_is_refused(spec_run, tmp_path):
    run_dir, ids, x, y = spec_run
    write_cache(tmp_path / "zoo", ids[:4], x[:4], np.array([0, 1, 0, 1]), "rgb",
                classes=["c", "zebra"], **SPEC)  # fmt: skip
    with pytest.raises(evaluate_lib.EvaluationInputError, match=r"not trained on: \['zebra'\]"):
        evaluate_lib.run_evaluation(model_dir=run_dir, features_dir=tmp_path / "zoo")


@pytest.mark.slow
def test_features_of_another_spec_are_refused_naming_each_field(spec_run, tmp_path):
    run_dir, ids, x, y = spec_run
    other = dict(SPEC, segment_len=32, short="pad")
    write_cache(tmp_path / "long", ids[:8], x[:8], y[:8], "rgb", precision="mixed_bfloat16",
                **other)  # fmt: skip
    with pytest.raises(ValueError) as info:
        evaluate_lib.run_evaluation(model_dir=run_dir, features_dir=tmp_path / "long")
    message = str(info.value)
    for field in ("segment_len: 8 (training) vs 32", "short: 'loop' (training) vs 'pad'",
                  "precision: 'float32' (training) vs 'mixed_bfloat16'"):  # fmt: skip
        assert field in message
    assert str(tmp_path / "long") in message
    assert not (run_dir / "eval_test").exists()


def test_top5_is_reported_only_with_more_than_five_classes():
    probs = np.eye(4)[[0, 1, 2, 3]]
    assert "top5" not in evaluate_lib.compute_metrics(probs, [0, 1, 2, 3])
    probs = np.eye(6)[[0, 1, 2, 3]]
    assert evaluate_lib.compute_metrics(probs, [0, 1, 2, 3])["top5"] == 1.0


def test_the_confusion_matrix_shows_counts(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig))
    matrix = np.array([[3, 2], [0, 5]])
    evaluate_lib.plot_confusion_matrix(matrix, ["Kickflip", "Ollie"], tmp_path / "c.png")
    texts = sorted(t.get_text() for t in figures[0].axes[0].texts)
    assert texts == ["2", "3", "5"]  # the counts; the empty cell stays blank


def test_a_model_that_predicts_one_class_is_flagged_collapsed(tmp_path):
    inputs = keras.Input((3, 4))
    flat = keras.layers.Flatten()(inputs)
    logits = keras.layers.Dense(2, kernel_initializer="zeros", bias_initializer="ones")(flat)
    model = keras.Model(inputs, logits)
    features = np.random.default_rng(0).normal(size=(6, 3, 4)).astype("float32")
    labels = np.array([0, 1, 0, 1, 0, 1])
    metrics = evaluate_lib.evaluate(
        model, numpy_dataset(features, labels), ["a", "b"], tmp_path, progress=False
    )
    assert metrics["collapsed"] and metrics["predicted_classes"] == 1
    assert metrics["top1"] == pytest.approx(0.5)
