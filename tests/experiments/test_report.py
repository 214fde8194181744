"""Summaries, the selected head and the written report (`reslstm_tf.experiments.report`)."""

import csv

import pytest

from reslstm_tf.experiments import report
from reslstm_tf.experiments.config import AblationConfig


def _row(arch, depth, hidden, val, fold=0, experiment="baselines;depth", protocol="cv"):
    return {
        "experiment": experiment,
        "arch": arch,
        "depth": depth,
        "hidden": hidden,
        "T": 16,
        "modality": "rgb",
        "fusion": "",
        "level": "",
        "protocol": protocol,
        "seed": 0,
        "fold": fold,
        "n_train": 24,
        "n_val": 6,
        "epochs": 0 if arch == "logreg" else 15,
        "train_accuracy": 1.0,
        "val_accuracy": val,
        "train_time_s": 2.0,
    }


ROWS = [
    _row("logreg", 0, 0, 0.5),
    _row("logreg", 0, 0, 0.7, fold=1),
    _row("lstm", 2, 256, 0.75),
    _row("lstm", 2, 256, 0.85, fold=1),
    _row("res", 2, 512, 0.75),
    _row("res", 2, 512, 0.85, fold=1),
    _row("res", 3, 256, 0.95, experiment="hidden", protocol="holdout"),
]


def test_summarise_groups_runs_by_config():
    summary = {(s["arch"], s["depth"], s["hidden"]): s for s in report.summarise(ROWS)}
    assert len(summary) == 4
    lstm = summary[("lstm", 2, 256)]
    assert lstm["n"] == 2 and lstm["mean"] == pytest.approx(0.8)
    assert lstm["std"] == pytest.approx(0.0707107, abs=1e-6)  # sample std (ddof=1)
    assert lstm["train_time_s"] == pytest.approx(4.0)
    assert lstm["experiments"] == ["baselines", "depth"]
    assert summary[("res", 3, 256)]["std"] == 0.0  # one run


def test_select_best_takes_cv_recurrent_heads_and_breaks_ties_by_size():
    best = report.select_best(report.summarise(ROWS))
    # res3 (0.95) is hold-out only and logreg is not recurrent; lstm2 H=256 and res2 H=512
    # tie at 0.8: the smaller head wins.
    assert (best["arch"], best["depth"], best["hidden"]) == ("lstm", 2, 256)
    assert report.select_best(report.summarise(ROWS[:2])) is None


def test_markdown_lists_each_baseline_and_the_selected_head():
    config = AblationConfig(experiments=("baselines",), folds=2, seeds=1)
    data_info = {"num_clips": 30, "num_classes": 2, "class_names": ["a", "b"]}
    data_info["feature_shape"] = [16, 1024]
    text = report.results_markdown(
        report.summarise(ROWS), config, data_info, {"total_s": 60, "runs": 7}
    )
    assert "| logreg (mean-pooled) | 60.0 ± 14.1 | 2 | 100.0 |" in text
    assert "| lstm2 | 80.0 ± 7.1 | 2 |" in text
    assert "## Selected head" in text and "lstm2, hidden 256: 80.0 ± 7.1 %" in text
    assert "## Hidden size" not in text


def test_report_from_csv_rebuilds_results_and_plots(tmp_path):
    csv_path = tmp_path / "runs.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=report.CSV_FIELDS)
        writer.writeheader()
        writer.writerows(ROWS)
    config = AblationConfig(experiments=("depth", "hidden"), depths=(2, 3), hidden=(256,))
    results, data_info = report.report_from_csv(csv_path, config, tmp_path / "out")
    assert results["partial"] and results["timings"] == {"total_s": 14.0, "runs": 7}
    assert results["best"]["arch"] == "lstm"
    assert data_info["archs"] == ["logreg", "lstm", "res"]
    assert results["plots"] == ["hidden_size.png", "depth.png"]
    for name in results["plots"] + ["results.json"]:
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert (tmp_path / "out" / "depth.png").read_bytes()[:4] == b"\x89PNG"
