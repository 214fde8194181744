"""The ablation runner: plans the runs, trains and evaluates each one, writes the results.

`run_ablation` plans the runs of the requested experiments (runs shared by experiments are
run once), runs them with a cost-weighted progress bar, and writes `runs.csv`,
`results.json`, `results.md` and PNG plots into the output folder. `train_final` trains
the selected head on every clip (for `reslstm_tf.experiments.publish`).
"""

import csv
import dataclasses
import pathlib
import time

import numpy as np

from reslstm_tf.experiments.baselines import mean_pooled_accuracies
from reslstm_tf.experiments.config import AblationConfig, RunSpec, plan_runs
from reslstm_tf.experiments.features import load_feature_set, select_steps
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


class _ModelCache:
    """Compiles one model per config and re-initialises it per run (one graph trace per config).

    Re-initialising copies every variable of a freshly built model (built after
    `keras.utils.set_random_seed(seed)`, so its initial weights and dropout seed state
    depend on the seed only) and restores the optimizer variables saved right after the
    optimizer was built (step counter and moments at zero, the learning rate as set), so a
    run gives the same result as training a newly built model with that seed.
    """

    def __init__(self, num_classes, feature_dim, train_config):
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.train_config = train_config
        self.key = None
        self.model = None
        self._optimizer_start = None

    def _compile(self, model):
        import keras

        model.compile(
            optimizer=keras.optimizers.Adam(self.train_config.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=False,
        )
        model.optimizer.build(model.trainable_variables)
        self._optimizer_start = [v.numpy() for v in model.optimizer.variables]

    def model_for(self, spec, masking):
        """Returns the compiled model of `spec`'s config, initialised for `spec.seed`."""
        import keras

        key = (spec.config, masking)
        if key != self.key:
            keras.backend.clear_session(free_memory=False)
        keras.utils.set_random_seed(spec.seed)
        fresh = build_head(
            spec, self.num_classes, self.feature_dim, self.train_config.dropout, masking
        )
        if key != self.key:
            self._compile(fresh)
            self.key, self.model = key, fresh
            return fresh
        for target, source in zip(self.model.variables, fresh.variables):
            target.assign(source)
        for variable, start in zip(self.model.optimizer.variables, self._optimizer_start):
            variable.assign(start)
        return self.model


def _inputs(spec, data, indices):
    if spec.modality == "two_stream":
        return {
            "rgb": select_steps(data.rgb[indices], spec.steps),
            "flow": select_steps(data.flow[indices], spec.steps),
        }
    source = data.flow if spec.modality == "flow" else data.rgb
    return select_steps(source[indices], spec.steps)


def _accuracy(model, inputs, labels, batch_size=32):
    """Accuracy of `model` on `inputs`, padded to whole batches (one predict trace per model)."""
    count = len(labels)
    pad = -count % batch_size

    def padded(x):
        return np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad else x

    inputs = (
        {k: padded(v) for k, v in inputs.items()} if isinstance(inputs, dict) else padded(inputs)
    )
    logits = model.predict(inputs, batch_size=batch_size, verbose=0)[:count]
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def train_and_evaluate(spec, data, train_idx, val_idx, train_config, cache=None):
    """Trains one run on `train_idx` and returns (train accuracy, val accuracy, seconds).

    The validation clips are used only for the final accuracy.

    Args:
        spec: the `RunSpec`.
        data: the `FeatureSet`.
        train_idx, val_idx: index arrays of the training and the validation clips.
        train_config: the `TrainConfig`.
        cache: the `_ModelCache` re-used across runs (a new one by default).
    """
    start = time.perf_counter()
    num_classes = int(data.labels.max()) + 1
    if spec.arch == "logreg":
        source = data.flow if spec.modality == "flow" else data.rgb
        accuracies = mean_pooled_accuracies(source, data.labels, train_idx, val_idx, num_classes)
        return (*accuracies, time.perf_counter() - start)
    cache = cache or _ModelCache(num_classes, data.rgb.shape[-1], train_config)
    # Masking only matters for zero-padded clips; skipping it when none exist is faster.
    masking = bool(np.any(np.all(data.rgb == 0, axis=-1)))
    model = cache.model_for(spec, masking)
    y_train, y_val = data.labels[train_idx], data.labels[val_idx]
    x_train, x_val = _inputs(spec, data, train_idx), _inputs(spec, data, val_idx)
    model.fit(
        x_train,
        y_train,
        epochs=train_config.epochs,
        batch_size=train_config.batch_size,
        shuffle=True,
        verbose=0,
    )
    train_acc = _accuracy(model, x_train, y_train)
    val_acc = _accuracy(model, x_val, y_val)
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
    cache = _ModelCache(int(data.labels.max()) + 1, data.rgb.shape[-1], config.train)
    rows = []
    bar = _progress_bar(runs, progress)
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for number, (spec, experiments) in enumerate(runs.items(), 1):
            fold_id, train_idx, val_idx = splits[spec.protocol][spec.fold]
            bar.set_postfix_str(_describe(spec, number, len(runs)))
            result = train_and_evaluate(spec, data, train_idx, val_idx, config.train, cache)
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
    data = load_feature_set(features_dir, flow_features_dir)
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
    """
    import keras

    spec = RunSpec(arch, depth, hidden, steps, "rgb", "", "", "all", seed, 0)
    keras.utils.set_random_seed(seed)
    num_classes = int(data.labels.max()) + 1
    model = build_head(spec, num_classes, data.rgb.shape[-1], train_config.dropout, masking=True)
    model.compile(
        optimizer=keras.optimizers.Adam(train_config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    model.fit(
        select_steps(data.rgb, steps),
        data.labels,
        epochs=train_config.epochs,
        batch_size=train_config.batch_size,
        shuffle=True,
        verbose=0,
    )
    return model
