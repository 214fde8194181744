"""The ablation runner (`reslstm_tf.experiments.ablation`) and `reslstm-ablate`."""

import csv
import json

import pytest

from reslstm_tf.experiments import ablation as runner
from reslstm_tf.experiments.ablation import run_ablation
from reslstm_tf.experiments.config import (
    FUSIONS,
    AblationConfig,
    AblationError,
    RunSpec,
    TrainConfig,
)
from reslstm_tf.experiments.features import load_feature_set
from reslstm_tf.experiments.splits import splits_for
from tests.experiments.helpers import run_cli, write_cache


def test_reused_model_trains_like_a_fresh_one(tmp_path):
    """One compiled model per config is re-initialised per run: same result as a new model."""
    data = load_feature_set(write_cache(tmp_path / "rgb", num_clips=16))
    train_config = TrainConfig(epochs=3, batch_size=8)
    folds = splits_for("cv", data.labels, folds=2)
    shared = runner._ModelCache(2, 8, train_config)
    for seed, fold in ((0, 0), (1, 1)):
        spec = RunSpec("res", 2, 8, 4, "rgb", "", "", "cv", seed, fold)
        _, train, val = folds[fold]
        reused = runner.train_and_evaluate(spec, data, train, val, train_config, shared)
        fresh = runner.train_and_evaluate(
            spec, data, train, val, train_config, runner._ModelCache(2, 8, train_config)
        )
        assert reused[:2] == fresh[:2]
    assert shared.model.optimizer.learning_rate.numpy() == pytest.approx(1e-3)


@pytest.mark.slow
def test_cli_runs_end_to_end_on_a_tiny_cache(tmp_path):
    rgb = write_cache(tmp_path / "rgb")
    out = tmp_path / "out"
    result = run_cli(
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
    rgb = write_cache(tmp_path / "rgb")
    flow = write_cache(tmp_path / "flow", seed=1, modality="flow")
    config = AblationConfig(
        experiments=("fusion",),
        base_hidden=8,
        base_depth=2,
        base_steps=4,
        sweep_seeds=1,
        train=TrainConfig(epochs=1, batch_size=8),
    )
    results = run_ablation(rgb, tmp_path / "out", config, flow, progress=False)
    rows = {(s["modality"], s["fusion"], s["level"]) for s in results["summary"]}
    assert rows == {("rgb", "", ""), ("flow", "", "")} | {
        ("two_stream", f, level) for f, level in FUSIONS
    }
    assert "| RGB + flow | product | late |" in (tmp_path / "out" / "results.md").read_text()


def test_clear_errors_for_missing_inputs_and_bad_flags(tmp_path):
    rgb = write_cache(tmp_path / "rgb", num_clips=6)
    baselines = AblationConfig(experiments=("baselines",))
    with pytest.raises(AblationError, match="features_dir=.*is not a folder"):
        run_ablation(tmp_path / "nowhere", tmp_path / "out", baselines, progress=False)
    config = AblationConfig(experiments=("fusion",))
    with pytest.raises(AblationError, match="needs flow features"):
        run_ablation(rgb, tmp_path / "out", config, progress=False)
    config = AblationConfig(experiments=("baselines", "widths"))
    with pytest.raises(AblationError, match="subset of baselines, depth"):
        run_ablation(rgb, tmp_path / "out", config, progress=False)
    config = AblationConfig(experiments=("hidden",), hidden=(256, 0))
    with pytest.raises(AblationError, match="hidden must be a positive integer"):
        run_ablation(rgb, tmp_path / "out", config, progress=False)


@pytest.mark.slow
def test_cli_reports_bad_flag_values(tmp_path):
    rgb = write_cache(tmp_path / "rgb", num_clips=6)
    result = run_cli(f"--features_dir={rgb}", f"--out_dir={tmp_path}/o", "--hidden=256,big")
    assert result.returncode != 0
    assert "--hidden must be a comma-separated list of integers" in result.stderr
    result = run_cli(f"--features_dir={rgb}", f"--out_dir={tmp_path}/o", "--experiments=fusion")
    assert result.returncode != 0 and "--flow_features_dir" in result.stderr
