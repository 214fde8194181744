"""The ablation protocol (`reslstm_tf.ablation`, `reslstm-ablate`) and the skateboard zoo entry."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from reslstm_tf import ablation
from reslstm_tf.data.feature_cache import FeatureCacheWriter

SKATEBOARD_ENTRY = "skateboard_lstm3"


# ----------------------------------------------------------------------------- splits


@pytest.mark.parametrize("num_folds", [2, 5])
def test_stratified_folds_are_disjoint_cover_all_and_keep_balance(num_folds):
    labels = np.array([0] * 37 + [1] * 23 + [2] * 11)
    folds = ablation.stratified_folds(labels, num_folds, seed=3)
    assert len(folds) == num_folds
    joined = np.concatenate(folds)
    assert len(joined) == len(set(joined.tolist())) == len(labels)  # disjoint
    assert sorted(joined.tolist()) == list(range(len(labels)))  # cover every clip
    for label, count in enumerate(np.bincount(labels)):
        per_fold = [int(np.sum(labels[fold] == label)) for fold in folds]
        assert set(per_fold) <= {count // num_folds, -(-count // num_folds)}
    sizes = [len(fold) for fold in folds]
    assert max(sizes) - min(sizes) <= 1
    # The split seed fixes the folds; another seed gives other folds.
    again = ablation.stratified_folds(labels, num_folds, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(folds, again))
    other = ablation.stratified_folds(labels, num_folds, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(folds, other))


def test_stratified_holdout_keeps_class_shares():
    labels = np.array([0] * 74 + [1] * 76)
    train, val = ablation.stratified_holdout(labels, 0.2, seed=0)
    assert not set(train.tolist()) & set(val.tolist())
    assert len(train) + len(val) == len(labels)
    assert np.bincount(labels[val]).tolist() == [15, 15]


def test_split_errors_name_the_setting():
    labels = np.array([0] * 4 + [1] * 3)
    with pytest.raises(ablation.AblationError, match=r"num_folds must be in \[2, 3\]"):
        ablation.stratified_folds(labels, 4)
    with pytest.raises(ablation.AblationError, match="fraction must be in"):
        ablation.stratified_holdout(labels, 1.5)


# ------------------------------------------------------------------ logistic regression


def _newton_binary_reference(z, y, penalty, iterations=50):
    """Binary logistic regression, min mean log-loss + penalty * |w|^2, by Newton's method."""
    a = np.hstack([z, np.ones((len(z), 1))])
    theta = np.zeros(a.shape[1])
    reg = np.full(a.shape[1], 2 * penalty)
    reg[-1] = 0.0  # the bias is not penalised
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-a @ theta))
        grad = a.T @ (p - y) / len(y) + reg * theta
        hess = (a * (p * (1 - p))[:, None]).T @ a / len(y) + np.diag(reg)
        theta -= np.linalg.solve(hess, grad)
    return theta


def test_logistic_regression_matches_newton_reference_on_separable_data():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 1, (20, 3)), rng.normal(2, 1, (20, 3))])
    y = np.array([0] * 20 + [1] * 20)
    l2 = 0.1
    model = ablation.LogisticRegression(l2=l2, steps=5000, tolerance=1e-10).fit(x, y)
    assert np.mean(model.predict(x) == y) == 1.0  # separable: every training clip right
    # Two-class softmax with l2/2 (|w0|^2 + |w1|^2) is binary logistic regression on
    # w = w1 - w0 with penalty l2/4 |w|^2 (the optimum has w1 = -w0).
    z = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    theta = _newton_binary_reference(z, y, penalty=l2 / 4)
    reference = 1 / (1 + np.exp(-(z @ theta[:-1] + theta[-1])))
    np.testing.assert_allclose(model.predict_proba(x)[:, 1], reference, atol=1e-6)


