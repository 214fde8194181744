"""One run of the study: its features (by clip spec), its training, its `runs.jsonl` row.

`StudyRuns` holds what the runs share (labels, folds, streams, the features of every clip
spec, trainers); `StudyRuns.row(run)` trains and scores one planned run and returns its row.
Every row records its clip spec's tag (`clip`), which validation videos it got right
(`val_index`, `val_correct`, for McNemar's test) and its validation probabilities
(`val_probabilities`: the ensemble of a fold's seeds is their mean); a run scored on the
test-time views also records the mean of its probabilities over them
(`tta_probabilities`) and how many views (`tta_views`).
"""

import pathlib
import time

import numpy as np

from reslstm_tf.experiments.baselines import LogisticRegression
from reslstm_tf.experiments.splits import stratified_folds
from reslstm_tf.experiments.study_streams import (
    FinetuneRunner,
    run_head,
    study_heads,
    tta_probabilities,
)

LATE_FUSIONS = ("late_product", "late_sum")


def _fuse(rgb, flow, recipe):
    """Late fusion of two streams' class probabilities (the paper's product or sum)."""
    return rgb * flow if recipe == "late_product" else rgb + flow


def logreg_probabilities(features, labels, train_idx, val_idx, tta=None):
    """Mean-pooled logistic regression: (train accuracy, val probabilities, TTA ones or None).

    `tta` is (V, N, T, D) features of the test-time views; their probabilities are averaged.
    """
    pooled = np.asarray(features).mean(axis=1)
    model = LogisticRegression().fit(pooled[train_idx], labels[train_idx], labels.max() + 1)
    train_acc = float(np.mean(model.predict(pooled[train_idx]) == labels[train_idx]))
    val_p = model.predict_proba(pooled[val_idx])
    tta_p = None
    if tta is not None:
        tta_p = np.mean([model.predict_proba(np.asarray(v[val_idx]).mean(axis=1)) for v in tta],
                        axis=0)  # fmt: skip
    return train_acc, val_p, tta_p


class StudyRuns:
    """What the runs share: labels, folds, streams, spec features, trainers, the out folder.

    Args:
        config: the `StudyConfig`.
        labels: int labels of the videos.
        streams: {stream name: `study_streams.Stream`} at the study's clip.
        spec_features: {clip tag: frozen features (1 + views, N, T, D)} of the other specs.
    """

    def __init__(self, config, labels, streams, spec_features=None):
        self.config, self.labels, self.streams = config, labels, streams
        self.spec_features = {} if spec_features is None else spec_features
        self.main_tag = config.clip_tag
        self.num_classes = int(labels.max()) + 1
        self.folds = stratified_folds(labels, config.folds, config.split_seed)
        self.heads = study_heads(config, self.num_classes)
        self.finetuners = {}
        self.out = pathlib.Path(config.out_dir)

    def split(self, fold):
        """(train indices, val indices) of a fold."""
        train = np.sort(np.concatenate([f for i, f in enumerate(self.folds) if i != fold]))
        return train, self.folds[fold]

    def finetuned_path(self, stream, fold, seed):
        """The stored features and val probabilities of a fine-tuning run."""
        return self.out / "finetuned" / f"{stream}_fold{fold}_seed{seed}.npz"

    def finetuned(self, stream, fold, seed, what):
        """An array of a finished fine-tuning run ("features", "val_probabilities", ...), or
        None if the run stored no such array (TTA views off)."""
        with np.load(self.finetuned_path(stream, fold, seed)) as data:
            return np.asarray(data[what], np.float32) if what in data else None

    def finetuner(self, stream):
        """The stream's `FinetuneRunner` (made once)."""
        if stream not in self.finetuners:
            self.finetuners[stream] = FinetuneRunner(self.streams[stream], self.num_classes)
        return self.finetuners[stream]

    def frozen(self, clip, stream):
        """(frozen features, TTA features or None) of a stream at a clip spec's tag."""
        if clip == self.main_tag:
            return self.streams[stream].frozen, self.streams[stream].frozen_tta
        return self.spec_features[clip], None

    def execute(self, recipe, clip, stream, arch, depth, fold, seed):
        """Runs one planned run: (train accuracy or None, val probabilities, TTA ones or None,
        epochs)."""
        config, labels = self.config, self.labels
        train_idx, val_idx = self.split(fold)
        if recipe == "logreg":
            features, tta = self.frozen(clip, "rgb")
            return (*logreg_probabilities(features[0], labels, train_idx, val_idx, tta), 0)
        if recipe == "finetuned":
            path = self.finetuned_path(stream, fold, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            train_acc, _ = self.finetuner(stream).run(train_idx, val_idx, seed, path)
            found = [self.finetuned(stream, fold, seed, w)
                     for w in ("val_probabilities", "tta_probabilities")]  # fmt: skip
            return train_acc, *found, config.finetune_train.epochs
        if recipe in LATE_FUSIONS:
            rgb, flow = (self.finetuned(s, fold, seed, "val_probabilities")
                         for s in stream.split("+"))  # fmt: skip
            return None, _fuse(rgb, flow, recipe), None, 0
        fusion, tta = None, None
        if recipe in ("frozen", "frozen_aug"):
            features, tta = self.frozen(clip, stream)
        elif recipe == "finetuned_features":
            features = self.finetuned(stream, fold, seed, "features")
            tta = self.finetuned(stream, fold, seed, "tta_features")
        else:  # mid_product
            parts = stream.split("+")
            features = {k: self.finetuned(s, fold, seed, "features")
                        for k, s in zip(("rgb", "flow"), parts)}  # fmt: skip
            fusion = "product"
        result = run_head(self.heads, config, arch, depth, features, labels, train_idx, val_idx,
                          seed, augmented=recipe != "frozen", fusion=fusion)  # fmt: skip
        tta_p = None if tta is None else tta_probabilities(self.heads.model, tta, val_idx)
        return result.train_accuracy, result.val_probabilities, tta_p, config.head_train.epochs

    def row(self, run):
        """Runs one planned run and times it; returns its `runs.jsonl` row (without the key)."""
        recipe, clip, stream, arch, depth, fold, seed = run
        start = time.perf_counter()
        train_acc, val_p, tta_p, epochs = self.execute(*run)
        seconds = time.perf_counter() - start
        train_idx, val_idx = self.split(fold)
        correct = np.asarray(val_p).argmax(-1) == self.labels[val_idx]
        row = {
            "recipe": recipe, "clip": clip, "stream": stream, "arch": arch, "depth": depth,
            "fold": fold, "seed": seed, "n_train": len(train_idx), "n_val": len(val_idx),
            "epochs": epochs, "train_accuracy": train_acc,
            "val_accuracy": float(np.mean(correct)), "seconds": round(seconds, 2),
            "val_index": [int(i) for i in val_idx], "val_correct": [int(c) for c in correct],
            "val_labels": [int(y) for y in self.labels[val_idx]],
            "val_probabilities": _rounded(val_p),
        }  # fmt: skip
        if tta_p is not None:
            row.update(
                tta_probabilities=_rounded(tta_p), tta_views=len(self.config.tta_view_list())
            )
        return row


def _rounded(probabilities):
    return np.round(np.asarray(probabilities, np.float64), 6).tolist()
