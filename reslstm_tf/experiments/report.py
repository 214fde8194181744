"""Ablation results: per-config summaries, paired comparisons and results.md.

Every accuracy is reported with a 95 % confidence interval of its mean over the runs (the
corrected repeated-CV t interval of `reslstm_tf.experiments.statistics`; a single hold-out
run gets the binomial one), and every comparison is paired: Res-LSTM against the plain stack
of the same depth, hidden size and T, and every recurrent head against the mean-pooled
logistic regression, on the same folds and seeds (`compare_runs`, which the study's report
uses too), with McNemar's test on the pooled out-of-fold predictions of the first common seed.
The figures are `report_figures`; runs.csv and the results files `report_files`.
"""

import math
from statistics import NormalDist

import numpy as np

from reslstm_tf.experiments.config import RNN_ARCHS
from reslstm_tf.experiments.statistics import compare, t_quantile

CONFIG_FIELDS = ("arch", "depth", "hidden", "T", "modality", "fusion", "level", "protocol")
CONFIDENCE, ALPHA = 0.95, 0.05  # the intervals' level and the tests' significance level
# What distinguishes the paired configs of each experiment's comparisons, in table order.
_SWEPT = {"baselines": ("depth",), "depth": ("depth",), "hidden": ("depth", "hidden"),
          "steps": ("T",)}  # fmt: skip
_WHAT = {
    "baselines": "each recurrent head and the mean-pooled logistic regression",
    "depth": "Res-LSTM and the plain stack at each depth",
    "hidden": "Res-LSTM and the plain stack at each hidden size",
    "steps": "Res-LSTM and the plain stack at each T",
}


def run_label(arch, depth):
    """Returns a head's short name, e.g. "res3" or "logreg (mean-pooled)"."""
    return "logreg (mean-pooled)" if arch == "logreg" else f"{arch}{depth}"


def experiment_rows(rows, experiment):
    """The rows of the runs `experiment` planned (a run shared by experiments names them all)."""
    return [row for row in rows if experiment in row["experiment"].split(";")]


def accuracy_groups(rows, fields):
    """Groups run rows by `fields`; yields ({field: value}, members, mean, std) of val accuracy."""
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in fields), []).append(row)
    for key, members in groups.items():
        acc = np.asarray([m["val_accuracy"] for m in members], np.float64)
        std = float(acc.std(ddof=1)) if len(acc) > 1 else 0.0
        yield dict(zip(fields, key)), members, float(acc.mean()), std


def mean_interval(accuracies, n_val, n_train, confidence=CONFIDENCE):
    """The confidence interval (low, high) of a mean accuracy over runs, within [0, 1].

    Several runs (folds x seeds): the Student-t interval with the repeated-CV variance
    correction (1/J + n_val/n_train) s^2 of `reslstm_tf.experiments.statistics`, since the
    runs share clips. One run: the binomial (Wald) interval over its `n_val` clips.
    """
    acc = np.asarray(accuracies, np.float64)
    mean = float(acc.mean())
    if len(acc) == 1:
        half = NormalDist().inv_cdf(0.5 + confidence / 2) * math.sqrt(mean * (1 - mean) / n_val)
    else:
        factor = 1.0 / len(acc) + n_val / n_train
        half = t_quantile(0.5 + confidence / 2, len(acc) - 1) * acc.std(ddof=1) * factor**0.5
    return max(0.0, mean - half), min(1.0, mean + half)


def summarise(rows):
    """Groups run rows by config; returns dicts with mean/std/95 % CI/n of val accuracy."""
    summary = []
    for key, members, mean, std in accuracy_groups(rows, CONFIG_FIELDS):
        n_val, n_train = int(members[0]["n_val"]), int(members[0]["n_train"])
        low, high = mean_interval([m["val_accuracy"] for m in members], n_val, max(n_train, 1))
        summary.append(
            dict(
                key,
                mean=mean,
                std=std,
                ci_low=low,
                ci_high=high,
                n=len(members),
                n_val=n_val,
                train_accuracy=float(np.mean([m["train_accuracy"] for m in members])),
                train_time_s=float(np.sum([m["train_time_s"] for m in members])),
                experiments=sorted({e for m in members for e in m["experiment"].split(";")}),
            )
        )
    return summary


