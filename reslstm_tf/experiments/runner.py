"""The one experiment runner: heads trained on stored features, and the loop over planned runs.

Both experiment tools run through this module: `reslstm-ablate` (`experiments.ablation`: depth,
hidden size, T steps, baselines and fusion on a feature cache) and `reslstm-study`
(`experiments.study`: every recipe on one video folder).

* `HeadRunner` trains a recurrent head (`reslstm_tf.models.build_model`, the public builder)
  on features through `reslstm_tf.training.Trainer`, with one `TrainOptions`. It keeps one
  `Trainer` per head config and resets it per run (`Trainer.reset(seed)` gives the weights of
  a new model with that seed and a new optimizer state), so the training step is traced once
  per config, not once per run. The feature size is the features': whatever the backbone
  that made them gives. A run may train on stored training-mode views: video n then reads
  view `view_schedule(N, V, epoch, seed)[n]` in epoch `epoch`, the one schedule of
  `reslstm-train` and trunk caching.
* `run_plan` runs every planned run not yet in a run log (`RunLog`: JSON lines, resumable;
  `CsvLog`: a CSV written afresh), with a progress bar, appending each row as it finishes.
"""

import csv
import dataclasses
import json
import pathlib

import numpy as np

from reslstm_tf.data.feature_arrays import view_schedule
from reslstm_tf.evaluate import softmax


def build_head(spec, num_classes, feature_dim, dropout, masking, flow_dim=None):
    """Builds the uncompiled Keras head of a recurrent run (`reslstm_tf.models.build_model`).

    Args:
        spec: a `RunSpec` with arch "lstm" or "res".
        num_classes: number of classes C.
        feature_dim: d_f of the (RGB) features, as the backbone gives them.
        dropout: dropout before the classifier.
        masking: mask all-zero (padding) time steps.
        flow_dim: d_f of the flow features of a two-stream run (default `feature_dim`).
    """
    from reslstm_tf.models import build_model

    return build_model(
        num_classes,
        modality=spec.modality,
        preset=f"{'res' if spec.arch == 'res' else 'lstm'}{min(max(spec.depth, 2), 4)}",
        fusion=spec.fusion or "product",
        level=spec.level or "late",
        feature_dim=feature_dim,
        flow_dim=flow_dim or feature_dim,
        masking=masking,
        units=spec.hidden,
        num_layers=spec.depth,
        residual=spec.arch == "res",
        num_steps=spec.steps,
        dropout=dropout,
    )


def head_trainer(spec, num_classes, dims, options, dropout, masking):
    """A `Trainer` of `spec`'s head (seed `spec.seed`) that writes nothing.

    Args:
        dims: the features' d_f, or {"rgb": d_f, "flow": d_f} for two streams.
        options: the `TrainOptions` (its seed is replaced by the spec's).
    """
    from reslstm_tf.training import Trainer

    rgb_dim, flow_dim = (dims["rgb"], dims["flow"]) if isinstance(dims, dict) else (dims, None)
    return Trainer(
        lambda: build_head(spec, num_classes, rgb_dim, dropout, masking, flow_dim),
        num_classes=num_classes,
        model_dir=None,
        options=dataclasses.replace(options, seed=spec.seed, progress=False),
    )


def feature_dims(features):
    """The d_f of features (..., d_f), or {stream: d_f} of a dict of them."""
    if isinstance(features, dict):
        return {k: int(v.shape[-1]) for k, v in features.items()}
    return int(features.shape[-1])


def _rows(features, rows):
    if isinstance(features, dict):
        return {k: np.asarray(v[rows], np.float32) for k, v in features.items()}
    return np.asarray(features[rows], np.float32)


def view_dataset_fn(views, labels, rows, seed):
    """`dataset_fn(epoch)` for `Trainer.fit`: each training video one stored view per epoch.

    Video n (an index into all the videos, so a video reads the same view in every fold)
    reads view `view_schedule(N, V, epoch, seed)[n]`.

    Args:
        views: float (V, N, T, d_f) training views, or a dict {"rgb", "flow"} of such (both
            streams read the same view index).
        labels: int labels (N,) of all the videos.
        rows: the indices of the training videos.
        seed: the run's seed.
    """
    import tensorflow as tf

    first = next(iter(views.values())) if isinstance(views, dict) else views
    num_views, num_videos = first.shape[:2]
    rows = np.asarray(rows)

    def dataset_fn(epoch):
        chosen = view_schedule(num_videos, num_views, epoch, seed)[rows]
        if isinstance(views, dict):
            x = {k: np.asarray(v[chosen, rows], np.float32) for k, v in views.items()}
        else:
            x = np.asarray(views[chosen, rows], np.float32)
        return tf.data.Dataset.from_tensor_slices((x, np.asarray(labels[rows], np.int64)))

    return dataset_fn


