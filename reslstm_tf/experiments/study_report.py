"""The study's report: per-recipe summaries, paired comparisons, the depth table and plot.

Every comparison is paired: two recipes' accuracies on the same folds and seeds, their
difference with a 95% confidence interval (the corrected repeated-CV t interval), and
McNemar's test on the pooled out-of-fold predictions of seed 0 where the runs recorded them
(`reslstm_tf.experiments.statistics`; the pairing is the ablation report's `compare_runs`,
one function for both reports). Compared: Res-LSTM against the plain stack at each
depth of each recipe, and every recipe's head against the mean-pooled logistic regression.
"""

import json
import pathlib

import numpy as np

from reslstm_tf.experiments.report import accuracy_groups, compare_runs, runs_by_pair
from reslstm_tf.files import atomic_write
from reslstm_tf.plots import pyplot, save_figure

GROUP_FIELDS = ("recipe", "stream", "arch", "depth")
DEPTH_RECIPES = ("frozen", "frozen_aug", "finetuned_features")
RECIPE_TITLES = {
    "logreg": "mean-pooled logistic regression (frozen, centred view)",
    "frozen": "head on frozen features (centred view)",
    "frozen_aug": "head on frozen features, one augmented view per epoch",
    "finetuned": "I3D upper blocks + head fine-tuned end to end",
    "finetuned_features": "head on the fine-tuned I3D's features (augmented views)",
    "mid_product": "two-stream mid fusion (product) of fine-tuned features",
    "late_product": "two-stream late fusion (product) of fine-tuned streams",
    "late_sum": "two-stream late fusion (sum) of fine-tuned streams",
}


def read_runs(out_dir):
    """The rows of `<out_dir>/runs.jsonl` (the last row of a key wins)."""
    rows = {}
    path = pathlib.Path(out_dir) / "runs.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["key"]] = row
    return list(rows.values())


def summarise_runs(rows):
    """Groups rows by (recipe, stream, arch, depth): mean/std of val accuracy and costs."""
    summary = []
    for key, members, mean, std in accuracy_groups(rows, GROUP_FIELDS):
        train = [m["train_accuracy"] for m in members if m["train_accuracy"] is not None]
        epochs = members[0]["epochs"]
        seconds = float(np.mean([m["seconds"] for m in members]))
        summary.append(
            dict(
                key,
                mean=mean,
                std=std,
                runs=len(members),
                folds=len({m["fold"] for m in members}),
                seeds=len({m["seed"] for m in members}),
                train_accuracy=float(np.mean(train)) if train else None,
                seconds_per_run=seconds,
                seconds_per_epoch=seconds / epochs if epochs else None,
            )
        )
    return summary


def _group_name(key):
    """e.g. "frozen rgb res3"."""
    return f"{key[0]} {key[1]} {head_name(dict(zip(GROUP_FIELDS, key)))}"


def _compare(groups, key_a, key_b):
    """The paired comparison of two groups on their common (fold, seed) pairs, or None."""
    a, b = groups.get(key_a) or {}, groups.get(key_b) or {}
    return compare_runs(_group_name(key_a), _group_name(key_b), a, b)


def comparisons(rows):
    """Res against plain at each (recipe, stream, depth), and each head against logreg."""
    groups = runs_by_pair(rows, GROUP_FIELDS)
    found = []
    for recipe, stream, arch, depth in sorted(groups):
        if arch == "res":
            found.append(_compare(groups, (recipe, stream, "res", depth),
                                  (recipe, stream, "lstm", depth)))  # fmt: skip
    logreg = next((k for k in groups if k[0] == "logreg"), None)
    for key in sorted(groups):
        if logreg is not None and key != logreg:
            found.append(_compare(groups, key, logreg))
    return [c for c in found if c is not None]


def head_name(entry):
    """e.g. "res3" or "logreg"."""
    return "logreg" if entry["arch"] == "logreg" else f"{entry['arch']}{entry['depth']}"


def _pct(entry):
    return f"{100 * entry['mean']:.1f} ± {100 * entry['std']:.1f}"


