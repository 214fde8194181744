"""The ablation runner: plans the runs, trains and evaluates each one, writes the results.

`run_ablation` plans the runs of the requested experiments (runs shared by experiments are
run once), runs them with a cost-weighted progress bar, and writes `runs.csv`,
`results.json`, `results.md` and PNG plots into the output folder. `train_final` trains
the selected head on every clip (for `reslstm_tf.experiments.publish`).

The ablation's experiments are recipes run by the experiments' one runner
(`reslstm_tf.experiments.runner`, shared with the study): every recurrent head trains through
its `HeadRunner` (one `Trainer` per model config, reset per run, nothing written to disk) and
`run_plan` runs the planned runs, appending each row to `runs.csv` as it finishes. Each row
records its validation clips and which of them it got right (`val_index`, `val_correct`), so
the report can pair two configs' out-of-fold predictions video by video (McNemar's test).
"""

import dataclasses
import pathlib
import time

import numpy as np

from reslstm_tf.data.feature_sets import FeatureInputError, load_feature_set, select_steps
from reslstm_tf.experiments.baselines import mean_pooled_accuracies
from reslstm_tf.experiments.config import AblationConfig, AblationError, RunSpec, plan_runs
from reslstm_tf.experiments.report import (
    experiment_protocol_text,
    report_data,
    results_markdown,
    run_label,
)
from reslstm_tf.experiments.report_figures import plot_results
from reslstm_tf.experiments.report_files import (
    CSV_FIELDS,
    encode_predictions,
    read_runs,
    write_results,
)
from reslstm_tf.experiments.runner import CsvLog, HeadRunner, head_trainer, run_plan
from reslstm_tf.experiments.splits import splits_for


def load_data(features_dir, flow_features_dir=None):
    """Reads the feature caches of an ablation; errors name the flag of the bad folder.

    Returns:
        A `reslstm_tf.data.feature_sets.FeatureSet` (RGB, and flow joined by video id).

    Raises:
        AblationError: a folder is missing or not a cache, or the caches disagree.
    """
    try:
        return load_feature_set(features_dir, flow_features_dir)
    except FeatureInputError as error:
        folders = (("features_dir", features_dir), ("flow_features_dir", flow_features_dir))
        named = [
            f"{flag}={path}" for flag, path in folders if path and repr(str(path)) in str(error)
        ]
        raise AblationError(f"{', '.join(named) or 'features'}: {error}") from None


def _inputs(spec, data):
    """What `spec`'s head reads of every clip: the stream(s) at its T steps."""
    if spec.modality == "two_stream":
        return {
            "rgb": select_steps(data.rgb, spec.steps),
            "flow": select_steps(data.flow, spec.steps),
        }
    source = data.flow if spec.modality == "flow" else data.rgb
    return select_steps(source, spec.steps)


def head_runner(data, config):
    """The `HeadRunner` of an ablation's recurrent runs on `data`."""
    return HeadRunner(int(data.labels.max()) + 1, config.train, config.dropout)


def train_and_evaluate(spec, data, train_idx, val_idx, heads):
    """Trains one run on `train_idx`; returns (train accuracy, val accuracy, seconds, correct).

    The validation clips are used only for the final accuracy; `correct` says per validation
    clip (in `val_idx`'s order) whether it was classified right, for McNemar's test.

    Args:
        spec: the `RunSpec`.
        data: the `FeatureSet`.
        train_idx, val_idx: index arrays of the training and the validation clips.
        heads: the `HeadRunner` re-used across runs (`head_runner`).
    """
    start = time.perf_counter()
    if spec.arch == "logreg":
        source = data.flow if spec.modality == "flow" else data.rgb
        num_classes = int(data.labels.max()) + 1
        train_acc, val_acc, predicted = mean_pooled_accuracies(
            source, data.labels, train_idx, val_idx, num_classes, return_predictions=True
        )
        correct = predicted == data.labels[val_idx]
        return train_acc, val_acc, time.perf_counter() - start, correct
    # Masking only matters for zero-padded clips; skipping it when none exist is faster.
    masking = bool(np.any(np.all(data.rgb == 0, axis=-1)))
    result = heads.run(spec, _inputs(spec, data), data.labels, train_idx, val_idx, masking=masking)
    correct = result.val_probabilities.argmax(-1) == data.labels[val_idx]
    return result.train_accuracy, result.val_accuracy, time.perf_counter() - start, correct


# ----------------------------------------------------------------------------- runs


def _unique_runs(plan, feature_dim):
    """Returns {spec: [experiments]}, cheapest configs first, one config's runs together."""
    unique = {}
    for experiment, specs in plan.items():
        for spec in specs:
            unique.setdefault(spec, []).append(experiment)
    # Runs of one config stay together (one graph trace each).
    order = sorted(unique, key=lambda s: (s.cost(feature_dim), s.config, s.seed, s.fold))
    return {spec: unique[spec] for spec in order}


