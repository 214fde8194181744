"""The ablation runner (`reslstm_tf.experiments.ablation`) and `reslstm-ablate`."""

import csv
import json

import numpy as np
import pytest

from reslstm_tf.data.feature_sets import select_steps
from reslstm_tf.experiments import ablation as runner
from reslstm_tf.experiments.ablation import run_ablation
from reslstm_tf.experiments.config import (
    FUSIONS,
    AblationConfig,
    AblationError,
    RunSpec,
    head_options,
    plan_runs,
)
from reslstm_tf.experiments.runner import HeadRunner
from reslstm_tf.experiments.splits import splits_for
from tests.experiments.helpers import run_cli, write_cache


def test_step_selection_follows_step_segment_map():
    features = np.arange(2 * 16 * 1, dtype="float32").reshape(2, 16, 1)
    picked = select_steps(features, 5)
    assert picked[0, :, 0].tolist() == [1, 4, 8, 11, 14]  # floor((t + .5) * 16 / 5)
    assert select_steps(features, 16).tolist() == features.tolist()


def test_load_data_reads_clips_sorted_by_id(tmp_path):
    rgb = write_cache(tmp_path / "rgb", num_clips=6)
    data = runner.load_data(rgb, write_cache(tmp_path / "flow", 6, seed=1, modality="flow"))
    assert data.ids == [f"clip{i:03d}" for i in range(6)]
    assert data.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert data.rgb.shape == data.flow.shape == (6, 4, 8) and data.rgb.dtype == np.float32
    assert not np.array_equal(data.rgb, data.flow) and data.class_names == ["neg", "pos"]


def test_load_data_errors_name_the_flag(tmp_path):
    rgb = write_cache(tmp_path / "rgb", num_clips=6)
    with pytest.raises(AblationError, match="^features_dir=.*is not a folder"):
        runner.load_data(tmp_path / "nowhere")
    with pytest.raises(AblationError, match="^flow_features_dir=.*is not a folder"):
        runner.load_data(rgb, tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AblationError, match="no feature cache index"):
        runner.load_data(empty)
    fewer = write_cache(tmp_path / "flow", num_clips=4, modality="flow")
    with pytest.raises(AblationError, match="hold different videos"):
        runner.load_data(rgb, fewer)


@pytest.mark.slow
def test_reused_trainer_trains_like_a_fresh_one(tmp_path):
    """One Trainer per config is reset per run: same result as a new Trainer."""
    data = runner.load_data(write_cache(tmp_path / "rgb", num_clips=16))
    options = head_options(epochs=3, batch_size=8)
    folds = splits_for("cv", data.labels, folds=2)
    shared = HeadRunner(2, options)
    for seed, fold in ((0, 0), (1, 1)):
        spec = RunSpec("res", 2, 8, 4, "rgb", "", "", "cv", seed, fold)
        _, train, val = folds[fold]
        reused = runner.train_and_evaluate(spec, data, train, val, shared)
        fresh = runner.train_and_evaluate(spec, data, train, val, HeadRunner(2, options))
        assert reused[:2] == fresh[:2]
    assert shared.trainer.learning_rate() == pytest.approx(1e-3)
    assert shared.trainer.global_step == 3 * (8 // 8)  # epochs x whole batches of a fold


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
    # Every run records its validation clips and which it got right (McNemar's test).
    for row in rows:
        index, correct = row["val_index"].split(), row["val_correct"].split()
        assert len(index) == len(correct) == int(row["n_val"])
        assert float(row["val_accuracy"]) == pytest.approx(
            np.mean([int(c) for c in correct]), abs=1e-6
        )
    assert all(0.0 <= float(r["val_accuracy"]) <= 1.0 for r in rows)
    logreg = [float(r["val_accuracy"]) for r in rows if r["arch"] == "logreg"]
    assert min(logreg) >= 0.9  # the tiny problem is separable on the mean-pooled features
    results = json.loads((out / "results.json").read_text())
    assert results["best"]["arch"] in ("lstm", "res")
    assert [c["a"] for c in results["comparisons"]["depth"]] == ["res2 (H=8, T=4)"]
    assert set(results["verdicts"]) == {"baselines", "depth", "hidden", "steps"}
    assert results["experiment_protocol"] == {
        "baselines": "cv", "depth": "cv", "hidden": "holdout", "steps": "holdout"
    }  # fmt: skip
    for name in ("hidden_size.png", "steps.png", "depth.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    report = (out / "results.md").read_text()
    assert "cross-validation" in report and "| res2 |" in report
    assert "Res - LSTM" in report and "differences between" in report


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
        train=head_options(epochs=1, batch_size=8),
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


def test_sweeps_under_cv_plan_the_same_folds_and_seeds_for_both_archs():
    config = AblationConfig(experiments=("depth", "hidden", "steps"), depths=(1, 2, 3, 4),
                            hidden=(256, 512), hidden_depths=(3,), steps=(4, 32), seeds=3,
                            sweep_protocol="cv", sweep_seeds=2)  # fmt: skip
    plan = plan_runs(config, has_flow=False)
    grid = {(seed, fold) for seed in range(2) for fold in range(5)}
    for experiment, seeds in (("depth", 3), ("hidden", 2), ("steps", 2)):
        by_config = {}
        for spec in plan[experiment]:
            assert spec.protocol == "cv"
            by_config.setdefault(spec.config, set()).add((spec.seed, spec.fold))
        expected = {(seed, fold) for seed in range(seeds) for fold in range(5)}
        assert all(pairs == expected for pairs in by_config.values())
    assert {s.depth for s in plan["depth"]} == {1, 2, 3, 4}
    assert {(s.arch, s.depth, s.hidden) for s in plan["hidden"]} == {
        (arch, 3, h) for arch in ("lstm", "res") for h in (256, 512)
    }
    assert {(s.arch, s.steps) for s in plan["steps"]} == {
        (arch, t) for arch in ("lstm", "res") for t in (4, 32)
    }
    # The sweeps' runs at the base config are the depth runs of seeds 0 and 1: run once.
    assert {s for s in plan["steps"] if s.steps == 16} <= set(plan["depth"])
    assert grid == {(s.seed, s.fold) for s in plan["hidden"]}


def test_depth_one_is_a_one_layer_stack_with_the_first_layers_shortcut_only():
    from reslstm_tf.experiments.runner import build_head

    for arch in ("lstm", "res"):
        spec = RunSpec(arch, 1, 8, 4, "rgb", "", "", "cv", 0, 0)
        model = build_head(spec, 2, 16, 0.5, masking=False)
        stack = model.get_layer("residual_lstm")
        assert stack.num_layers == 1 and len(stack.lstm_layers) == 1
        assert stack.residual == (arch == "res")
        # Res-LSTM at depth 1: x^1 = LSTM_1(x^0) + W x^0, W projecting the 16 inputs to 8.
        has_projection = stack.shortcut_projection is not None
        assert has_projection == (arch == "res")
    config = AblationConfig(experiments=("depth",), depths=(1,))
    assert {(s.arch, s.depth) for s in plan_runs(config, False)["depth"]} == {
        ("lstm", 1), ("res", 1)
    }  # fmt: skip