def test_logistic_regression_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    z, y = rng.normal(size=(9, 4)), rng.integers(0, 3, 9)
    model = ablation.LogisticRegression(l2=0.3)
    weights, bias = rng.normal(size=(4, 3)), rng.normal(size=3)
    _, grad_w, grad_b = model.objective_and_gradients(z, y, weights, bias)
    eps = 1e-6
    for index in np.ndindex(weights.shape):
        step = np.zeros_like(weights)
        step[index] = eps
        plus = model.objective_and_gradients(z, y, weights + step, bias)[0]
        minus = model.objective_and_gradients(z, y, weights - step, bias)[0]
        assert abs((plus - minus) / (2 * eps) - grad_w[index]) < 1e-6
    for k in range(3):
        step = np.eye(3)[k] * eps
        plus = model.objective_and_gradients(z, y, weights, bias + step)[0]
        minus = model.objective_and_gradients(z, y, weights, bias - step)[0]
        assert abs((plus - minus) / (2 * eps) - grad_b[k]) < 1e-6


# ------------------------------------------------------------------------------- CLI


def _write_cache(folder, num_clips=24, segments=4, dim=8, seed=0, modality="rgb"):
    """A tiny separable cache: class 1 has a positive mean on the first feature."""
    rng = np.random.default_rng(seed)
    metadata = {"modality": modality, "classes": ["neg", "pos"], "num_segments": segments}
    with FeatureCacheWriter(folder, shard_size=10, metadata=metadata) as writer:
        for index in range(num_clips):
            label = index % 2
            features = rng.normal(0.0, 1.0, (segments, dim)).astype("float32")
            features[:, 0] += 3.0 * (2 * label - 1)
            writer.add(f"clip{index:03d}", label, features)
    return folder


def _cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "reslstm_tf.cli.ablate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_step_selection_follows_step_segment_map():
    features = np.arange(2 * 16 * 1, dtype="float32").reshape(2, 16, 1)
    picked = ablation.select_steps(features, 5)
    assert picked[0, :, 0].tolist() == [1, 4, 8, 11, 14]  # floor((t + .5) * 16 / 5)
    assert ablation.select_steps(features, 16).tolist() == features.tolist()


def test_reused_model_trains_like_a_fresh_one(tmp_path):
    """One compiled model per config is re-initialised per run: same result as a new model."""
    data = ablation.load_feature_set(_write_cache(tmp_path / "rgb", num_clips=16))
    train_config = ablation.TrainConfig(epochs=3, batch_size=8)
    folds = ablation.splits_for("cv", data.labels, folds=2)
    shared = ablation._ModelCache(2, 8, train_config)
    for seed, fold in ((0, 0), (1, 1)):
        spec = ablation.RunSpec("res", 2, 8, 4, "rgb", "", "", "cv", seed, fold)
        _, train, val = folds[fold]
        reused = ablation.train_and_evaluate(spec, data, train, val, train_config, shared)
        fresh = ablation.train_and_evaluate(
            spec, data, train, val, train_config, ablation._ModelCache(2, 8, train_config)
        )
        assert reused[:2] == fresh[:2]
    assert shared._model.optimizer.learning_rate.numpy() == pytest.approx(1e-3)