def _row(spec, experiments, fold_id, val_idx, n_train, epochs, result):
    train_acc, val_acc, seconds, correct = result
    val_index, val_correct = encode_predictions(val_idx, correct)
    return {
        "experiment": ";".join(experiments),
        "arch": spec.arch,
        "depth": spec.depth,
        "hidden": spec.hidden,
        "T": spec.steps,
        "modality": spec.modality,
        "fusion": spec.fusion,
        "level": spec.level,
        "protocol": spec.protocol,
        "seed": spec.seed,
        "fold": fold_id,
        "n_train": n_train,
        "n_val": len(val_idx),
        "epochs": 0 if spec.arch == "logreg" else epochs,
        "train_accuracy": round(train_acc, 6),
        "val_accuracy": round(val_acc, 6),
        "train_time_s": round(seconds, 3),
        "val_index": val_index,
        "val_correct": val_correct,
    }


def _describe(spec, number, total):
    fusion = f"/{spec.fusion}-{spec.level}" if spec.fusion else ""
    return (
        f"run {number}/{total} {run_label(spec.arch, spec.depth)} H={spec.hidden} "
        f"T={spec.steps} {spec.modality}{fusion}"
    )


def _splits(runs, labels, config):
    """Returns {protocol: [(fold id, train indices, val indices), ...]} for the runs' protocols."""
    return {
        protocol: splits_for(
            protocol, labels, config.folds, config.holdout_fraction, config.split_seed
        )
        for protocol in {s.protocol for s in runs}
    }


def _run_all(runs, splits, data, config, csv_path, progress):
    """Trains every run through `run_plan`, each row appended to `csv_path`; returns the rows."""
    heads = head_runner(data, config)
    feature_dim = data.rgb.shape[-1]

    def execute(item):
        spec, experiments = item
        fold_id, train_idx, val_idx = splits[spec.protocol][spec.fold]
        result = train_and_evaluate(spec, data, train_idx, val_idx, heads)
        epochs = config.train.epochs
        return _row(spec, experiments, fold_id, val_idx, len(train_idx), epochs, result)

    return run_plan(
        [(spec, (spec, experiments)) for spec, experiments in runs.items()],
        execute,
        CsvLog(csv_path, CSV_FIELDS),
        progress=progress,
        cost=lambda item: item[0].cost(feature_dim),
        describe=lambda item, number, total: _describe(item[0], number, total),
    )


def _data_info(data):
    num_classes = int(data.labels.max()) + 1
    return {
        "num_clips": len(data.ids),
        "num_classes": num_classes,
        "class_names": data.class_names or [str(i) for i in range(num_classes)],
        "class_counts": np.bincount(data.labels).tolist(),
        "feature_shape": list(data.rgb.shape[1:]),
        "flow": data.flow is not None,
        "metadata": data.metadata,
    }


def run_ablation(
    features_dir, out_dir, config=None, flow_features_dir=None, progress=True, command=None
):
    """Runs the requested ablation experiments and writes their results to `out_dir`.

    Args:
        features_dir: RGB feature cache folder.
        out_dir: output folder (created): runs.csv, results.json, results.md, *.png.
        config: an `AblationConfig`; defaults to `AblationConfig()`.
        flow_features_dir: optional flow feature cache (needed by the fusion experiment).
        progress: show a tqdm progress bar (weighted by each run's estimated cost).
        command: the command line to record in results.json.

    Returns:
        The results dict also written to results.json.
    """
    config = config or AblationConfig()
    if "fusion" in config.experiments and not flow_features_dir:
        config.validate(has_flow=False)  # Fails early, before reading any features.
    data = load_data(features_dir, flow_features_dir)
    plan = plan_runs(config, has_flow=data.flow is not None)
    runs = _unique_runs(plan, data.rgb.shape[-1])
    splits = _splits(runs, data.labels, config)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "runs.csv"
    start = time.perf_counter()
    _run_all(runs, splits, data, config, csv_path, progress)
    rows = read_runs(csv_path)  # every row as the CSV holds it, per-video lists restored
    timings = {"total_s": round(time.perf_counter() - start, 1), "runs": len(rows)}
    data_info = _data_info(data)
    report = report_data(rows, config)
    results = {
        "command": command,
        "config": dataclasses.asdict(config),
        "protocols": {e: experiment_protocol_text(config, e) for e in plan},
        "experiment_protocol": {e: config.protocol_of(e) for e in plan},
        "data": data_info,
        "timings": timings,
        **report,
        "plots": [p.name for p in plot_results(rows, config, out_dir)],
        "csv": csv_path.name,
    }
    markdown = results_markdown(rows, config, data_info, timings, report["comparisons"])
    write_results(out_dir, results, markdown)
    return results


def train_final(data, arch, depth, hidden, steps, options, dropout=0.5, seed=0):
    """Trains one RGB head on every clip of `data` (no validation) and returns the model.

    The model is built with masking on (the zoo's default), so it handles zero-padded clips.

    Args:
        data: the `reslstm_tf.data.feature_sets.FeatureSet`.
        arch, depth, hidden, steps: the head ("lstm" or "res", L, H, T).
        options: the `TrainOptions`.
        dropout: dropout before the classifier.
        seed: the training seed.
    """
    spec = RunSpec(arch, depth, hidden, steps, "rgb", "", "", "all", seed, 0)
    num_classes = int(data.labels.max()) + 1
    trainer = head_trainer(spec, num_classes, data.rgb.shape[-1], options, dropout, masking=True)
    return trainer.fit(select_steps(data.rgb, steps), data.labels).model
