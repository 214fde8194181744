"""The ablation's files: runs.csv rows in and out, results.json/.md, a report rebuilt."""

import csv
import dataclasses
import json
import pathlib

from reslstm_tf.experiments.report import report_data, results_markdown
from reslstm_tf.experiments.report_figures import plot_results

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
    "val_index",
    "val_correct",
)


def write_results(out_dir, results, markdown=None):
    """Writes `results` to out_dir/results.json and, if given, `markdown` to results.md."""
    out_dir = pathlib.Path(out_dir)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if markdown is not None:
        (out_dir / "results.md").write_text(markdown + "\n", encoding="utf-8")


def encode_predictions(val_index, correct):
    """A run's per-video record for runs.csv: (val_index, val_correct) as space-separated ints."""
    return " ".join(str(int(i)) for i in val_index), " ".join(str(int(c)) for c in correct)


def read_runs(csv_path):
    """Reads a runs.csv back into row dicts with their ints, floats and per-video lists restored.

    Rows of a runs.csv written before runs recorded their per-video predictions have no
    "val_index" / "val_correct" (McNemar's test is then left out).
    """
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    ints = ("depth", "hidden", "T", "seed", "fold", "n_train", "n_val", "epochs")
    floats = ("train_accuracy", "val_accuracy", "train_time_s")
    for row in rows:
        row.update({k: int(row[k]) for k in ints})
        row.update({k: float(row[k]) for k in floats})
        for key in ("val_index", "val_correct"):
            if row.get(key):
                row[key] = [int(v) for v in row[key].split()]
            else:
                row.pop(key, None)
    return rows


def report_from_csv(csv_path, config, out_dir, command=None):
    """Rebuilds results.json, results.md and the plots from a (possibly partial) runs.csv.

    Useful when a long ablation was interrupted: every finished run is in the CSV. The
    total time is then the sum of the runs' training times.

    Returns:
        (results dict, data info dict).
    """
    rows = read_runs(csv_path)
    out_dir = pathlib.Path(out_dir)
    written = plot_results(rows, config, out_dir)
    data_info = {"num_clips": None, "runs": len(rows), "archs": sorted({r["arch"] for r in rows})}
    timings = {"total_s": round(sum(r["train_time_s"] for r in rows), 1), "runs": len(rows)}
    results = {
        "command": command,
        "config": dataclasses.asdict(config),
        "timings": timings,
        **report_data(rows, config),
        "plots": [p.name for p in written],
        "csv": pathlib.Path(csv_path).name,
        "partial": True,
    }
    markdown = results_markdown(rows, config, data_info, timings, results["comparisons"])
    write_results(out_dir, results, markdown)
    return results, data_info
