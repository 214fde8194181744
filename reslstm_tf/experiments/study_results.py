"""The study's results by clip spec: summaries with intervals, paired differences, selection.

`study_results(out_dir, config)` reads `runs.jsonl`, adds the derived recipes (`study_variants`: the
test-time views' "+tta" and the seed ensembles' "+ens"), groups every row by (recipe, clip
spec, stream, head), and writes `results.json`, `results.md` and `depth.png`:

* every group's CV accuracy: mean ± std (ddof 1, as the ablation's report) over its runs and
  the 95% corrected repeated-CV t interval of the mean;
* every group against the mean-pooled logistic regression on the study's own clip (the
  reference of the paper's comparisons), and Res-LSTM against the plain stack at each depth:
  the paired difference with its 95% interval and McNemar's test (`statistics.compare`);
* the selection by mean CV accuracy only, across clip specs: the best recipe overall
  (logistic regression, TTA and ensembles included) and the best recurrent head that ships
  as one model reading one view (`PUBLISHABLE` recipes), which `study_publish` publishes.

Rows written before clip specs were a dimension are read as the study's own clip.
"""

import json
import pathlib

import numpy as np

from reslstm_tf.experiments.study_report import RECIPE_TITLES, head_name, plot_depth, read_runs
from reslstm_tf.experiments.study_variants import (
    SPEC_FIELDS,
    base_recipe,
    compare_groups,
    cv_interval,
    group_runs,
    with_variants,
)
from reslstm_tf.files import atomic_write

# Recipes whose model ships as one video classifier that reads one view of a clip.
PUBLISHABLE = ("frozen", "frozen_aug", "finetuned_features")
VARIANT_TITLES = {
    "+tta": "the same runs scored on the mean probabilities of the test-time views",
    "+ens": "the seeds' runs of each fold as one predictor (mean probabilities), one value "
    "per fold",
}


def read_rows(out_dir, config):
    """The run rows of a study, each with its clip spec's tag (old rows: the study's own)."""
    from reslstm_tf.experiments.study_clips import clip_from_record, clip_tag

    main = clip_tag(clip_from_record(config["clip"]))
    return [dict(row, clip=row.get("clip") or main) for row in read_runs(out_dir)]


def group_name(key):
    """e.g. "frozen+tta i3d224_t16 lstm3" (the stream shown when it is not RGB)."""
    entry = dict(zip(SPEC_FIELDS, key))
    stream = "" if entry["stream"] == "rgb" else f" {entry['stream']}"
    return f"{entry['recipe']} {entry['clip']}{stream} {head_name(entry)}"


def summarise(groups):
    """One summary entry per group: CV mean, std, 95% interval, runs and costs."""
    summary = []
    for key, runs in groups.items():
        rows = list(runs.values())
        accuracies = [r["val_accuracy"] for r in rows]
        mean, low, high = cv_interval(runs)
        train = [r["train_accuracy"] for r in rows if r.get("train_accuracy") is not None]
        epochs, seconds = rows[0]["epochs"], float(np.mean([r["seconds"] for r in rows]))
        entry = dict(zip(SPEC_FIELDS, key))
        entry.update(
            mean=float(mean), std=float(np.std(accuracies, ddof=1)) if len(rows) > 1 else 0.0,
            ci_low=float(low),
            ci_high=float(high), runs=len(rows), folds=len({r["fold"] for r in rows}),
            seeds=len({s for r in rows for s in r.get("seeds", [r["seed"]])}),
            train_accuracy=float(np.mean(train)) if train else None,
            seconds_per_run=seconds, seconds_per_epoch=seconds / epochs if epochs else None,
            tta_views=rows[0].get("tta_views") if "+tta" in entry["recipe"] else None,
        )  # fmt: skip
        summary.append(entry)
    return sorted(summary, key=_order)


def _order(entry):
    recipes = list(RECIPE_TITLES)
    base = base_recipe(entry["recipe"])
    return (entry["clip"], recipes.index(base) if base in recipes else 99, entry["recipe"],
            entry["stream"], head_name(entry))  # fmt: skip


def reference_key(groups, main_clip):
    """The logistic regression on the study's own clip: the groups' reference."""
    return next((k for k in groups if k[0] == "logreg" and k[1] == main_clip), None)


def comparisons(groups, main_clip):
    """Res against plain at each (recipe, clip, stream, depth); every group against the
    logistic regression of every clip spec (the study's own clip's first: the reference)."""
    found = []
    for key in sorted(groups, key=str):
        recipe, clip, stream, arch, depth = key
        plain = (recipe, clip, stream, "lstm", depth)
        if arch == "res" and plain in groups:
            found.append(compare_groups(group_name(key), group_name(plain), groups[key],
                                        groups[plain]))  # fmt: skip
    reference = reference_key(groups, main_clip)
    logregs = [reference] + sorted(k for k in groups if k[0] == "logreg" and k != reference)
    for logreg in [k for k in logregs if k is not None]:
        for key in sorted(groups, key=str):
            if key == logreg:
                continue
            compared = compare_groups(group_name(key), group_name(logreg), groups[key],
                                      groups[logreg])  # fmt: skip
            if compared is not None:
                compared.update(key=dict(zip(SPEC_FIELDS, key)),
                                reference=dict(zip(SPEC_FIELDS, logreg)))  # fmt: skip
                found.append(compared)
    return [c for c in found if c is not None]


def _best(entries):
    """The entry of highest mean; ties (equal to 1e-9, so float noise never decides): the
    smaller std, then more runs."""
    key = lambda e: (round(e["mean"], 9), -round(e["std"], 9), e["runs"])  # noqa: E731
    return max(entries, key=key) if entries else None


