"""Ablation results: per-config summaries, the selected head, results.json/.md and the plots."""

import csv
import dataclasses
import json
import math
import pathlib

import numpy as np

from reslstm_tf.experiments.config import RNN_ARCHS
from reslstm_tf.plots import pyplot, save_figure

CSV_FIELDS = (
    "experiment",
    "arch",
    "depth",
    "hidden",
    "T",
    "modality",
    "fusion",
    "level",
    "protocol",
    "seed",
    "fold",
    "n_train",
    "n_val",
    "epochs",
    "train_accuracy",
    "val_accuracy",
    "train_time_s",
)
CONFIG_FIELDS = ("arch", "depth", "hidden", "T", "modality", "fusion", "level", "protocol")
_STYLES = {"lstm": ("tab:blue", "o", "LSTM"), "res": ("tab:red", "s", "Res-LSTM")}
_DPI = 90


def run_label(arch, depth):
    """Returns a head's short name, e.g. "res3" or "logreg (mean-pooled)"."""
    return "logreg (mean-pooled)" if arch == "logreg" else f"{arch}{depth}"


def accuracy_groups(rows, fields):
    """Groups run rows by `fields`; yields ({field: value}, members, mean, std) of val accuracy."""
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in fields), []).append(row)
    for key, members in groups.items():
        acc = np.asarray([m["val_accuracy"] for m in members], np.float64)
        std = float(acc.std(ddof=1)) if len(acc) > 1 else 0.0
        yield dict(zip(fields, key)), members, float(acc.mean()), std


def summarise(rows):
    """Groups run rows by config; returns a list of dicts with mean/std/n of val accuracy."""
    summary = []
    for key, members, mean, std in accuracy_groups(rows, CONFIG_FIELDS):
        summary.append(
            dict(
                key,
                mean=mean,
                std=std,
                n=len(members),
                n_val=int(members[0]["n_val"]),
                train_accuracy=float(np.mean([m["train_accuracy"] for m in members])),
                train_time_s=float(np.sum([m["train_time_s"] for m in members])),
                experiments=sorted({e for m in members for e in m["experiment"].split(";")}),
            )
        )
    return summary


def _error(entry):
    """Error bar: std over runs, or the binomial standard error for a single hold-out run."""
    if entry["n"] > 1:
        return entry["std"]
    p = entry["mean"]
    return math.sqrt(p * (1 - p) / max(entry["n_val"], 1))


def _pick(summary, experiment, **filters):
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


# ------------------------------------------------------------------------- markdown


def _pct(entry):
    if entry["n"] == 1:
        return f"{100 * entry['mean']:.1f}"
    return f"{100 * entry['mean']:.1f} ± {100 * entry['std']:.1f}"


def protocol_text(config, protocol):
    """Returns one sentence describing how a protocol's accuracies were measured."""
    if protocol == "cv":
        return (
            f"stratified {config.folds}-fold cross-validation x {config.seeds} seeds "
            f"(split seed {config.split_seed}); mean ± std over the {config.folds * config.seeds}"
            " runs"
        )
    return (
        f"fixed stratified hold-out ({config.holdout_fraction:.0%} of each class, split seed "
        f"{config.split_seed}) x {config.sweep_seeds} seed(s); mean ± std over seeds "
        "(± binomial standard error when there is one seed)"
    )


def _header_lines(config, data_info, timings):
    train = config.train
    return [
        "# Res-LSTM ablation results",
        "",
        f"- data: {data_info['num_clips']} clips, {data_info['num_classes']} classes "
        f"({', '.join(data_info['class_names'])}), features {data_info['feature_shape']}",
        f"- training: Adam lr {train.learning_rate}, {train.epochs} epochs, batch "
        f"{train.batch_size}, dropout {config.dropout}, no early stopping",
        f"- total time: {timings['total_s'] / 60:.1f} min for {timings['runs']} runs",
        "",
    ]


def _section(title, protocol, *notes):
    """A results section's heading, protocol line and notes, each followed by a blank line."""
    return [f"## {title}", "", f"Protocol: {protocol}.", *notes, ""]


