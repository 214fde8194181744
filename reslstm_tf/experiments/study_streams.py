"""The study's streams and trainers: stored views, frozen and TTA features, heads, fine-tuning.

A `Stream` holds one stream's clips at the study's clip spec: its trunk views (the centred
view and the training views, `reslstm_tf.training.trunk_cache`), the frozen features of every
view, and for RGB the trunk outputs and frozen features of the test-time views
(`study_clips.tta_views`; view 0 is the centred clip). `FinetuneRunner` fine-tunes a stream
per fold and seed and keeps the fine-tuned features of every view (TTA views too).
`run_head` trains one head of the study (`runner.HeadRunner`) and `head_probabilities`
scores a trained head on the validation clips of every TTA view.
"""

import dataclasses
import pathlib

import numpy as np

from reslstm_tf.evaluate import softmax
from reslstm_tf.experiments.config import RunSpec
from reslstm_tf.experiments.runner import HeadRunner
from reslstm_tf.files import atomic_write


def segment_features(encoder, array, batch_size=16):
    """Runs a `SegmentEncoder` over (N, T, ...) trunk outputs; returns float32 (N, T, D)."""
    out = [
        np.asarray(encoder(np.asarray(array[i : i + batch_size]), training=False), np.float32)
        for i in range(0, len(array), batch_size)
    ]
    return np.concatenate(out)


def view_features(upper, views, batch_size=16):
    """Features of every stored view through an upper model: float32 (V + 1, N, T, D).

    Row 0 is the centred eval view, rows 1..V the training views; D is what the upper
    model's backbone gives. `views` is a `TrunkViews` or a list of trunk-output arrays.
    """
    encoder = upper.get_layer("segment_encoder")
    if isinstance(views, (list, tuple)):
        arrays = list(views)
    else:
        arrays = [views.array("eval"), *(views.array(v) for v in range(views.views))]
    return np.stack([segment_features(encoder, a, batch_size) for a in arrays])


def cached_array(path, compute):
    """Loads `path` if it exists, else computes, stores atomically and returns the array."""
    path = pathlib.Path(path)
    if path.exists():
        return np.load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = compute()
    with atomic_write(path) as handle:
        np.save(handle, array)
    return array


class Stream:
    """One stream's clips, stored trunk views, frozen and TTA features (computed once).

    The trunk and the upper model come from fine-tuning's public functions: the run's
    classifier (`build_classifier`, with the Trainer's seed) split at `trainable_from`.
    `tta_trunk` is [the eval view's trunk outputs, those of TTA views 1..] (RGB with TTA
    views, else []) and `frozen_tta` their frozen features (V_tta, N, T, D) or None.
    """

    def __init__(self, config, stream, videos, num_classes):
        import keras

        from reslstm_tf.training import finetune as ft

        self.name, self.config = stream, config
        self.finetune = config.finetune_config(stream)
        shown = dataclasses.replace(self.finetune.train, progress=config.progress)
        self.clips = ft.prepare_clips(dataclasses.replace(self.finetune, train=shown), videos)
        keras.utils.set_random_seed(self.finetune.train.seed)
        trunk, upper = ft.trunk_split(
            ft.build_classifier(self.finetune, num_classes), config.trainable_from
        )
        self.views = ft.stored_trunk_views(self.finetune, self.clips, trunk, config.progress)
        features = pathlib.Path(config.out_dir) / "features"
        self.frozen = cached_array(
            features / f"{stream}_frozen.npy", lambda: view_features(upper, self.views)
        )
        self.tta_trunk, self.frozen_tta = [], None
        if stream == "rgb" and config.tta_offsets:
            self.tta_trunk = self._tta_trunk(trunk, videos)
            self.frozen_tta = cached_array(
                features / f"{stream}_frozen_tta.npy", lambda: view_features(upper, self.tta_trunk)
            )

    def _tta_trunk(self, trunk, videos):
        """The stored trunk outputs of the TTA views (view 0: the eval view's own)."""
        from reslstm_tf.experiments.study_clips import tta_trunk_outputs

        config = self.config
        folder = pathlib.Path(self.finetune.trunk_cache_dir)
        arrays = [self.views.array("eval")]
        for number, view in enumerate(config.tta_view_list()[1:], 1):
            path = folder / f"tta{number}.npy"
            if not path.exists():
                array = tta_trunk_outputs(trunk, self.finetune.clip, videos, config.data_dir, view)
                with atomic_write(path) as handle:
                    np.save(handle, array)
            arrays.append(np.load(path, mmap_mode="r"))
        return arrays