@dataclasses.dataclass
class HeadResult:
    """What `HeadRunner.run` returns: accuracies and the validation clips' probabilities."""

    train_accuracy: float
    val_accuracy: float
    val_probabilities: np.ndarray


class HeadRunner:
    """Trains recurrent heads on features: one `Trainer` per head config, reset per run.

    Args:
        num_classes: number of classes C.
        options: the `TrainOptions` of every head (the seed is each run's).
        dropout: dropout before the classifier.
    """

    def __init__(self, num_classes, options, dropout=0.5):
        self.num_classes = num_classes
        self.options = options
        self.dropout = dropout
        self.key = None
        self.trainer = None

    def trainer_for(self, spec, dims, masking=False):
        """Returns the `Trainer` of `spec`'s config (and feature size), reset for `spec.seed`."""
        import keras

        key = (spec.config, json.dumps(dims), masking)
        if key == self.key:
            self.trainer.reset(spec.seed)
            return self.trainer
        keras.backend.clear_session(free_memory=False)
        self.key = key
        self.trainer = head_trainer(
            spec, self.num_classes, dims, self.options, self.dropout, masking
        )
        return self.trainer

    @property
    def model(self):
        """The head the last run trained."""
        return self.trainer.model

    def run(self, spec, features, labels, train_idx, val_idx, views=None, masking=False):
        """Trains `spec`'s head on `train_idx` and scores it; returns a `HeadResult`.

        The validation clips are used only for the final score.

        Args:
            spec: the `RunSpec` (its seed seeds the run).
            features: float (N, T, d_f) features the head is scored on (a dict {"rgb",
                "flow"} of such for two streams), for every video.
            labels: int labels (N,).
            train_idx, val_idx: indices of the training and the validation videos.
            views: optional training views (V, N, T, d_f) (or a dict): epoch e then trains
                on the views of `view_dataset_fn`; None trains on `features` every epoch.
            masking: mask all-zero (padding) time steps.
        """
        labels = np.asarray(labels)
        trainer = self.trainer_for(spec, feature_dims(features), masking)
        x_train, y_train = _rows(features, train_idx), labels[train_idx]
        if views is None:
            trainer.fit(x_train, y_train)
        else:
            trainer.fit(view_dataset_fn(views, labels, train_idx, spec.seed), labels=y_train)
        train_acc = trainer.evaluate(x_train, y_train)
        probabilities = softmax(trainer.predict(_rows(features, val_idx)))
        val_acc = float(np.mean(probabilities.argmax(-1) == labels[val_idx]))
        return HeadResult(train_acc, val_acc, probabilities)


# -------------------------------------------------------------------------- run logs


class RunLog:
    """A JSON-lines run log: one line per finished run, appended and flushed; read on resume."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.rows = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.rows[row["key"]] = row

    def done(self, key):
        """Whether the run `key` has a result."""
        return key in self.rows

    def add(self, key, row):
        """Appends a finished run's row (stored with its key)."""
        row = {"key": key, **row}
        self.rows[key] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()


class CsvLog:
    """A CSV run log written afresh: the header, then one flushed row per finished run."""

    def __init__(self, path, fields):
        self.path, self.fields = pathlib.Path(path), tuple(fields)
        self.rows = {}
        with open(self.path, "w", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, fieldnames=self.fields).writeheader()

    def done(self, key):
        """Whether the run `key` has a result in this log."""
        return key in self.rows

    def add(self, key, row):
        """Appends a finished run's row."""
        self.rows[key] = row
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, fieldnames=self.fields).writerow(row)
            handle.flush()


def run_plan(runs, execute, log, progress=True, desc=None, cost=None, describe=None):
    """Runs every planned run that `log` lacks, in order; adds each row to `log` as it ends.

    Args:
        runs: [(key, run)] in execution order (keys unique).
        execute: `run -> row dict`, trains and scores one run.
        log: a `RunLog` or `CsvLog`.
        progress: show a progress bar.
        desc: the bar's label.
        cost: optional `run -> relative cost`, to weight the bar (default 1 per run).
        describe: optional `(run, number, total) -> str`, the bar's postfix (default the key).

    Returns:
        The rows added, in order.
    """
    from tqdm.auto import tqdm

    weight = cost or (lambda run: 1)
    todo = [(key, run) for key, run in runs if not log.done(key)]
    total = round(sum(weight(run) for _, run in runs), 2)
    done = round(total - sum(weight(run) for _, run in todo), 2)
    fmt = "{l_bar}{bar}| {percentage:3.0f}% [{elapsed}<{remaining}] {postfix}" if cost else None
    added = []
    with tqdm(total=total, initial=done, desc=desc, unit="cost" if cost else "run",
              disable=not progress, bar_format=fmt) as bar:  # fmt: skip
        for number, (key, run) in enumerate(todo, 1):
            bar.set_postfix_str(describe(run, number, len(todo)) if describe else key)
            row = execute(run)
            log.add(key, row)
            added.append(row)
            bar.update(round(weight(run), 2))
    return added