def _baseline_lines(summary, config):
    lines = _section("Baselines (RGB)", protocol_text(config, "cv"))
    lines += [f"Hidden size {config.base_hidden}, T = {config.base_steps}.", ""]
    lines += ["| model | val accuracy (%) | runs | train accuracy (%) |", "|---|---|---|---|"]
    rows = _pick(summary, "baselines") or _pick(summary, "depth")
    order = {"logreg": 0, "lstm": 1, "res": 2}
    for s in sorted(rows, key=lambda s: (order[s["arch"]], s["depth"])):
        lines.append(
            f"| {run_label(s['arch'], s['depth'])} | {_pct(s)} | {s['n']} | "
            f"{100 * s['train_accuracy']:.1f} |"
        )
    return lines + [""]


def _hidden_lines(summary, config):
    lines = _section(
        "Hidden size",
        protocol_text(config, config.sweep_protocol),
        f"T = {config.base_steps}. Plot: `hidden_size.png`.",
    )
    header = "| depth | model | " + " | ".join(f"H={h}" for h in config.hidden) + " |"
    lines += [header, "|---|---|" + "---|" * len(config.hidden)]
    for depth in config.depths:
        for arch in RNN_ARCHS:
            cells = _cells(summary, "hidden", "hidden", config.hidden, arch=arch, depth=depth)
            lines.append(f"| {depth} | {arch} | " + " | ".join(cells) + " |")
    return lines + [""]


def _cells(summary, experiment, field, values, **fixed):
    """A table row's cells: the accuracy of each value of `field` (mean only with `depth`)."""
    cells = []
    for value in values:
        found = _pick(summary, experiment, **fixed, **{field: value})
        if not found:
            cells.append("-")
        elif experiment == "hidden":
            cells.append(f"{100 * found[0]['mean']:.1f}")
        else:
            cells.append(_pct(found[0]))
    return cells


def _steps_lines(summary, config):
    lines = _section(
        "Number of LSTM steps T",
        protocol_text(config, config.sweep_protocol),
        f"Depth {config.base_depth}, hidden {config.base_hidden}; step t reads segment "
        "`step_segment_map(T, K)[t]` of the K cached segments. Plot: `steps.png`.",
    )
    header = "| model | " + " | ".join(f"T={t}" for t in config.steps) + " |"
    lines += [header, "|---|" + "---|" * len(config.steps)]
    for arch in RNN_ARCHS:
        cells = _cells(summary, "steps", "T", config.steps, arch=arch)
        lines.append(f"| {arch}{config.base_depth} | " + " | ".join(cells) + " |")
    return lines + [""]


def _fusion_lines(summary, config):
    lines = _section(
        "Two-stream fusion",
        protocol_text(config, config.sweep_protocol),
        f"Head {config.fusion_arch}{config.base_depth}, hidden {config.base_hidden}, "
        f"T = {config.base_steps}.",
    ) + [
        "| input | fusion | level | val accuracy (%) | runs |",
        "|---|---|---|---|---|",
    ]
    order = {"rgb": 0, "flow": 1, "two_stream": 2}
    names = {"rgb": "RGB only", "flow": "flow only", "two_stream": "RGB + flow"}
    rows = _pick(summary, "fusion")
    for s in sorted(rows, key=lambda s: (order[s["modality"]], s["level"], s["fusion"])):
        lines.append(
            f"| {names[s['modality']]} | {s['fusion'] or '-'} | {s['level'] or '-'} | "
            f"{_pct(s)} | {s['n']} |"
        )
    return lines + [""]


def _best_lines(summary):
    best = select_best(summary)
    if not best:
        return []
    return [
        "## Selected head",
        "",
        f"{best['arch']}{best['depth']}, hidden {best['hidden']}: {_pct(best)} % "
        f"({best['protocol']}, {best['n']} runs).",
        "",
    ]


def results_markdown(summary, config, data_info, timings):
    """Returns the Markdown report of a finished ablation.

    Args:
        summary: the list `summarise` returns.
        config: the `AblationConfig` that ran.
        data_info: dict with num_clips, num_classes, class_names and feature_shape.
        timings: dict with total_s and runs.
    """
    lines = _header_lines(config, data_info, timings)
    if any(e in config.experiments for e in ("baselines", "depth")):
        lines += _baseline_lines(summary, config)
    sections = {"hidden": _hidden_lines, "steps": _steps_lines, "fusion": _fusion_lines}
    for experiment, section in sections.items():
        if experiment in config.experiments:
            lines += section(summary, config)
    return "\n".join(lines + _best_lines(summary))


# ---------------------------------------------------------------------------- plots