def experiment_summaries(rows, experiments):
    """{experiment: `summarise` of the runs it planned}: each experiment's own folds x seeds."""
    return {e: summarise(experiment_rows(rows, e)) for e in experiments}


def pick_summaries(summary, experiment, **filters):
    """The summaries of `experiment`'s configs whose fields equal `filters`."""
    return [
        s
        for s in summary
        if experiment in s["experiments"] and all(s[k] == v for k, v in filters.items())
    ]


def select_best(summary):
    """Returns the best recurrent RGB head by mean cross-validated accuracy (ties: fewer units).

    Only configs evaluated with the "cv" protocol compete, so the choice rests on the
    most folds x seeds; among equal means the smaller, shallower head wins.
    """
    candidates = [
        s
        for s in summary
        if s["arch"] in RNN_ARCHS and s["modality"] == "rgb" and s["protocol"] == "cv"
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda s: (round(s["mean"], 6), -s["hidden"], -s["depth"]))


# ---------------------------------------------------------------- paired comparisons


def runs_by_pair(rows, fields):
    """Groups rows by `fields`: {key: {(fold, seed): row}}, the pairs a comparison matches."""
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in fields), {})[(row["fold"], row["seed"])] = row
    return groups


def pooled_correct(runs, pairs):
    """The first seed's out-of-fold correctness {video index: correct} over `pairs`.

    Returns None when one of those runs did not record its per-video predictions.
    """
    first = min(seed for _, seed in pairs)
    pooled = {}
    for fold, seed in pairs:
        if seed != first:
            continue
        row = runs[(fold, seed)]
        if not row.get("val_index"):
            return None
        pooled.update(zip(row["val_index"], row["val_correct"]))
    return pooled


def compare_runs(name_a, name_b, runs_a, runs_b, alpha=ALPHA):
    """The paired comparison of two configs' runs on their common (fold, seed) pairs.

    The mean difference of val accuracy a - b with its corrected repeated-CV t interval
    (n_val / n_train of the runs), and McNemar's exact test on the first common seed's pooled
    out-of-fold predictions where both configs' runs recorded them (`statistics.compare`).

    Args:
        name_a, name_b: the configs' names, for the verdict.
        runs_a, runs_b: {(fold, seed): row} (`runs_by_pair`); rows hold val_accuracy,
            n_val, n_train and optionally val_index / val_correct.
        alpha: the significance level (1 - the interval's confidence).

    Returns:
        `statistics.compare`'s dict, or None when fewer than 2 pairs are in common.
    """
    pairs = sorted(set(runs_a) & set(runs_b))
    if len(pairs) < 2:
        return None
    correct_a, correct_b = (pooled_correct(runs, pairs) or {} for runs in (runs_a, runs_b))
    videos = sorted(set(correct_a) & set(correct_b))
    tests = [[bool(c[v]) for v in videos] for c in (correct_a, correct_b)] if videos else []
    scores = [[runs[p]["val_accuracy"] for p in pairs] for runs in (runs_a, runs_b)]
    first = runs_a[pairs[0]]
    ratio = first["n_val"] / first["n_train"]  # the corrected CV variance
    return compare(name_a, name_b, *scores, *tests, alpha=alpha, ratio=ratio)


def config_name(config):
    """e.g. "res3 (H=256, T=16)" or "logreg (mean-pooled)"."""
    if config["arch"] == "logreg":
        return run_label("logreg", 0)
    return f"{config['arch']}{config['depth']} (H={config['hidden']}, T={config['T']})"


def _paired_keys(groups, experiment):
    """The (a, b) config keys `experiment` compares, in table order."""
    if experiment == "baselines":
        logreg = sorted(k for k in groups if k[0] == "logreg")
        heads = sorted((k for k in groups if k[0] in RNN_ARCHS), key=lambda k: (k[1], k[0]))
        return [(key, logreg[0]) for key in heads] if logreg else []
    return [(key, ("lstm", *key[1:])) for key in sorted(groups) if key[0] == "res"]