@pytest.mark.slow
def test_cli_runs_end_to_end_on_a_tiny_cache(tmp_path):
    rgb = _write_cache(tmp_path / "rgb")
    out = tmp_path / "out"
    result = _cli(
        f"--features_dir={rgb}",
        f"--out_dir={out}",
        "--experiments=baselines,depth,hidden,steps",
        "--depths=2",
        "--hidden=8",
        "--steps=4",
        "--base_hidden=8",
        "--base_depth=2",
        "--base_steps=4",
        "--folds=2",
        "--seeds=1",
        "--epochs=2",
        "--batch_size=8",
        "--progress=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # logreg, lstm2, res2 x 2 folds (cv) + lstm2, res2 on the hold-out (hidden = steps sweep).
    assert len(rows) == 3 * 2 + 2
    assert set(rows[0]) >= {"experiment", "arch", "depth", "hidden", "T", "seed", "fold",
                            "val_accuracy", "train_time_s"}  # fmt: skip
    assert {r["experiment"] for r in rows} >= {"baselines", "baselines;depth", "hidden;steps"}
    assert all(0.0 <= float(r["val_accuracy"]) <= 1.0 for r in rows)
    logreg = [float(r["val_accuracy"]) for r in rows if r["arch"] == "logreg"]
    assert min(logreg) >= 0.9  # the tiny problem is separable on the mean-pooled features
    results = json.loads((out / "results.json").read_text())
    assert results["best"]["arch"] in ("lstm", "res")
    assert results["experiment_protocol"] == {
        "baselines": "cv", "depth": "cv", "hidden": "holdout", "steps": "holdout"
    }  # fmt: skip
    for name in ("hidden_size.png", "steps.png", "depth.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    report = (out / "results.md").read_text()
    assert "cross-validation" in report and "| res2 |" in report


@pytest.mark.slow
def test_fusion_experiment_runs_beside_single_streams(tmp_path):
    rgb = _write_cache(tmp_path / "rgb")
    flow = _write_cache(tmp_path / "flow", seed=1, modality="flow")
    config = ablation.AblationConfig(
        experiments=("fusion",),
        base_hidden=8,
        base_depth=2,
        base_steps=4,
        sweep_seeds=1,
        train=ablation.TrainConfig(epochs=1, batch_size=8),
    )
    results = ablation.run_ablation(rgb, tmp_path / "out", config, flow, progress=False)
    rows = {(s["modality"], s["fusion"], s["level"]) for s in results["summary"]}
    assert rows == {("rgb", "", ""), ("flow", "", "")} | {
        ("two_stream", f, level) for f, level in ablation.FUSIONS
    }
    assert "| RGB + flow | product | late |" in (tmp_path / "out" / "results.md").read_text()


def test_clear_errors_for_missing_inputs_and_bad_flags(tmp_path):
    rgb = _write_cache(tmp_path / "rgb", num_clips=6)
    baselines = ablation.AblationConfig(experiments=("baselines",))
    with pytest.raises(ablation.AblationError, match="features_dir=.*is not a folder"):
        ablation.run_ablation(tmp_path / "nowhere", tmp_path / "out", baselines, progress=False)
    config = ablation.AblationConfig(experiments=("fusion",))
    with pytest.raises(ablation.AblationError, match="needs flow features"):
        ablation.run_ablation(rgb, tmp_path / "out", config, progress=False)
    config = ablation.AblationConfig(experiments=("baselines", "widths"))
    with pytest.raises(ablation.AblationError, match="subset of baselines, depth"):
        ablation.run_ablation(rgb, tmp_path / "out", config, progress=False)
    config = ablation.AblationConfig(experiments=("hidden",), hidden=(256, 0))
    with pytest.raises(ablation.AblationError, match="hidden must be a positive integer"):
        ablation.run_ablation(rgb, tmp_path / "out", config, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ablation.AblationError, match="no feature cache index"):
        ablation.load_feature_set(empty)


@pytest.mark.slow
def test_cli_reports_bad_flag_values(tmp_path):
    rgb = _write_cache(tmp_path / "rgb", num_clips=6)
    result = _cli(f"--features_dir={rgb}", f"--out_dir={tmp_path}/o", "--hidden=256,big")
    assert result.returncode != 0
    assert "--hidden must be a comma-separated list of integers" in result.stderr
    result = _cli(f"--features_dir={rgb}", f"--out_dir={tmp_path}/o", "--experiments=fusion")
    assert result.returncode != 0 and "--flow_features_dir" in result.stderr


# ------------------------------------------------------------------------ zoo entry


@pytest.mark.slow
def test_skateboard_entry_predicts_real_clips(shared_data):
    """Sanity check only: these clips were in the head's training set (not a held-out score)."""
    from reslstm_tf import zoo

    folder = shared_data / "skateboard"
    entry = zoo.info(SKATEBOARD_ENTRY)
    assert entry["dataset"]["num_classes"] == 2
    assert zoo.class_names(SKATEBOARD_ENTRY) == ["Kickflip", "Ollie"]
    model = zoo.load(SKATEBOARD_ENTRY)
    clips = [
        (name, path)
        for name in ("Kickflip", "Ollie")
        for path in sorted((folder / name).glob("*.mp4"))[:3]
    ]
    assert len(clips) == 6
    correct = 0
    for name, path in clips:
        ranked = zoo.predict(model, path, top_k=2)
        assert abs(sum(p for _, p in ranked) - 1.0) < 1e-4
        correct += ranked[0][0] == name
    assert correct >= 5, f"{correct}/6 clips right"