def select(summary):
    """The CV selection across clip specs, by mean accuracy (ties: smaller std, more runs).

    Returns:
        {"best": the best summary entry of all (any recipe, derived ones too),
         "best_recurrent": the best recurrent head of a `PUBLISHABLE` recipe on RGB (one
         model, one view), "tied_with_best": the entries of the best's mean (itself too),
         "best_is_logreg": whether the best is a logistic regression, "logreg_ties_best":
         whether a logistic regression has the best mean}.
    """
    best = _best(summary)
    recurrent = _best([e for e in summary if e["recipe"] in PUBLISHABLE and e["stream"] == "rgb"])
    tied = [e for e in summary if best and round(e["mean"], 9) == round(best["mean"], 9)]
    return {"best": best, "best_recurrent": recurrent, "tied_with_best": tied,
            "best_is_logreg": bool(best and best["arch"] == "logreg"),
            "logreg_ties_best": any(e["arch"] == "logreg" for e in tied)}  # fmt: skip


def difference_to_reference(report, entry, reference=None):
    """The comparison of a summary entry with a logistic regression (a summary entry; default
    the study's own clip's) in a report, or None."""
    wanted = {k: entry[k] for k in SPEC_FIELDS}
    clip = reference["clip"] if reference else report["config_clip_tag"]
    return next((c for c in report["comparisons"] if c.get("key") == wanted
                 and c["reference"]["clip"] == clip), None)  # fmt: skip


def _pct(value):
    return f"{100 * value:.1f}"


def _difference_cell(comparison):
    if comparison is None:
        return "-", "-"
    d = comparison["difference"]
    mark = "**yes**" if comparison["significant"] else "no"
    return f"{100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]", mark


def _table(summary, report):
    lines = [
        "| clip | recipe | head | CV accuracy (%) mean ± std | 95% CI | runs "
        "| vs logreg (points, 95% CI) | significant | s / run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        stream = "" if e["stream"] == "rgb" else f" ({e['stream']})"
        diff, mark = _difference_cell(difference_to_reference(report, e))
        lines.append(
            f"| {e['clip']} | {e['recipe']}{stream} | {head_name(e)} "
            f"| {_pct(e['mean'])} ± {_pct(e['std'])} | [{_pct(e['ci_low'])}, {_pct(e['ci_high'])}] "
            f"| {e['runs']} | {diff} | {mark} | {e['seconds_per_run']:.1f} |"
        )
    return lines


def _selection_lines(selection):
    def line(what, e, note=""):
        name = group_name(tuple(e[k] for k in SPEC_FIELDS))
        interval = f"[{_pct(e['ci_low'])}, {_pct(e['ci_high'])}]"
        return f"- {what}: {name}, {_pct(e['mean'])} % {interval}{note}"

    best, recurrent = selection["best"], selection["best_recurrent"]
    lines = []
    if best is not None:
        note = " (the logistic regression)" if selection["best_is_logreg"] else ""
        lines.append(line("best of all", best, note))
    if recurrent is not None:
        lines.append(line("best recurrent head shipped as one model", recurrent))
    return lines


def _markdown(report):
    summary, paired = report["summary"], report["comparisons"]
    significant = [c for c in paired if c["significant"]]
    lines = ["# Study results", "", "## Every recipe by clip spec", "", *_table(summary, report)]
    lines += ["", "## Selection (mean CV accuracy, across clip specs)", ""]
    lines += _selection_lines(report["selection"])
    lines += ["", "## Paired differences (same folds and seeds, 95% CI)", ""]
    lines.append(f"{len(significant)} of {len(paired)} differences are significant.")
    lines += [""] + [f"- {c['verdict']}" for c in paired] + ["", "## Clip specs", ""]
    lines += [f"- `{tag}`: {spec}" for tag, spec in report["clips"].items()]
    lines += ["", "![accuracy vs depth](depth.png)", "", "## One-off stages", ""]
    lines += [f"- {t['stage']}: {t['seconds'] / 60:.1f} min" for t in report["timings"]]
    lines += ["", "## Recipes", ""] + [f"- `{k}`: {v}" for k, v in RECIPE_TITLES.items()]
    lines += [f"- `<recipe>{k}`: {v}" for k, v in VARIANT_TITLES.items()]
    return "\n".join(lines) + "\n"


def study_results(out_dir, config):
    """Writes `results.json`, `results.md` and `depth.png` from `runs.jsonl`; returns the dict.

    Args:
        out_dir: the study's folder.
        config: its `StudyConfig` (`StudyConfig.from_record` of its `study_config.json`).
    """
    out = pathlib.Path(out_dir)
    rows = read_rows(out, config.to_record())
    groups = group_runs(with_variants(rows), SPEC_FIELDS)
    summary = summarise(groups)
    timings_path = out / "timings.jsonl"
    lines = timings_path.read_text().splitlines() if timings_path.exists() else []
    report = {
        "config": config.to_record(),
        "config_clip_tag": config.clip_tag,
        "clips": {tag: spec.to_dict() for tag, spec in config.clips.items()},
        "summary": summary,
        "comparisons": comparisons(groups, config.clip_tag),
        "timings": [json.loads(line) for line in lines],
        "runs": len(rows),
    }
    report["selection"] = select(summary)
    with atomic_write(out / "results.json", "w") as handle:
        handle.write(json.dumps(report, indent=2) + "\n")
    with atomic_write(out / "results.md", "w") as handle:
        handle.write(_markdown(report))
    main = [e for e in summary if e["clip"] == config.clip_tag]
    plot_depth(main, config.depths, out / "depth.png")
    return report