def ablation_comparisons(rows, experiments):
    """The paired comparisons of each experiment, on the runs it planned.

    "depth", "hidden" and "steps": Res-LSTM against the plain stack of the same depth,
    hidden size and T; "baselines": every recurrent head against the logistic regression.
    Other experiments compare nothing.

    Returns:
        {experiment: [comparison]}: `compare_runs`' dicts with "config_a" and "config_b"
        (the compared configs' fields).
    """
    found = {}
    for experiment in experiments:
        if experiment not in _SWEPT:
            continue
        groups = runs_by_pair(experiment_rows(rows, experiment), CONFIG_FIELDS)
        found[experiment] = []
        for key_a, key_b in _paired_keys(groups, experiment):
            config_a, config_b = (dict(zip(CONFIG_FIELDS, k)) for k in (key_a, key_b))
            found_pair = compare_runs(
                config_name(config_a), config_name(config_b), groups[key_a], groups.get(key_b, {})
            )
            if found_pair is not None:
                found[experiment].append(dict(found_pair, config_a=config_a, config_b=config_b))
    return found


def significance_sentence(comparisons, experiment):
    """One sentence saying in words which of an experiment's differences are significant."""
    what = _WHAT.get(experiment, experiment)
    if not comparisons:
        return f"No pairs of runs to compare {what}."
    rule = (
        f"significant means the {CONFIDENCE:.0%} CI of the paired difference excludes 0 and "
        f"McNemar's p < {ALPHA}"
    )
    significant = [c for c in comparisons if c["significant"]]
    if not significant:
        by_interval = sum(c["difference"]["low"] > 0 or c["difference"]["high"] < 0
                          for c in comparisons)  # fmt: skip
        also = f"; {by_interval} of the intervals alone exclude 0" if by_interval else ""
        count = (
            "The one difference"
            if len(comparisons) == 1
            else f"None of the {len(comparisons)} differences"
        )
        verb = "is not" if len(comparisons) == 1 else "is"
        return (
            f"{count} between {what} {verb} significant ({rule}){also}: at that level these "
            "folds and seeds cannot tell them apart."
        )
    listed = "; ".join(
        f"{c['a']} {'above' if c['difference']['mean'] > 0 else 'below'} {c['b']}"
        for c in significant
    )
    return (
        f"{len(significant)} of the {len(comparisons)} differences between {what} "
        f"{'is' if len(significant) == 1 else 'are'} significant ({rule}): {listed}."
    )


# ------------------------------------------------------------------------- markdown


def _ci(entry):
    """A summary entry's mean and CI in %, e.g. "78.7 [71.0, 86.4]" (one run: binomial)."""
    return f"{100 * entry['mean']:.1f} [{100 * entry['ci_low']:.1f}, {100 * entry['ci_high']:.1f}]"


def experiment_seeds(config, experiment):
    """How many training seeds `experiment` runs: `seeds` for baselines and depth, else
    `sweep_seeds`."""
    return config.seeds if experiment in ("baselines", "depth") else config.sweep_seeds


def protocol_text(config, protocol, seeds=None):
    """Returns one sentence describing how a protocol's accuracies were measured.

    Args:
        config: the `AblationConfig`.
        protocol: "cv" or "holdout".
        seeds: the training seeds (default `config.seeds` for "cv", `sweep_seeds` otherwise).
    """
    interval = f"mean [{CONFIDENCE:.0%} CI] over the runs"
    if protocol == "cv":
        seeds = seeds or config.seeds
        return (
            f"stratified {config.folds}-fold cross-validation x {seeds} seed(s) "
            f"(split seed {config.split_seed}), {config.folds * seeds} runs per config; "
            f"{interval}"
        )
    seeds = seeds or config.sweep_seeds
    return (
        f"fixed stratified hold-out ({config.holdout_fraction:.0%} of each class, split seed "
        f"{config.split_seed}) x {seeds} seed(s); {interval} (binomial for one run)"
    )


def experiment_protocol_text(config, experiment):
    """`protocol_text` of the protocol and the seeds `experiment` runs with."""
    return protocol_text(
        config, config.protocol_of(experiment), experiment_seeds(config, experiment)
    )


