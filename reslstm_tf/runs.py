"""The layout of a run folder: one place names every file training and evaluation write.

A run folder (`reslstm-train --model_dir`) holds:

* ``train_config.json``: the model config, class names, inputs and hyper-parameters;
* ``checkpoints/``: `tf.train.CheckpointManager` checkpoints (``ckpt-<step>``);
* ``train/``: TensorBoard summaries;
* ``history.json``: one dict per finished epoch;
* ``model.keras``: the trained model (config and weights, the run's one copy of its final
  weights; `model.load_weights` reads it too), written at the end; folders written before
  it was the only copy may also hold ``final.weights.h5``, still read;
* ``workers/<task>_<id>/final.weights.h5``: non-chief weights (multi-worker, on request);
* ``eval_<split>/``: evaluation outputs (`EvalDir`): ``metrics.json``,
  ``per_class_accuracy.csv``, ``confusion_matrix.png``, ``predictions.npz`` and
  ``top5_predictions.png``;
* ``.lock``: held (`reslstm_tf.files.folder_lock`) by the training writing the folder, so
  a second training into it is refused.

`train_config.json` also records the feature spec the run trained on (`feature_spec`:
backbone, weights, modality, segments, segment length, frame size, short-video policy,
precision, d_f, per stream); evaluation, publishing and export compare the spec of their
features with it (`check_feature_spec`). `config_changes` lists the recorded settings a
new run would change (those that alter the result), which resuming refuses.

Importing this module does not import TensorFlow; the checkpoint helpers do, when called.

Example:

    run = RunDir("runs/res3")
    model = keras.saving.load_model(run.model_file)
    for split, metrics in run.metrics().items():
        print(split, metrics["top1"])
"""

import errno
import json
import os
import pathlib
import shutil
import zipfile

import numpy as np

from reslstm_tf.files import atomic_write

CONFIG_FILE = "train_config.json"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_NAME = "ckpt"
SUMMARY_DIR = "train"
HISTORY_FILE = "history.json"
FINAL_WEIGHTS = "final.weights.h5"
FINAL_MODEL = "model.keras"
LOCK_FILE = ".lock"
WORKERS_DIR = "workers"
WORKER_SCRATCH_DIR = ".worker_tmp"
EVAL_PREFIX = "eval_"

METRICS_FILE = "metrics.json"
PER_CLASS_FILE = "per_class_accuracy.csv"
CONFUSION_FILE = "confusion_matrix.png"
TOP5_FILE = "top5_predictions.png"
PREDICTIONS_FILE = "predictions.npz"

# What the feature spec of a cache records, from its index metadata (`reslstm-extract`).
FEATURE_SPEC_FIELDS = (
    "backbone",
    "weights",
    "modality",
    "num_segments",
    "segment_len",
    "frame_size",
    "short",
    "precision",
    "feature_dim",
    "flow_method",
)
# Recorded settings that do not change what a run computes: resuming may change them.
RESUMABLE_CHANGES = frozenset(
    {
        "progress", "max_steps", "log_every_steps", "checkpoint_every_steps", "max_checkpoints",
        "save_worker_weights", "jit_compile", "deterministic", "strategy", "restart",
        "recompute", "model_dir", "features_npz", "features_dir", "flow_features_dir",
        "data_dir", "split_dir", "flow_cache_dir", "eval_subset", "eval_split_file",
        "num_examples", "steps_per_epoch", "keep_checkpoints", "batch_size_used",
    }
)  # fmt: skip


class FeatureSpecError(ValueError):
    """Features made with other extraction settings than the run trained on."""


def feature_spec(metadata):
    """Returns the feature spec `{field: value}` of a cache's index metadata.

    Fields the metadata does not record are left out (so they are not compared);
    `precision` is "float32" for caches made by an extractor that did not record it.
    """
    spec = {k: metadata[k] for k in FEATURE_SPEC_FIELDS if metadata.get(k) is not None}
    if "backbone" in spec and "precision" not in spec:
        spec["precision"] = "float32"
    return spec


