"""Recipes derived from stored probabilities (TTA, seed ensembles), the report by clip spec
and the selection across specs, on synthetic run rows."""

import zlib

import numpy as np
import pytest

from reslstm_tf.experiments.study_results import comparisons, select, summarise
from reslstm_tf.experiments.study_variants import (
    compare_groups,
    cv_interval,
    ensemble_rows,
    group_runs,
    tta_rows,
    with_variants,
)

FOLDS, SEEDS, N_VAL = 3, 3, 10


def _labels(fold):
    return np.random.default_rng(100 + fold).integers(0, 2, N_VAL)


def _row(recipe, clip, arch, depth, fold, seed, skill, tta=True):
    """A run row whose probabilities are right with probability `skill` on each video."""
    rng = np.random.default_rng([zlib.crc32(f"{recipe}{clip}{arch}{depth}".encode()), fold, seed])
    labels = _labels(fold)
    p_right = np.clip(skill + rng.normal(0, 0.25, N_VAL), 0.01, 0.99)
    probabilities = np.stack([1 - p_right, p_right], -1)
    probabilities[labels == 0] = probabilities[labels == 0][:, ::-1]
    correct = probabilities.argmax(-1) == labels
    row = {"recipe": recipe, "clip": clip, "stream": "rgb", "arch": arch, "depth": depth,
           "fold": fold, "seed": seed, "n_train": 20, "n_val": N_VAL, "epochs": 1,
           "train_accuracy": 1.0, "val_accuracy": float(correct.mean()), "seconds": 1.0,
           "val_index": list(range(fold * N_VAL, (fold + 1) * N_VAL)),
           "val_correct": [int(c) for c in correct], "val_labels": labels.tolist(),
           "val_probabilities": probabilities.tolist()}  # fmt: skip
    if tta:
        shaken = np.clip(probabilities + rng.normal(0, 0.1, probabilities.shape), 0, None)
        row.update(tta_probabilities=(shaken / shaken.sum(-1, keepdims=True)).tolist(),
                   tta_views=6)  # fmt: skip
    return row


def _rows():
    rows = []
    for fold in range(FOLDS):
        for seed in range(SEEDS):
            rows.append(_row("logreg", "i3d112_t4", "logreg", 0, fold, 0, 0.7))
            rows[-1]["seed"] = seed
            rows.append(_row("frozen", "i3d112_t4", "lstm", 3, fold, seed, 0.55))
            rows.append(_row("frozen", "i3d224_t16", "lstm", 3, fold, seed, 0.8, tta=False))
            rows.append(_row("finetuned_features", "i3d112_t4", "res", 3, fold, seed, 0.6))
    return rows


def test_the_ensemble_is_the_numpy_mean_of_the_seeds_stored_probabilities():
    rows = _rows()
    ensembles = ensemble_rows(rows)
    assert {r["recipe"] for r in ensembles} == {"frozen+ens", "finetuned_features+ens"}
    assert len(ensembles) == 3 * FOLDS  # one per fold of each recipe, clip and head; no logreg
    for ens in ensembles:
        members = [r for r in rows if (r["recipe"] + "+ens", r["clip"], r["arch"], r["fold"])
                   == (ens["recipe"], ens["clip"], ens["arch"], ens["fold"])]  # fmt: skip
        assert len(members) == SEEDS and ens["seeds"] == [0, 1, 2]
        mean = np.mean([m["val_probabilities"] for m in members], axis=0)
        expected = np.mean(mean.argmax(-1) == _labels(ens["fold"]))
        assert ens["val_accuracy"] == pytest.approx(expected)
        np.testing.assert_allclose(ens["val_probabilities"], mean)
    groups = group_runs(with_variants(rows))
    cv = cv_interval(groups[("frozen+ens", "i3d224_t16", "rgb", "lstm", 3)])
    assert cv[0] == pytest.approx(np.mean([e["val_accuracy"] for e in ensembles
                                           if e["clip"] == "i3d224_t16"]))  # fmt: skip
    assert cv[1] < cv[0] < cv[2]


def test_tta_rows_score_the_same_runs_on_their_tta_probabilities():
    rows = _rows()
    tta = tta_rows(rows)
    assert len(tta) == len([r for r in rows if "tta_probabilities" in r])
    for row in tta:
        assert row["recipe"].endswith("+tta") and row["tta_views"] == 6
        expected = np.mean(np.argmax(row["val_probabilities"], -1) == row["val_labels"])
        assert row["val_accuracy"] == pytest.approx(expected)
    assert {r["recipe"] for r in with_variants(rows)} >= {"frozen+tta+ens", "logreg+tta"}


def test_the_report_groups_by_clip_and_the_selection_compares_across_specs():
    groups = group_runs(with_variants(_rows()))
    summary = summarise(groups)
    keys = {(e["recipe"], e["clip"]) for e in summary}
    assert ("frozen", "i3d112_t4") in keys and ("frozen", "i3d224_t16") in keys
    by_key = {(e["recipe"], e["clip"], e["arch"]): e for e in summary}
    assert by_key[("frozen", "i3d224_t16", "lstm")]["runs"] == FOLDS * SEEDS
    assert by_key[("frozen+ens", "i3d224_t16", "lstm")]["runs"] == FOLDS
    assert all(e["ci_low"] <= e["mean"] <= e["ci_high"] for e in summary)
    chosen = select(summary)
    best = max(summary, key=lambda e: e["mean"])
    assert chosen["best"]["mean"] == best["mean"]
    recurrent = chosen["best_recurrent"]
    assert recurrent["recipe"] in ("frozen", "finetuned_features")
    assert recurrent["mean"] == max(e["mean"] for e in summary
                                    if e["recipe"] in ("frozen", "finetuned_features"))  # fmt: skip
    assert recurrent["clip"] == "i3d224_t16"  # the better spec wins across specs
    paired = comparisons(groups, "i3d112_t4")
    against = {(c["key"]["recipe"], c["key"]["clip"]) for c in paired if "key" in c}
    assert ("frozen", "i3d224_t16") in against and ("frozen+ens", "i3d224_t16") in against
    ens = next(c for c in paired if c.get("key", {}).get("recipe") == "frozen+ens")
    assert ens["difference"]["pairs"] == FOLDS  # an ensemble pairs fold by fold


def test_a_one_per_fold_recipe_is_compared_with_the_others_fold_means():
    groups = group_runs(with_variants(_rows()))
    ens = groups[("frozen+ens", "i3d112_t4", "rgb", "lstm", 3)]
    runs = groups[("frozen", "i3d224_t16", "rgb", "lstm", 3)]
    compared = compare_groups("a", "b", ens, runs)
    means = [np.mean([runs[(f, s)]["val_accuracy"] for s in range(SEEDS)]) for f in range(FOLDS)]
    differences = [ens[(f, 0)]["val_accuracy"] - means[f] for f in range(FOLDS)]
    assert compared["difference"]["mean"] == pytest.approx(np.mean(differences))
