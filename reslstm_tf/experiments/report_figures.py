"""The ablation's figures: accuracy against depth, hidden size and T, LSTM beside Res-LSTM.

One PNG per swept setting, in the paper's style, each point the mean accuracy over the
experiment's runs with its 95 % confidence interval (`report.summarise`) as error bars.
"""

import pathlib

from reslstm_tf.experiments.report import (
    CONFIDENCE,
    experiment_seeds,
    experiment_summaries,
    pick_summaries,
)
from reslstm_tf.plots import pyplot, save_figure

_STYLES = {"lstm": ("tab:blue", "o", "LSTM"), "res": ("tab:red", "s", "Res-LSTM")}
_DPI = 90


def _log2_axis(axis, values):
    """A base-2 x axis labelled with `values`."""
    axis.set_xscale("log", base=2)
    axis.set_xticks(list(values), [str(v) for v in values])
    axis.minorticks_off()


def _errorbars(axis, summary, experiment, x_key, filters, log_x=False):
    """Draws one line per recurrent arch: mean accuracy in % against `x_key`, 95 % CI bars.

    The two lines are nudged apart along x (by 3 %, or 0.06 on a linear axis) so that their
    bars do not hide each other.
    """
    for shift, (arch, (color, marker, label)) in zip((-1, 1), _STYLES.items()):
        found = sorted(
            pick_summaries(summary, experiment, arch=arch, **filters), key=lambda s: s[x_key]
        )
        if not found:
            continue
        x = [s[x_key] * 1.03**shift if log_x else s[x_key] + 0.06 * shift for s in found]
        y = [100 * s["mean"] for s in found]
        errors = [[y_i - 100 * s["ci_low"] for y_i, s in zip(y, found)],
                  [100 * s["ci_high"] - y_i for y_i, s in zip(y, found)]]  # fmt: skip
        axis.errorbar(x, y, yerr=errors, color=color, marker=marker, capsize=3, label=label)


def _finish(axis, config, experiment, setting, xlabel):
    """Labels a panel: the fixed setting and how its error bars were measured as its title."""
    protocol = config.protocol_of(experiment)
    seeds = experiment_seeds(config, experiment)
    runs = f"{config.folds}-fold CV x {seeds} seed(s)" if protocol == "cv" else "hold-out"
    axis.set_title(f"{setting}\nmean ± {CONFIDENCE:.0%} CI over {runs}", fontsize=9)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("accuracy (%)")
    axis.grid(alpha=0.3)


def _plot_hidden(summary, config, out_dir):
    plt = pyplot()
    depths = config.sweep_hidden_depths
    fig, axes = plt.subplots(
        1, len(depths), figsize=(4.2 * len(depths), 3.6), sharey=True, squeeze=False
    )
    for axis, depth in zip(axes[0], depths):
        filters = {"depth": depth, "T": config.base_steps}
        _errorbars(axis, summary, "hidden", "hidden", filters, log_x=True)
        _log2_axis(axis, config.hidden)
        layers = f"{depth} layer{'s' if depth > 1 else ''}, T = {config.base_steps}"
        _finish(axis, config, "hidden", layers, "hidden size")
    next((a for a in axes[0] if a.lines), axes[0][0]).legend()
    return save_figure(fig, pathlib.Path(out_dir) / "hidden_size.png", dpi=_DPI)


def _plot_steps(summary, config, out_dir):
    fig, axis = pyplot().subplots(figsize=(5, 3.6))
    powers = all(t > 0 and t & (t - 1) == 0 for t in config.steps)
    filters = {"depth": config.base_depth, "hidden": config.base_hidden}
    _errorbars(axis, summary, "steps", "T", filters, log_x=powers)
    if powers:
        _log2_axis(axis, config.steps)
    setting = f"{config.base_depth} layers, hidden size {config.base_hidden}"
    _finish(axis, config, "steps", setting, "T (LSTM steps)")
    axis.legend()
    return save_figure(fig, pathlib.Path(out_dir) / "steps.png", dpi=_DPI)


def _plot_depth(summaries, config, out_dir):
    fig, axis = pyplot().subplots(figsize=(5, 3.6))
    filters = {"hidden": config.base_hidden, "T": config.base_steps}
    _errorbars(axis, summaries["depth"], "depth", "depth", filters)
    logreg = pick_summaries(summaries.get("baselines", []), "baselines", arch="logreg")
    if logreg:
        axis.axhline(100 * logreg[0]["mean"], color="gray", linestyle="--", linewidth=1,
                     label="logreg (mean-pooled)")  # fmt: skip
    axis.set_xticks(list(config.depths))
    setting = f"hidden size {config.base_hidden}, T = {config.base_steps}"
    _finish(axis, config, "depth", setting, "number of layers")
    axis.legend(fontsize=8)
    return save_figure(fig, pathlib.Path(out_dir) / "depth.png", dpi=_DPI)


def plot_results(rows, config, out_dir):
    """Writes `hidden_size.png`, `steps.png` and `depth.png` for the experiments that ran.

    Each plots accuracy against the swept value, LSTM and Res-LSTM as two lines with the
    95 % CI of the mean over the experiment's runs as error bars.

    Returns:
        The list of the written paths.
    """
    summaries = experiment_summaries(rows, config.experiments)
    written = []
    if "hidden" in config.experiments:
        written.append(_plot_hidden(summaries["hidden"], config, out_dir))
    if "steps" in config.experiments:
        written.append(_plot_steps(summaries["steps"], config, out_dir))
    if "depth" in config.experiments:
        written.append(_plot_depth(summaries, config, out_dir))
    return written