def _header_lines(config, data_info, timings):
    train = config.train
    data = (
        f"- data: {data_info['num_clips']} clips, {data_info['num_classes']} classes "
        f"({', '.join(data_info['class_names'])}), features {data_info['feature_shape']}"
        if data_info.get("num_clips")
        else f"- data: rebuilt from the {timings['runs']} runs of a runs.csv"
    )
    return [
        "# Res-LSTM ablation results",
        "",
        data,
        f"- training: Adam lr {train.learning_rate}, {train.epochs} epochs, batch "
        f"{train.batch_size}, dropout {config.dropout}, no early stopping",
        f"- total time: {timings['total_s'] / 60:.1f} min for {timings['runs']} runs",
        f"- accuracies: mean [{CONFIDENCE:.0%} CI of the mean] over folds x seeds (the "
        "repeated-CV t interval, corrected for runs that share clips); differences are "
        "paired on the same folds and seeds, with McNemar's exact test on the first seed's "
        "pooled out-of-fold predictions",
        "",
    ]


def _section(title, protocol, *notes):
    """A results section's heading, protocol line and notes, each followed by a blank line."""
    return [f"## {title}", "", f"Protocol: {protocol}.", *notes, ""]


def _mcnemar_cell(comparison):
    test = comparison["mcnemar"]
    if test is None:
        return "-"
    return f"{test['p_value']:.2g} ({test['only_a']} / {test['only_b']})"


def _difference_cells(comparison):
    diff = comparison["difference"]
    return [
        f"{100 * diff['mean']:+.1f}",
        f"[{100 * diff['low']:+.1f}, {100 * diff['high']:+.1f}]",
        _mcnemar_cell(comparison),
        "**yes**" if comparison["significant"] else "no",
    ]


_DIFFERENCE_HEADER = "difference (points) | 95 % CI | McNemar p (only a / only b) | significant"


def _arch_pair_lines(summary, comparisons, experiment):
    """One row per compared setting: LSTM, Res-LSTM, their paired difference and tests."""
    swept = _SWEPT[experiment]
    lines = [
        f"| {' | '.join(swept)} | LSTM (%) | Res-LSTM (%) | Res - LSTM: {_DIFFERENCE_HEADER} |",
        "|---" * (len(swept) + 6) + "|",
    ]
    for comparison in comparisons:
        config = comparison["config_a"]
        fixed = {k: v for k, v in config.items() if k != "arch"}
        cells = [str(config[k]) for k in swept]
        for arch in RNN_ARCHS:
            found = pick_summaries(summary, experiment, arch=arch, **fixed)
            cells.append(_ci(found[0]) if found else "-")
        lines.append("| " + " | ".join(cells + _difference_cells(comparison)) + " |")
    return lines + ["", significance_sentence(comparisons, experiment), ""]


def _baseline_lines(summaries, comparisons, config):
    experiment = "baselines" if "baselines" in summaries else "depth"
    summary = summaries[experiment]
    depth_one = (
        ["Res-LSTM at depth 1 has no shortcut between stacked layers: its one shortcut is the "
         "first layer's, from the input projected to H (x^1 = LSTM_1(x^0) + W x^0).", ""]
        if 1 in config.depths else []
    )  # fmt: skip
    lines = _section(
        "Baselines and depth (RGB)",
        experiment_protocol_text(config, experiment),
        f"Hidden size {config.base_hidden}, T = {config.base_steps}. Plot: `depth.png`.",
    )
    lines += depth_one
    lines += ["| model | val accuracy (%) | runs | train accuracy (%) |", "|---|---|---|---|"]
    order = {"logreg": 0, "lstm": 1, "res": 2}
    for s in sorted(
        pick_summaries(summary, experiment), key=lambda s: (order[s["arch"]], s["depth"])
    ):
        lines.append(
            f"| {run_label(s['arch'], s['depth'])} | {_ci(s)} | {s['n']} | "
            f"{100 * s['train_accuracy']:.1f} |"
        )
    lines.append("")
    if "depth" in comparisons:
        lines += ["### Res-LSTM against the plain stack, by depth", ""]
        lines += _arch_pair_lines(summaries["depth"], comparisons["depth"], "depth")
    if comparisons.get("baselines"):
        lines += ["### Each head against the logistic regression", ""]
        lines += [f"| head - logreg | {_DIFFERENCE_HEADER} |", "|---|---|---|---|---|"]
        for comparison in comparisons["baselines"]:
            name = run_label(comparison["config_a"]["arch"], comparison["config_a"]["depth"])
            lines.append(f"| {name} | " + " | ".join(_difference_cells(comparison)) + " |")
        lines += ["", significance_sentence(comparisons["baselines"], "baselines"), ""]
    return lines