def _main_table(summary):
    lines = [
        "| recipe | stream | head | val accuracy (%) | runs | train accuracy (%) "
        "| s / run | s / epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = list(RECIPE_TITLES)
    for e in sorted(summary, key=lambda e: (order.index(e["recipe"]), e["stream"], head_name(e))):
        train = "-" if e["train_accuracy"] is None else f"{100 * e['train_accuracy']:.1f}"
        per_epoch = "-" if e["seconds_per_epoch"] is None else f"{e['seconds_per_epoch']:.1f}"
        lines.append(
            f"| {e['recipe']} | {e['stream']} | {head_name(e)} | {_pct(e)} | {e['runs']} "
            f"| {train} | {e['seconds_per_run']:.1f} | {per_epoch} |"
        )
    return lines


def _find(summary, **filters):
    return next((e for e in summary if all(e[k] == v for k, v in filters.items())), None)


def _depth_table(summary, depths):
    lines = ["| recipe (RGB) | " + " | ".join(f"lstm{d} | res{d}" for d in depths) + " |"]
    lines.append("|---|" + "---|" * (2 * len(depths)))
    for recipe in DEPTH_RECIPES:
        cells = []
        for depth in depths:
            for arch in ("lstm", "res"):
                e = _find(summary, recipe=recipe, stream="rgb", arch=arch, depth=depth)
                cells.append("-" if e is None else _pct(e))
        if any(c != "-" for c in cells):
            lines.append(f"| {recipe} | " + " | ".join(cells) + " |")
    return lines


def plot_depth(summary, depths, path):
    """Val accuracy vs depth, LSTM against Res-LSTM, one panel per feature recipe (PNG)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(DEPTH_RECIPES), figsize=(4 * len(DEPTH_RECIPES), 3.4),
                             sharey=True)  # fmt: skip
    for axis, recipe in zip(np.atleast_1d(axes), DEPTH_RECIPES):
        for arch, color, label in (("lstm", "tab:blue", "LSTM"), ("res", "tab:red", "Res-LSTM")):
            points = [(d, _find(summary, recipe=recipe, stream="rgb", arch=arch, depth=d))
                      for d in depths]  # fmt: skip
            points = [(d, e) for d, e in points if e is not None]
            if points:
                x = [d for d, _ in points]
                axis.errorbar(x, [100 * e["mean"] for _, e in points],
                              yerr=[100 * e["std"] for _, e in points], color=color,
                              marker="o", capsize=3, label=label)  # fmt: skip
        baseline = _find(summary, recipe="logreg")
        if baseline is not None:
            axis.axhline(100 * baseline["mean"], color="gray", linestyle="--", linewidth=1,
                         label="logreg (mean-pooled)")  # fmt: skip
        axis.set_title(recipe, fontsize=10)
        axis.set_xlabel("stacked layers")
        axis.set_xticks(list(depths))
        axis.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("CV accuracy (%), mean ± std")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    save_figure(fig, path, dpi=90)


def study_report(out_dir):
    """Writes `results.json`, `results.md` and `depth.png` from `runs.jsonl`; returns the dict."""
    out = pathlib.Path(out_dir)
    rows = read_runs(out)
    summary = summarise_runs(rows)
    config = json.loads((out / "study_config.json").read_text(encoding="utf-8"))
    timings_path = out / "timings.jsonl"
    timings = [
        json.loads(line)
        for line in (timings_path.read_text().splitlines() if timings_path.exists() else [])
    ]
    depths = tuple(config["depths"])
    paired = comparisons(rows)
    report = {"config": config, "summary": summary, "comparisons": paired}
    report.update(timings=timings, runs=len(rows))
    lines = ["# Study results", "", "## All recipes", "", *_main_table(summary), ""]
    lines += ["## Paired differences (same folds and seeds, 95% CI)", ""]
    significant = [c for c in paired if c["significant"]]
    lines.append(
        f"{len(significant)} of {len(paired)} differences are significant."
        if paired
        else "No pairs to compare."
    )
    lines += [""] + [f"- {c['verdict']}" for c in paired] + [""]
    lines += ["## LSTM against Res-LSTM by depth (RGB)", "", *_depth_table(summary, depths), ""]
    lines += ["![accuracy vs depth](depth.png)", "", "## One-off stages", ""]
    lines += [f"- {t['stage']}: {t['seconds'] / 60:.1f} min" for t in timings]
    lines += ["", "## Recipes", ""] + [f"- `{k}`: {v}" for k, v in RECIPE_TITLES.items()]
    with atomic_write(out / "results.json", "w") as handle:
        handle.write(json.dumps(report, indent=2) + "\n")
    with atomic_write(out / "results.md", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    plot_depth(summary, depths, out / "depth.png")
    return report
