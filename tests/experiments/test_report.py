"""Summaries, the selected head and the written report (`reslstm_tf.experiments.report`)."""

import csv

import numpy as np
import pytest

from reslstm_tf.experiments import report, report_figures, report_files
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
    text = report.results_markdown(ROWS, config, data_info, {"total_s": 60, "runs": 7})
    # 95% CI of 2 runs: t(0.975, 1) = 12.706 x std 14.1 x sqrt(1/2 + 6/24), clipped to [0, 100].
    assert "| logreg (mean-pooled) | 60.0 [0.0, 100.0] | 2 | 100.0 |" in text
    assert "| lstm2 | 80.0 [2.2, 100.0] | 2 |" in text
    assert "## Selected head" in text and "lstm2, hidden 256, T = 16: 80.0 [2.2, 100.0] %" in text
    assert "## Hidden size" not in text


def test_report_from_csv_rebuilds_results_and_plots(tmp_path):
    csv_path = tmp_path / "runs.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=report_files.CSV_FIELDS)
        writer.writeheader()
        writer.writerows(ROWS)
    config = AblationConfig(experiments=("depth", "hidden"), depths=(2, 3), hidden=(256,))
    results, data_info = report_files.report_from_csv(csv_path, config, tmp_path / "out")
    assert results["partial"] and results["timings"] == {"total_s": 14.0, "runs": 7}
    assert results["best"]["arch"] == "lstm"
    assert data_info["archs"] == ["logreg", "lstm", "res"]
    assert results["plots"] == ["hidden_size.png", "depth.png"]
    assert "rebuilt from the 7 runs" in (tmp_path / "out" / "results.md").read_text()
    for name in results["plots"] + ["results.json"]:
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert (tmp_path / "out" / "depth.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------ paired comparisons on synthetic runs


def _synthetic_runs(experiment="baselines;depth", seeds=3, folds=5, clips=150, depths=(1, 2)):
    """Runs with per-video predictions: res1 = lstm1 = logreg, res2 right on half of them.

    Every (fold, seed) holds the same 150 / 5 validation clips for every config, as the
    ablation's folds do; lstm1, res1, lstm2 and logreg share their predictions, so they do not
    differ, while res2 is right only on about half of the clips lstm2 gets right.
    """
    rng = np.random.default_rng(0)
    rows = []
    per_fold = clips // folds
    for seed in range(seeds):
        for fold in range(folds):
            index = list(range(fold * per_fold, (fold + 1) * per_fold))
            base = rng.random(per_fold) < 0.85
            heads = [("logreg", 0, base)] + [(a, d, base) for d in depths for a in ("lstm", "res")]
            heads[-1] = ("res", depths[-1], base & (rng.random(per_fold) < 0.5))
            for arch, depth, correct in heads:
                row = _row(arch, depth, 0 if arch == "logreg" else 256, correct.mean(), fold,
                           experiment)  # fmt: skip
                val_index, val_correct = report_files.encode_predictions(index, correct)
                row.update(seed=seed, n_train=clips - per_fold, n_val=per_fold)
                rows.append(dict(row, val_index=val_index, val_correct=val_correct))
    return rows


def _through_csv(rows, tmp_path):
    """The rows as `run_ablation` reads them back from its runs.csv."""
    csv_path = tmp_path / "runs.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=report_files.CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return report_files.read_runs(csv_path)


def test_a_known_res_lstm_gap_is_significant_and_equal_heads_are_not(tmp_path):
    rows = _through_csv(_synthetic_runs(), tmp_path)
    assert rows[0]["val_index"] == list(range(30)) and set(rows[0]["val_correct"]) <= {0, 1}
    found = report.ablation_comparisons(rows, ("baselines", "depth"))
    depth = {c["config_a"]["depth"]: c for c in found["depth"]}
    assert [(c["a"], c["b"]) for c in found["depth"]] == [
        ("res1 (H=256, T=16)", "lstm1 (H=256, T=16)"),
        ("res2 (H=256, T=16)", "lstm2 (H=256, T=16)"),
    ]
    # res1 and lstm1 predict alike: difference 0, McNemar finds no discordant video.
    same = depth[1]
    assert not same["significant"] and same["difference"]["mean"] == 0.0
    assert same["mcnemar"] == {"only_a": 0, "only_b": 0, "p_value": 1.0}
    # res2 loses about half of lstm2's right answers: ~42 points, on 15 fold x seed pairs.
    gap = depth[2]
    assert gap["significant"] and gap["difference"]["pairs"] == 15
    assert -0.5 < gap["difference"]["mean"] < -0.35 and gap["difference"]["high"] < 0
    assert gap["mcnemar"]["only_a"] == 0 and gap["mcnemar"]["p_value"] < 1e-10
    # McNemar pools seed 0 only: each of the 150 clips once.
    assert gap["mcnemar"]["only_b"] == pytest.approx(0.5 * 0.85 * 150, abs=20)
    logreg = {c["config_a"]["arch"] + str(c["config_a"]["depth"]): c for c in found["baselines"]}
    assert sorted(logreg) == ["lstm1", "lstm2", "res1", "res2"]
    assert [logreg[h]["significant"] for h in ("lstm1", "lstm2", "res1", "res2")] == [
        False, False, False, True
    ]  # fmt: skip
    assert {c["b"] for c in found["baselines"]} == {"logreg (mean-pooled)"}


def test_the_report_says_in_words_which_differences_are_significant(tmp_path):
    rows = _through_csv(_synthetic_runs(), tmp_path)
    found = report.ablation_comparisons(rows, ("baselines", "depth"))
    sentence = report.significance_sentence(found["depth"], "depth")
    assert sentence.startswith("1 of the 2 differences between Res-LSTM and the plain stack")
    assert (
        "is significant" in sentence and "res2 (H=256, T=16) below lstm2 (H=256, T=16)" in sentence
    )
    no_gap = [c for c in found["depth"] if not c["significant"]]
    sentence = report.significance_sentence(no_gap, "depth")
    assert (
        sentence.startswith("The one difference between Res-LSTM and the plain stack")
        and "cannot tell them apart" in sentence
    )
    config = AblationConfig(experiments=("baselines", "depth"), depths=(1, 2))
    data_info = {"num_clips": 150, "num_classes": 2, "class_names": ["a", "b"]}
    data_info["feature_shape"] = [32, 1024]
    text = report.results_markdown(rows, config, data_info, {"total_s": 60, "runs": len(rows)})
    assert "### Res-LSTM against the plain stack, by depth" in text
    assert "| 1 | " in text and "| +0.0 | [+0.0, +0.0] | 1 (0 / 0) | no |" in text
    assert "Res-LSTM at depth 1 has no shortcut between stacked layers" in text
    assert "### Each head against the logistic regression" in text
    assert "3 of the 4" not in text and "1 of the 4 differences between each recurrent head" in text


def test_runs_without_per_video_predictions_get_no_mcnemar(tmp_path):
    rows = [{k: v for k, v in r.items() if not k.startswith("val_") or k == "val_accuracy"}
            for r in _synthetic_runs()]  # fmt: skip
    rows = _through_csv(rows, tmp_path)  # an older runs.csv: empty per-video columns
    assert "val_index" not in rows[0]
    gap = next(c for c in report.ablation_comparisons(rows, ("depth",))["depth"]
               if c["config_a"]["depth"] == 2)  # fmt: skip
    assert gap["mcnemar"] is None and gap["significant"]  # the interval alone decides


def test_sweep_comparisons_pair_only_the_sweeps_own_runs():
    # Depth's runs of res2/lstm2 at H=256 have 3 seeds; the hidden sweep planned 2 of them.
    rows = _synthetic_runs(experiment="baselines;depth;hidden", seeds=2, depths=(2,))
    rows += [dict(r, experiment="baselines;depth") for r in _synthetic_runs(seeds=3, depths=(2,))
             if r["seed"] == 2]  # fmt: skip
    found = report.ablation_comparisons(rows, ("depth", "hidden"))
    assert [c["difference"]["pairs"] for c in found["depth"]] == [15]
    assert [c["difference"]["pairs"] for c in found["hidden"]] == [10]
    hidden = report.experiment_summaries(rows, ("hidden",))["hidden"]
    assert {s["n"] for s in hidden} == {10}


def test_mean_interval_is_the_corrected_t_interval_or_the_binomial_one():
    acc = [0.7, 0.8, 0.9, 0.8]
    low, high = report.mean_interval(acc, n_val=30, n_train=120)
    half = 3.1824 * np.std(acc, ddof=1) * np.sqrt(1 / 4 + 30 / 120)  # t(0.975, 3) from the table
    assert (low, high) == pytest.approx((0.8 - half, 0.8 + half), abs=1e-4)
    low, high = report.mean_interval([0.8], n_val=100, n_train=400)
    assert (low, high) == pytest.approx((0.8 - 1.96 * 0.04, 0.8 + 1.96 * 0.04), abs=1e-4)
    assert report.mean_interval([1.0, 1.0], 30, 120) == (1.0, 1.0)


def test_the_figures_plot_each_sweep_with_both_archs(tmp_path):
    rows = _synthetic_runs(experiment="baselines;depth;hidden;steps", seeds=1)
    config = AblationConfig(
        experiments=("baselines", "depth", "hidden", "steps"), depths=(1, 2), hidden=(256,),
        hidden_depths=(2,), steps=(16,), seeds=1, base_depth=2,
    )  # fmt: skip
    written = report_figures.plot_results(rows, config, tmp_path)
    assert [p.name for p in written] == ["hidden_size.png", "steps.png", "depth.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)