def _errorbars(axis, summary, experiment, x_key, filters, skip_empty=False):
    """Draws one error-bar line per recurrent arch (accuracy in % against `x_key`)."""
    for arch, (color, marker, label) in _STYLES.items():
        found = sorted(_pick(summary, experiment, arch=arch, **filters), key=lambda s: s[x_key])
        if skip_empty and not found:
            continue
        axis.errorbar(
            [s[x_key] for s in found],
            [100 * s["mean"] for s in found],
            yerr=[100 * _error(s) for s in found],
            color=color,
            marker=marker,
            capsize=3,
            label=label,
        )


def _plot_hidden(summary, config, out_dir):
    plt = pyplot()
    depths = config.depths
    fig, axes = plt.subplots(
        1, len(depths), figsize=(4.2 * len(depths), 3.6), sharey=True, squeeze=False
    )
    for axis, depth in zip(axes[0], depths):
        _errorbars(axis, summary, "hidden", "hidden", {"depth": depth}, skip_empty=True)
        axis.set_xscale("log", base=2)
        axis.set_xticks(list(config.hidden), [str(h) for h in config.hidden])
        axis.set_title(f"depth {depth}")
        axis.set_xlabel("hidden size H")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("val accuracy (%)")
    axes[0][0].legend()
    fig.suptitle(f"Accuracy vs hidden size ({config.sweep_protocol})")
    return save_figure(fig, pathlib.Path(out_dir) / "hidden_size.png", dpi=_DPI)


def _plot_single(summary, config, out_dir, experiment, x_key, file_name, xlabel):
    fig, axis = pyplot().subplots(figsize=(5, 3.6))
    _errorbars(axis, summary, experiment, x_key, {"hidden": config.base_hidden})
    axis.set_xlabel(xlabel)
    axis.set_ylabel("val accuracy (%)")
    axis.grid(alpha=0.3)
    axis.legend()
    return save_figure(fig, pathlib.Path(out_dir) / file_name, dpi=_DPI)


def plot_results(summary, config, out_dir):
    """Writes `hidden_size.png`, `steps.png` and `depth.png` for the experiments that ran.

    Returns:
        The list of the written paths.
    """
    written = []
    if "hidden" in config.experiments:
        written.append(_plot_hidden(summary, config, out_dir))
    singles = (
        ("steps", "T", "steps.png", "number of LSTM steps T"),
        ("depth", "depth", "depth.png", "depth L"),
    )
    for experiment, x_key, file_name, xlabel in singles:
        if experiment in config.experiments:
            written.append(
                _plot_single(summary, config, out_dir, experiment, x_key, file_name, xlabel)
            )
    return written


# ---------------------------------------------------------------------------- files


def write_results(out_dir, results, markdown=None):
    """Writes `results` to out_dir/results.json and, if given, `markdown` to results.md."""
    out_dir = pathlib.Path(out_dir)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if markdown is not None:
        (out_dir / "results.md").write_text(markdown + "\n", encoding="utf-8")


def read_runs(csv_path):
    """Reads a runs.csv back into row dicts with their ints and floats restored."""
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    ints = ("depth", "hidden", "T", "seed", "fold", "n_train", "n_val", "epochs")
    floats = ("train_accuracy", "val_accuracy", "train_time_s")
    for row in rows:
        row.update({k: int(row[k]) for k in ints})
        row.update({k: float(row[k]) for k in floats})
    return rows


def report_from_csv(csv_path, config, out_dir, command=None):
    """Rebuilds results.json and the plots from a (possibly partial) runs.csv.

    Useful when a long ablation was interrupted: every finished run is in the CSV.

    Returns:
        (results dict, data info dict).
    """
    rows = read_runs(csv_path)
    summary = summarise(rows)
    out_dir = pathlib.Path(out_dir)
    written = plot_results(summary, config, out_dir)
    data_info = {"num_clips": None, "runs": len(rows), "archs": sorted({r["arch"] for r in rows})}
    timings = {"total_s": round(sum(r["train_time_s"] for r in rows), 1), "runs": len(rows)}
    results = {
        "command": command,
        "config": dataclasses.asdict(config),
        "timings": timings,
        "summary": summary,
        "best": select_best(summary),
        "plots": [p.name for p in written],
        "csv": pathlib.Path(csv_path).name,
        "partial": True,
    }
    write_results(out_dir, results)
    return results, data_info