def check_feature_spec(expected, actual, source, fix="extract them with the training settings"):
    """Raises `FeatureSpecError` naming every field where two feature specs differ.

    Only fields both specs record are compared.

    Args:
        expected: the spec the run trained on (`RunDir.feature_spec()[stream]`).
        actual: the spec of the features given now (`feature_spec(index["metadata"])`).
        source: how the message names the features, e.g. "features_dir 'cache/test'".
        fix: what the message tells the user to do.
    """
    differ = [
        f"{field}: {expected[field]!r} (training) vs {actual[field]!r}"
        for field in FEATURE_SPEC_FIELDS
        if field in expected and field in actual and expected[field] != actual[field]
    ]
    if differ:
        raise FeatureSpecError(
            f"{source} was extracted with other settings than the run was trained on: "
            f"{'; '.join(differ)}; {fix}"
        )


def _flatten(config, prefix=""):
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and key != "feature_spec":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(old, new):
    """Returns `[(setting, old value, new value)]` a new run changes in a recorded config.

    Settings in `RESUMABLE_CHANGES` and settings only one side records are skipped;
    nested dicts are compared per key ("model.dropout").
    """
    old, new = _flatten(old), _flatten(new)
    return [
        (key, old[key], new[key])
        for key in sorted(old.keys() & new.keys())
        if key.rsplit(".", 1)[-1] not in RESUMABLE_CHANGES and old[key] != new[key]
    ]


def free_bytes(folder):
    """Returns the bytes free for writing in `folder`'s file system."""
    return shutil.disk_usage(folder).free


def check_free_space(folder, needed, what):
    """Raises `OSError(ENOSPC)` naming `what` if `folder` has less than `needed` bytes free."""
    free = free_bytes(folder)
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device: {what} need {needed / 2**20:.1f} MiB in "
            f"{os.fspath(folder)}, {free / 2**20:.1f} MiB are free",
        )


def weights_bytes(model):
    """Returns the bytes a model's weights take (what a weights file holds, about)."""
    return sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights)


def checkpoint_slots(variables):
    """Returns the `{name: variable}` map a checkpoint stores a list of variables under.

    Training saves the model's and the optimizer's variables this way, and evaluation
    restores the model's from it; the names are part of the checkpoint format.
    """
    return {f"v{i:05d}": v for i, v in enumerate(variables)}


def _temporary_sibling(path):
    """Returns `.tmp-<pid>-<name>` beside `path`, after removing those of killed runs."""
    for stale in path.parent.glob(f".tmp-*-{path.name}"):
        stale.unlink(missing_ok=True)
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


def save_model(model, path):
    """Saves a whole model (for `keras.saving.load_model`) to `path` atomically."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    model.save(tmp)
    os.replace(tmp, path)


def save_final(model, path, before_rename=None):
    """Writes a trained model to a `.keras` or `.weights.h5` file, failing cleanly on a full disk.

    The free space is checked first. Keras writes the `.keras` archive through a Python
    file (a full disk raises `OSError`, where h5py writing a file directly can crash the
    process); a `.weights.h5` file is the archive's own `model.weights.h5`, copied out of
    it: the same file `model.save_weights` writes. The file appears atomically (a temporary
    sibling, then a rename); nothing already saved is touched when a write fails.

    Args:
        model: the trained `keras.Model`.
        path: where it goes: a `.keras` model or a `.weights.h5` weights file.
        before_rename: for a `.keras` path, called when the new archive is complete,
            before it replaces `path`.

    Raises:
        OSError: not enough free space (ENOSPC), or a failed write.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = weights_bytes(model)
    check_free_space(path.parent, 2 * size + (1 << 16), f"the final model {path.name}")
    archive = _temporary_sibling(path if path.suffix == ".keras" else path.with_suffix(".keras"))
    try:
        model.save(archive)
        if path.suffix != ".keras":
            with zipfile.ZipFile(archive) as zipped, zipped.open("model.weights.h5") as source:
                with atomic_write(path) as handle:
                    shutil.copyfileobj(source, handle, 1 << 20)
            return
        if before_rename is not None:
            before_rename()
        os.replace(archive, path)
    finally:
        archive.unlink(missing_ok=True)