def _hidden_lines(summaries, comparisons, config):
    return _section(
        "Hidden size",
        experiment_protocol_text(config, "hidden"),
        f"T = {config.base_steps}. Plot: `hidden_size.png`.",
    ) + _arch_pair_lines(summaries["hidden"], comparisons.get("hidden", []), "hidden")


def _steps_lines(summaries, comparisons, config):
    return _section(
        "Number of LSTM steps T",
        experiment_protocol_text(config, "steps"),
        f"Depth {config.base_depth}, hidden {config.base_hidden}; step t reads segment "
        "`step_segment_map(T, K)[t]` of the K cached segments. Plot: `steps.png`.",
    ) + _arch_pair_lines(summaries["steps"], comparisons.get("steps", []), "steps")


def _fusion_lines(summaries, comparisons, config):
    lines = _section(
        "Two-stream fusion",
        experiment_protocol_text(config, "fusion"),
        f"Head {config.fusion_arch}{config.base_depth}, hidden {config.base_hidden}, "
        f"T = {config.base_steps}.",
    ) + [
        "| input | fusion | level | val accuracy (%) | runs |",
        "|---|---|---|---|---|",
    ]
    order = {"rgb": 0, "flow": 1, "two_stream": 2}
    names = {"rgb": "RGB only", "flow": "flow only", "two_stream": "RGB + flow"}
    rows = pick_summaries(summaries["fusion"], "fusion")
    for s in sorted(rows, key=lambda s: (order[s["modality"]], s["level"], s["fusion"])):
        lines.append(
            f"| {names[s['modality']]} | {s['fusion'] or '-'} | {s['level'] or '-'} | "
            f"{_ci(s)} | {s['n']} |"
        )
    return lines + [""]


def _best_lines(summary):
    best = select_best(summary)
    if not best:
        return []
    return [
        "## Selected head",
        "",
        f"{best['arch']}{best['depth']}, hidden {best['hidden']}, T = {best['T']}: {_ci(best)} % "
        f"({best['protocol']}, {best['n']} runs).",
        "",
    ]


def results_markdown(rows, config, data_info, timings, comparisons=None):
    """Returns the Markdown report of a finished ablation.

    Args:
        rows: the run rows (`read_runs`).
        config: the `AblationConfig` that ran.
        data_info: dict with num_clips, num_classes, class_names and feature_shape.
        timings: dict with total_s and runs.
        comparisons: `ablation_comparisons(rows, config.experiments)` (computed if None).
    """
    summaries = experiment_summaries(rows, config.experiments)
    if comparisons is None:
        comparisons = ablation_comparisons(rows, config.experiments)
    lines = _header_lines(config, data_info, timings)
    if any(e in config.experiments for e in ("baselines", "depth")):
        lines += _baseline_lines(summaries, comparisons, config)
    sections = {"hidden": _hidden_lines, "steps": _steps_lines, "fusion": _fusion_lines}
    for experiment, section in sections.items():
        if experiment in config.experiments:
            lines += section(summaries, comparisons, config)
    return "\n".join(lines + _best_lines(summarise(rows)))


def report_data(rows, config):
    """What results.json says of finished runs: summaries, comparisons and their verdicts."""
    comparisons = ablation_comparisons(rows, config.experiments)
    summary = summarise(rows)
    return {
        "summary": summary,
        "summaries": experiment_summaries(rows, config.experiments),
        "comparisons": comparisons,
        "verdicts": {e: significance_sentence(c, e) for e, c in comparisons.items()},
        "best": select_best(summary),
    }
