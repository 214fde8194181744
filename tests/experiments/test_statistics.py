"""The study's statistics against published tables, hand arithmetic and known differences."""

import numpy as np
import pytest

from reslstm_tf.experiments import statistics as stats


@pytest.mark.parametrize(
    "probability, dof, published",  # Student's t table (two-sided 95% and 99%, one-sided 95%)
    [(0.975, 14, 2.145), (0.975, 4, 2.776), (0.95, 1, 6.314), (0.995, 29, 2.756)],
)
def test_t_quantiles_match_the_published_table(probability, dof, published):
    assert stats.t_quantile(probability, dof) == pytest.approx(published, abs=5e-4)


def test_paired_difference_is_the_t_interval_of_the_differences():
    a = np.array([0.80, 0.83, 0.77, 0.90, 0.87, 0.80])
    b = np.array([0.77, 0.80, 0.80, 0.83, 0.83, 0.77])
    diff = stats.paired_difference(a, b)
    d = a - b
    half = 2.5706 * d.std(ddof=1) / np.sqrt(len(d))  # t(0.975, 5) from the table
    assert diff.mean == pytest.approx(d.mean())
    assert (diff.low, diff.high) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-4)
    with pytest.raises(ValueError, match="equal-length"):
        stats.paired_difference(a, b[:3])


def test_mcnemar_exact_p_value_by_hand():
    # 2 examples only A gets right, 6 only B: p = 2 * (C(8,0) + C(8,1) + C(8,2)) / 2**8.
    correct_a = np.array([1, 0, 0, 0, 0, 0, 0, 1, 1], bool)
    correct_b = np.array([0, 1, 1, 1, 1, 1, 1, 1, 0], bool)
    test = stats.mcnemar(correct_a, correct_b)
    assert (test.only_a, test.only_b) == (2, 6)
    assert test.p_value == pytest.approx(2 * (1 + 8 + 28) / 2**8)
    assert stats.mcnemar(correct_a, correct_a).p_value == 1.0


def _folds(correct, folds=5, seeds=3):
    """Per (fold, seed) accuracies of pooled per-example correctness, as the study pairs them."""
    rows = np.array_split(np.arange(len(correct)), folds)
    return np.array([correct[r].mean() for _ in range(seeds) for r in rows])


def test_a_known_difference_is_found_and_no_difference_is_said_so():
    rng = np.random.default_rng(0)
    better = rng.random(600) < 0.9
    worse = better & (rng.random(600) > 0.2)  # right on a subset: about 18 points lower
    found = stats.compare("A", "B", _folds(better), _folds(worse), better, worse)
    assert found["significant"] and found["verdict"].startswith("A is significantly above B")
    assert 0.12 < found["difference"]["mean"] < 0.24 and found["mcnemar"]["p_value"] < 1e-10
    twin = rng.random(600) < 0.9  # the same accuracy, independent errors
    same = stats.compare("A", "C", _folds(better), _folds(twin), better, twin)
    assert not same["significant"]
    assert same["verdict"].startswith("no significant difference between A and C")
    low, high = same["difference"]["low"], same["difference"]["high"]
    assert low < 0 < high


def test_the_corrected_cv_interval_widens_by_the_test_train_ratio():
    # Nadeau & Bengio's correction: variance (1/J + n_test/n_train) s^2 instead of s^2 / J.
    rng = np.random.default_rng(1)
    a, b = rng.random(15), rng.random(15)
    plain = stats.paired_difference(a, b)
    corrected = stats.paired_difference(a, b, test_train_ratio=0.25)
    widen = np.sqrt((1 / 15 + 0.25) / (1 / 15))
    assert corrected.mean == plain.mean
    assert corrected.high - corrected.low == pytest.approx(widen * (plain.high - plain.low))


def test_the_study_report_pairs_runs_by_fold_and_seed():
    from reslstm_tf.experiments.study_report import comparisons

    rng = np.random.default_rng(2)
    rows = []
    for fold in range(5):
        for seed in range(3):
            index = list(range(fold * 30, fold * 30 + 30))
            base = rng.random(30) < 0.8
            for arch, depth, correct in (
                ("logreg", 0, base),
                ("lstm", 2, base),  # the same predictions: no difference
                ("res", 2, base & (rng.random(30) < 0.5)),  # right on half of them
            ):
                recipe = "logreg" if arch == "logreg" else "frozen"
                row = dict(recipe=recipe, stream="rgb", arch=arch, depth=depth, fold=fold)
                row.update(seed=seed, n_train=120, n_val=30, val_accuracy=correct.mean())
                rows.append(dict(row, val_index=index, val_correct=[int(c) for c in correct]))
    found = {(c["a"], c["b"]): c for c in comparisons(rows)}
    res = found[("frozen rgb res2", "frozen rgb lstm2")]
    assert res["significant"] and res["difference"]["pairs"] == 15
    assert res["mcnemar"]["only_a"] == 0 and res["mcnemar"]["p_value"] < 1e-6
    same = found[("frozen rgb lstm2", "logreg rgb logreg")]
    assert not same["significant"] and same["mcnemar"]["p_value"] == 1.0
