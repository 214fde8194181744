"""Recipes the study derives from stored probabilities: test-time views and seed ensembles.

No run trains for these: each is computed from the rows of `runs.jsonl`.

* `<recipe>+tta`: the same run scored on the mean of its probabilities over the test-time
  views (the row's `tta_probabilities`, `study_clips.tta_views`), one row per run;
* `<recipe>+ens`: the seeds' runs of a fold as one predictor, the mean of their validation
  probabilities (`val_probabilities`), one row per fold (its `seed` is 0, `seeds` lists the
  seeds averaged); `<recipe>+tta+ens` the same on the TTA probabilities. The logistic
  regression is deterministic (its seeds are one model), so it has no ensemble.

Comparisons involving a one-row-per-fold recipe pair it with the other recipe's fold means
(`fold_level`); the pooled out-of-fold predictions for McNemar are the ensemble's and the
other recipe's lowest seed's. `cv_interval` is a recipe's CV mean with the corrected
repeated-CV t interval (`statistics.paired_difference` against 0).
"""

import numpy as np

from reslstm_tf.experiments.statistics import compare, paired_difference

TTA, ENSEMBLE = "+tta", "+ens"
# The fields every run row is grouped by: a recipe on one clip spec, stream and head.
SPEC_FIELDS = ("recipe", "clip", "stream", "arch", "depth")


def base_recipe(recipe):
    """The trained recipe of a (derived) recipe name: "frozen+tta+ens" -> "frozen"."""
    return recipe.split("+")[0]


def _scored(row, probabilities, labels):
    """A copy of `row` scored on other probabilities of its validation videos."""
    probabilities = np.asarray(probabilities, np.float64)
    correct = probabilities.argmax(-1) == labels
    return dict(row, val_probabilities=probabilities.tolist(),
                val_correct=[int(c) for c in correct],
                val_accuracy=float(np.mean(correct)))  # fmt: skip


def tta_rows(rows):
    """One `<recipe>+tta` row per run that recorded TTA probabilities."""
    out = []
    for row in rows:
        if row.get("tta_probabilities") is None:
            continue
        derived = dict(row, recipe=row["recipe"] + TTA, key=row.get("key", "") + TTA)
        labels = _true_labels(row)
        derived.pop("tta_probabilities")
        out.append(_scored(derived, row["tta_probabilities"], labels))
    return out


def _true_labels(row):
    """The validation labels of a row: its `val_labels`, or for rows that did not record
    them its predictions where right and the other class where wrong (2 classes; with
    more, the label of a wrong prediction is unknown: -1)."""
    if row.get("val_labels") is not None:
        return np.asarray(row["val_labels"])
    probabilities = np.asarray(row["val_probabilities"])
    predicted = probabilities.argmax(-1)
    correct = np.asarray(row["val_correct"], bool)
    if probabilities.shape[-1] == 2:
        return np.where(correct, predicted, 1 - predicted)
    return np.where(correct, predicted, -1)


def ensemble_rows(rows):
    """One `<recipe>+ens` row per fold of every group with 2+ seeds of probabilities."""
    groups = {}
    for row in rows:
        skip = row["recipe"].endswith(ENSEMBLE) or row["arch"] == "logreg"  # deterministic
        if row.get("val_probabilities") is None or skip:
            continue
        key = tuple(row[k] for k in SPEC_FIELDS) + (row["fold"],)
        groups.setdefault(key, []).append(row)
    out = []
    for _, members in sorted(groups.items(), key=lambda item: str(item[0])):
        if len(members) < 2:
            continue
        members = sorted(members, key=lambda r: r["seed"])
        first = members[0]
        mean = np.mean([m["val_probabilities"] for m in members], axis=0)
        derived = dict(first, recipe=first["recipe"] + ENSEMBLE, seed=0,
                       seeds=[m["seed"] for m in members], train_accuracy=None,
                       seconds=round(sum(m["seconds"] for m in members), 2),
                       key=f"{first.get('key', '')}{ENSEMBLE}")  # fmt: skip
        derived.pop("tta_probabilities", None)
        out.append(_scored(derived, mean, _true_labels(first)))
    return out


def with_variants(rows):
    """The rows with every derived recipe's rows added (TTA, ensembles of both)."""
    tta = tta_rows(rows)
    return [*rows, *tta, *ensemble_rows(rows), *ensemble_rows(tta)]


# ------------------------------------------------------------------------ statistics


def group_runs(rows, fields=SPEC_FIELDS):
    """{group key: {(fold, seed): row}}."""
    groups = {}
    for row in rows:
        key = tuple(row[k] for k in fields)
        groups.setdefault(key, {})[(row["fold"], row["seed"])] = row
    return groups


def fold_level(runs):
    """A group's runs as one row per fold: the seeds' mean accuracy, the lowest seed's
    predictions (for McNemar). {(fold, 0): row}."""
    folds = {}
    for (fold, seed), row in runs.items():
        folds.setdefault(fold, []).append((seed, row))
    out = {}
    for fold, members in folds.items():
        members.sort(key=lambda item: item[0])
        mean = float(np.mean([row["val_accuracy"] for _, row in members]))
        out[(fold, 0)] = dict(members[0][1], val_accuracy=mean)
    return out


def _one_per_fold(runs):
    return len({fold for fold, _ in runs}) == len(runs)


def _pooled(runs, pairs):
    """The lowest seed's out-of-fold correctness by video, or {} if not recorded."""
    pooled, low = {}, min(seed for _, seed in pairs)
    for fold, seed in pairs:
        row = runs[(fold, seed)]
        if seed == low and "val_correct" in row:
            pooled.update(zip(row["val_index"], row["val_correct"]))
    return pooled


def compare_groups(name_a, name_b, runs_a, runs_b, alpha=0.05):
    """The paired comparison of two groups of runs ({(fold, seed): row}), or None.

    Pairs are the common (fold, seed)s; if either group has one row per fold (an ensemble),
    both are taken fold by fold (`fold_level`).
    """
    if _one_per_fold(runs_a) != _one_per_fold(runs_b):
        runs_a, runs_b = fold_level(runs_a), fold_level(runs_b)
    pairs = sorted(set(runs_a) & set(runs_b))
    if len(pairs) < 2:
        return None
    correct_a, correct_b = _pooled(runs_a, pairs), _pooled(runs_b, pairs)
    videos = sorted(set(correct_a) & set(correct_b))
    tests = [[bool(c[v]) for v in videos] for c in (correct_a, correct_b)] if videos else []
    scores = [[g[p]["val_accuracy"] for p in pairs] for g in (runs_a, runs_b)]
    first = runs_a[pairs[0]]
    ratio = first["n_val"] / first["n_train"]
    return compare(name_a, name_b, *scores, *tests, alpha=alpha, ratio=ratio)


def cv_interval(runs, confidence=0.95):
    """(mean, low, high) of a group's CV accuracy: the corrected repeated-CV t interval."""
    accuracies = [row["val_accuracy"] for row in runs.values()]
    if len(accuracies) < 2:
        mean = float(np.mean(accuracies))
        return mean, mean, mean
    first = next(iter(runs.values()))
    interval = paired_difference(accuracies, np.zeros(len(accuracies)), confidence,
                                 first["n_val"] / first["n_train"])  # fmt: skip
    return interval.mean, interval.low, interval.high
