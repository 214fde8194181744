"""The ablation runner: plans the runs, trains and evaluates each one, writes the results.

`run_ablation` plans the runs of the requested experiments (runs shared by experiments are
run once), runs them with a cost-weighted progress bar, and writes `runs.csv`,
`results.json`, `results.md` and PNG plots into the output folder. `train_final` trains
the selected head on every clip (for `reslstm_tf.experiments.publish`).

Every recurrent head trains through `reslstm_tf.training.Trainer` with nothing written to
disk; `HeadTrainers` keeps one `Trainer` per model config and resets it per seed, so the
training step is traced once per config, not once per run.
"""

import csv
import dataclasses
import pathlib
import time

import numpy as np

from reslstm_tf.data.feature_sets import FeatureInputError, load_feature_set, select_steps
from reslstm_tf.experiments.baselines import mean_pooled_accuracies
from reslstm_tf.experiments.config import AblationConfig, AblationError, RunSpec, plan_runs
from reslstm_tf.experiments.report import (
    CSV_FIELDS,
    plot_results,
    protocol_text,
    results_markdown,
    run_label,
    select_best,
    summarise,
    write_results,
)
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


def build_head(spec, num_classes, feature_dim, dropout, masking):
    """Builds the uncompiled Keras head of a recurrent run (`reslstm_tf.models.build_model`).

    Args:
        spec: a `RunSpec` with arch "lstm" or "res".
        num_classes: number of classes C.
        feature_dim: d_f of the features (of both streams for a two-stream run).
        dropout: dropout before the classifier.
        masking: mask all-zero (padding) time steps.
    """
    from reslstm_tf.models import build_model

    return build_model(
        num_classes,
        modality=spec.modality,
        preset=f"{'res' if spec.arch == 'res' else 'lstm'}{min(max(spec.depth, 2), 4)}",
        fusion=spec.fusion,
        level=spec.level,
        feature_dim=feature_dim,
        flow_dim=feature_dim,
        masking=masking,
        units=spec.hidden,
        num_layers=spec.depth,
        residual=spec.arch == "res",
        num_steps=spec.steps,
        dropout=dropout,
    )


def _trainer(spec, num_classes, feature_dim, train_config, masking):
    """Returns a `Trainer` of `spec`'s head (seed `spec.seed`) that writes nothing."""
    from reslstm_tf.training import Trainer

    dropout = train_config.dropout
    return Trainer(
        lambda: build_head(spec, num_classes, feature_dim, dropout, masking),
        num_classes=num_classes,
        model_dir=None,
        epochs=train_config.epochs,
        batch_size=train_config.batch_size,
        learning_rate=train_config.learning_rate,
        seed=spec.seed,
        progress=False,
    )


class HeadTrainers:
    """One `Trainer` per model config, reset per run: one traced training step per config.

    `Trainer.reset(seed)` gives the weights of a newly built model with that seed and the
    optimizer state of a new optimizer, so a run trains exactly as with a new `Trainer`.

    Args:
        num_classes: number of classes C.
        feature_dim: d_f of the features.
        train_config: the `TrainConfig`.
    """

    def __init__(self, num_classes, feature_dim, train_config):
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.train_config = train_config
        self.key = None
        self.trainer = None

    def trainer_for(self, spec, masking):
        """Returns the `Trainer` of `spec`'s config, reset for `spec.seed`."""
        import keras

        key = (spec.config, masking)
        if key == self.key:
            self.trainer.reset(spec.seed)
            return self.trainer
        keras.backend.clear_session(free_memory=False)
        self.key = key
        self.trainer = _trainer(
            spec, self.num_classes, self.feature_dim, self.train_config, masking
        )
        return self.trainer


def _inputs(spec, data, indices):
    if spec.modality == "two_stream":
        return {
            "rgb": select_steps(data.rgb[indices], spec.steps),
            "flow": select_steps(data.flow[indices], spec.steps),
        }
    source = data.flow if spec.modality == "flow" else data.rgb
    return select_steps(source[indices], spec.steps)