def save_weights(model, path):
    """Saves a model's weights to `path` atomically, failing cleanly on a full disk."""
    save_final(model, path)


def _write_json(path, value, **kwargs):
    with atomic_write(path, "w") as handle:
        json.dump(value, handle, indent=2, **kwargs)


class EvalDir:
    """The outputs of one evaluation (`reslstm_tf.evaluate.evaluate`) in one folder."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.metrics_file = self.path / METRICS_FILE
        self.per_class_file = self.path / PER_CLASS_FILE
        self.confusion_file = self.path / CONFUSION_FILE
        self.top5_file = self.path / TOP5_FILE
        self.predictions_file = self.path / PREDICTIONS_FILE

    def create(self):
        """Creates the folder (and its parents); raises OSError if it cannot."""
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def metrics(self):
        """Returns the parsed `metrics.json`."""
        return json.loads(self.metrics_file.read_text())

    def write_metrics(self, metrics):
        """Writes `metrics.json` atomically."""
        _write_json(self.metrics_file, metrics)

    def predictions(self):
        """Returns `(probabilities (N, C), labels (N,))` from `predictions.npz`."""
        with np.load(self.predictions_file, allow_pickle=False) as data:
            return data["probabilities"], data["labels"]

    def write_predictions(self, probabilities, labels, video_ids=None):
        """Writes the probabilities, labels (and video ids) to `predictions.npz` atomically."""
        arrays = dict(probabilities=probabilities, labels=labels)
        if video_ids is not None:
            arrays["videos"] = np.asarray([str(v) for v in video_ids], dtype=str)
        with atomic_write(self.predictions_file) as handle:
            np.savez(handle, **arrays)


class RunDir:
    """The folder of one training run: the path of each file, and reading/writing them.

    Args:
        path: the run folder (`--model_dir`); nothing is created until asked.
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.config_file = self.path / CONFIG_FILE
        self.checkpoint_dir = self.path / CHECKPOINT_DIR
        self.summary_dir = self.path / SUMMARY_DIR
        self.history_file = self.path / HISTORY_FILE
        self.model_file = self.path / FINAL_MODEL
        self.legacy_weights_file = self.path / FINAL_WEIGHTS  # older runs
        self.lock_file = self.path / LOCK_FILE

    def __fspath__(self):
        return os.fspath(self.path)

    def __repr__(self):
        return f"RunDir({str(self.path)!r})"

    def create(self):
        """Creates the folder and checks it is writable; raises OSError if not."""
        self.path.mkdir(parents=True, exist_ok=True)
        probe = self.path / f".write_probe_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return self

    # ------------------------------------------------------------------ config and history

    def config(self):
        """Returns the parsed `train_config.json`."""
        return json.loads(self.config_file.read_text())

    def write_config(self, config):
        """Writes `train_config.json` atomically (keys sorted)."""
        _write_json(self.config_file, config, sort_keys=True)

    def history(self):
        """Returns the per-epoch history (`history.json`), or [] before the first epoch."""
        if not self.history_file.is_file():
            return []
        return json.loads(self.history_file.read_text())

    def write_history(self, history):
        """Writes `history.json` atomically."""
        _write_json(self.history_file, history)

    def feature_spec(self):
        """Returns {stream: feature spec} the run trained on ({} if not recorded)."""
        if not self.config_file.is_file():
            return {}
        return self.config().get("feature_spec") or {}

    def size_bytes(self):
        """Returns the bytes the run folder's files take."""
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def clear(self):
        """Deletes a previous run's files (checkpoints, outputs, evaluations); returns their names.

        Files the layout does not name are left alone; the lock file stays.
        """
        names = (CONFIG_FILE, CHECKPOINT_DIR, SUMMARY_DIR, HISTORY_FILE, FINAL_WEIGHTS)
        names += (FINAL_MODEL, WORKERS_DIR, WORKER_SCRATCH_DIR)
        found = [self.path / name for name in names if (self.path / name).exists()]
        found += sorted(p for p in self.path.glob(f"{EVAL_PREFIX}*") if p.is_dir())
        for path in found:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        return [path.name for path in found]

    # --------------------------------------------------------------------------- workers

    def worker_weights_file(self, task_type, task_id):
        """Returns where a non-chief worker saves its final weights."""
        return self.path / WORKERS_DIR / f"{task_type}_{task_id}" / FINAL_WEIGHTS

    def worker_checkpoint_dir(self, task_type, task_id):
        """Returns the scratch folder a non-chief worker writes (and deletes) checkpoints in."""
        return self.path / WORKER_SCRATCH_DIR / f"{task_type}_{task_id}"

    # ------------------------------------------------------------------------ checkpoints

    def latest_checkpoint(self):
        """Returns the path prefix of the newest checkpoint, or None."""
        import tensorflow as tf

        return tf.train.latest_checkpoint(str(self.checkpoint_dir))

    def final_weights(self):
        """The file holding the run's final weights: `model.keras` (an older run's weights file)."""
        if not self.model_file.is_file() and self.legacy_weights_file.is_file():
            return self.legacy_weights_file
        return self.model_file

    def load_weights(self, model, weights=None):
        """Loads the run's trained weights into `model` (built from `config()["model"]`).

        Args:
            model: the rebuilt `keras.Model`.
            weights: optional `.weights.h5` (or `.keras`) file; default the run's
                `model.keras` (an older run's `final.weights.h5`), else the model
                variables of the latest checkpoint.

        Returns:
            The file or checkpoint loaded.

        Raises:
            FileNotFoundError: `weights` is missing, or the run has neither final
                weights nor a checkpoint.
        """
        final = pathlib.Path(weights) if weights else self.final_weights()
        if weights and not final.is_file():
            raise FileNotFoundError(f"weights file {str(final)!r} does not exist")
        if final.is_file():
            model.load_weights(final)
            return final
        latest = self.latest_checkpoint()
        if latest is None:
            raise FileNotFoundError(
                f"model_dir {str(self.path)!r} holds neither {FINAL_MODEL} nor a checkpoint"
            )
        import tensorflow as tf

        checkpoint = tf.train.Checkpoint(model_variables=checkpoint_slots(model.variables))
        checkpoint.restore(latest).expect_partial().assert_existing_objects_matched()
        return latest

    # ------------------------------------------------------------------------- evaluation

    def eval_dir(self, split):
        """Returns the `EvalDir` of an evaluation on `split` (`eval_<split>/`)."""
        return EvalDir(self.path / f"{EVAL_PREFIX}{split}")

    def eval_dirs(self):
        """Returns {split: EvalDir} of every evaluation that wrote its metrics, by split."""
        found = {}
        for folder in sorted(self.path.glob(f"{EVAL_PREFIX}*")):
            evaluation = EvalDir(folder)
            if evaluation.metrics_file.is_file():
                found[folder.name[len(EVAL_PREFIX) :]] = evaluation
        return found

    def metrics(self):
        """Returns {split: metrics dict} of every `eval_<split>/metrics.json`, by split."""
        return {split: evaluation.metrics() for split, evaluation in self.eval_dirs().items()}


def class_id_map(run_names, data_names, source="the evaluation data", error=ValueError):
    """Returns the run's class id of each class id of the data, by name; None if the same.

    A test list may hold fewer classes than the training list, so its own ids (their order
    in the list) are not the run's: labels are mapped through the class names.

    Args:
        run_names: the class names the run was trained on, in its id order.
        data_names: the class names of the data, in the data's id order.
        source: how the error names the data.
        error: the exception class to raise.

    Raises:
        error: the data has classes the run was not trained on.
    """
    if not run_names or not data_names:
        return None
    run_names, data_names = [str(n) for n in run_names], [str(n) for n in data_names]
    unknown = [name for name in data_names if name not in run_names]
    if unknown:
        raise error(
            f"{source} hold classes the run was not trained on: {unknown[:5]}"
            f"{' ...' if len(unknown) > 5 else ''} (the run's classes: {run_names[:10]}"
            f"{' ...' if len(run_names) > 10 else ''}); evaluate on the run's classes only"
        )
    mapping = np.asarray([run_names.index(name) for name in data_names], dtype="int64")
    return None if np.array_equal(mapping, np.arange(len(mapping))) else mapping