def study_heads(config, num_classes):
    """The study's `HeadRunner` (the experiments' one runner) with its head options."""
    return HeadRunner(num_classes, config.head_train, config.dropout)


def run_head(heads, config, arch, depth, features, labels, train_idx, val_idx, seed,
             augmented, fusion=None):  # fmt: skip
    """Trains one head of the study on stored view features; returns the `HeadResult`.

    Args:
        heads: the `HeadRunner` (`study_heads`).
        features: float (V + 1, N, T, D) (row 0 the centred view, rows 1..V the training
            views), or {"rgb": ..., "flow": ...} of such for a two-stream head. T, the
            head's steps, is the features' (the clip spec's segments).
        augmented: train on the training views (video n reads `view_schedule`'s view);
            False trains on the centred view every epoch.
        fusion: the two-stream mid fusion ("product"), or None for one stream.
    """
    two = isinstance(features, dict)
    steps = int(next(iter(features.values())).shape[2] if two else features.shape[2])
    spec = RunSpec(arch, depth, config.units, steps, "two_stream" if two else "rgb",
                   fusion or "", "mid" if fusion else "", "cv", seed, 0)  # fmt: skip
    if two:
        centred = {k: v[0] for k, v in features.items()}
        views = {k: v[1:] for k, v in features.items()}
    else:
        centred, views = features[0], features[1:]
    return heads.run(spec, centred, labels, train_idx, val_idx, views if augmented else None)


def probabilities(model, array, rows, batch_size=16):
    """Softmax of a model over the given rows of an array (a stored view or its features)."""
    logits = [
        np.asarray(model(np.asarray(array[rows[i : i + batch_size]]), training=False))
        for i in range(0, len(rows), batch_size)
    ]
    return softmax(np.concatenate(logits))


def tta_probabilities(model, views, rows):
    """The mean of a model's softmax over every TTA view's features of the given rows."""
    return np.mean([probabilities(model, view, rows) for view in views], axis=0)


class FinetuneRunner:
    """Fine-tunes one stream per fold and seed on its stored views (one `Trainer`, reset)."""

    def __init__(self, stream, num_classes):
        from reslstm_tf.training import finetune as ft
        from reslstm_tf.training.trainer import Trainer

        self.stream, self.num_classes = stream, num_classes
        config = stream.finetune
        self.trainer = Trainer(
            ft.model_fn(config, num_classes),
            num_classes=num_classes,
            model_dir=None,
            options=config.train_options(),
        )

    def train(self, train_idx, seed):
        """Fine-tunes on the videos `train_idx` with `seed`; returns the upper model."""
        from reslstm_tf.training.trunk_cache import TrunkSource

        self.trainer.reset(seed)
        stream = self.stream
        source = TrunkSource(stream.clips, stream.views, indices=train_idx, seed=seed)
        return self.trainer.fit(source.train_data, labels=source.labels).model

    def run(self, train_idx, val_idx, seed, out_path):
        """Trains on `train_idx`; stores features and val probabilities; returns accuracies.

        The stored file holds the fine-tuned features of every view, the validation
        probabilities and, with TTA views, the TTA views' features and the mean of the
        validation probabilities over them.
        """
        stream = self.stream
        upper = self.train(train_idx, seed)
        labels = np.asarray(stream.clips.labels)
        features = view_features(upper, stream.views)
        # The head on the centred view's features: the upper model's logits, without running
        # the fine-tuned blocks over that view a second time.
        head = upper.get_layer("head")
        train_p = probabilities(head, features[0], train_idx)
        val_p = probabilities(head, features[0], val_idx)
        stored = {"features": features.astype(np.float16), "val_probabilities": val_p}
        if stream.tta_trunk:
            tta = view_features(upper, stream.tta_trunk[1:])
            tta = np.concatenate([features[:1], tta])
            stored.update(tta_features=tta.astype(np.float16),
                          tta_probabilities=tta_probabilities(head, tta, val_idx))  # fmt: skip
        with atomic_write(out_path) as handle:
            np.savez(handle, **stored)
        train_acc = float(np.mean(train_p.argmax(-1) == labels[train_idx]))
        return train_acc, float(np.mean(val_p.argmax(-1) == labels[val_idx]))