def train_and_evaluate(spec, data, train_idx, val_idx, train_config, trainers=None):
    """Trains one run on `train_idx` and returns (train accuracy, val accuracy, seconds).

    The validation clips are used only for the final accuracy.

    Args:
        spec: the `RunSpec`.
        data: the `FeatureSet`.
        train_idx, val_idx: index arrays of the training and the validation clips.
        train_config: the `TrainConfig`.
        trainers: the `HeadTrainers` re-used across runs (new ones by default).
    """
    start = time.perf_counter()
    num_classes = int(data.labels.max()) + 1
    if spec.arch == "logreg":
        source = data.flow if spec.modality == "flow" else data.rgb
        accuracies = mean_pooled_accuracies(source, data.labels, train_idx, val_idx, num_classes)
        return (*accuracies, time.perf_counter() - start)
    trainers = trainers or HeadTrainers(num_classes, data.rgb.shape[-1], train_config)
    # Masking only matters for zero-padded clips; skipping it when none exist is faster.
    masking = bool(np.any(np.all(data.rgb == 0, axis=-1)))
    trainer = trainers.trainer_for(spec, masking)
    y_train, y_val = data.labels[train_idx], data.labels[val_idx]
    x_train, x_val = _inputs(spec, data, train_idx), _inputs(spec, data, val_idx)
    trainer.fit(x_train, y_train)
    train_acc = trainer.evaluate(x_train, y_train)
    val_acc = trainer.evaluate(x_val, y_val)
    return train_acc, val_acc, time.perf_counter() - start


# ----------------------------------------------------------------------------- runs


def _unique_runs(plan):
    """Returns {spec: [experiments]}, cheapest configs first, one config's runs together."""
    unique = {}
    for experiment, specs in plan.items():
        for spec in specs:
            unique.setdefault(spec, []).append(experiment)
    # Runs of one config stay together (one graph trace each).
    order = sorted(unique, key=lambda s: (s.cost(), s.config, s.seed, s.fold))
    return {spec: unique[spec] for spec in order}


def _row(spec, experiments, fold_id, n_train, n_val, epochs, result):
    train_acc, val_acc, seconds = result
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
        "n_val": n_val,
        "epochs": 0 if spec.arch == "logreg" else epochs,
        "train_accuracy": round(train_acc, 6),
        "val_accuracy": round(val_acc, 6),
        "train_time_s": round(seconds, 3),
    }


def _progress_bar(runs, progress):
    from tqdm.auto import tqdm

    return tqdm(
        total=round(sum(s.cost() for s in runs), 2),
        disable=not progress,
        unit="cost",
        bar_format="{l_bar}{bar}| {percentage:3.0f}% [{elapsed}<{remaining}] {postfix}",
    )


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
    """Trains every run, appending each row to `csv_path` as it finishes; returns the rows."""
    trainers = HeadTrainers(int(data.labels.max()) + 1, data.rgb.shape[-1], config.train)
    rows = []
    bar = _progress_bar(runs, progress)
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for number, (spec, experiments) in enumerate(runs.items(), 1):
            fold_id, train_idx, val_idx = splits[spec.protocol][spec.fold]
            bar.set_postfix_str(_describe(spec, number, len(runs)))
            result = train_and_evaluate(spec, data, train_idx, val_idx, config.train, trainers)
            row = _row(
                spec,
                experiments,
                fold_id,
                len(train_idx),
                len(val_idx),
                config.train.epochs,
                result,
            )
            writer.writerow(row)
            handle.flush()
            rows.append(row)
            bar.update(round(spec.cost(), 2))
    bar.close()
    return rows


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
    runs = _unique_runs(plan)
    splits = _splits(runs, data.labels, config)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "runs.csv"
    start = time.perf_counter()
    rows = _run_all(runs, splits, data, config, csv_path, progress)
    timings = {"total_s": round(time.perf_counter() - start, 1), "runs": len(rows)}
    summary = summarise(rows)
    data_info = _data_info(data)
    results = {
        "command": command,
        "config": dataclasses.asdict(config),
        "protocols": {p: protocol_text(config, p) for p in ("cv", config.sweep_protocol)},
        "experiment_protocol": {e: config.protocol_of(e) for e in plan},
        "data": data_info,
        "timings": timings,
        "summary": summary,
        "best": select_best(summary),
        "plots": [p.name for p in plot_results(summary, config, out_dir)],
        "csv": csv_path.name,
    }
    write_results(out_dir, results, results_markdown(summary, config, data_info, timings))
    return results


def train_final(data, arch, depth, hidden, steps, train_config, seed=0):
    """Trains one RGB head on every clip of `data` (no validation) and returns the model.

    The model is built with masking on (the zoo's default), so it handles zero-padded clips.

    Args:
        data: the `reslstm_tf.data.feature_sets.FeatureSet`.
        arch, depth, hidden, steps: the head ("lstm" or "res", L, H, T).
        train_config: the `TrainConfig`.
        seed: the training seed.
    """
    spec = RunSpec(arch, depth, hidden, steps, "rgb", "", "", "all", seed, 0)
    num_classes = int(data.labels.max()) + 1
    trainer = _trainer(spec, num_classes, data.rgb.shape[-1], train_config, masking=True)
    return trainer.fit(select_steps(data.rgb, steps), data.labels).model
