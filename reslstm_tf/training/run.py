"""Training runs: from features on disk (`RunConfig`, `run_training`), or `train` in one call.

A training cache extracted with views (`reslstm-extract --views=V`) is read into memory and
each epoch feeds every video one of its V training-mode views
(`reslstm_tf.data.feature_sets.view_dataset_fn`: video n reads view ``(o_n + epoch) mod V``
with ``o_n`` drawn from (seed, n)); ``train_views="off"`` trains on the centred view as a
cache without views does. Evaluation always reads the centred view.
"""

import dataclasses
import os

from reslstm_tf import configs, models, runs
from reslstm_tf.checks import check_choice, check_positive_int
from reslstm_tf.data import feature_sets
from reslstm_tf.training import setup
from reslstm_tf.training.errors import TrainingInputError, collapse_warning
from reslstm_tf.training.inputs import check_shapes
from reslstm_tf.training.options import TrainOptions
from reslstm_tf.training.run_folder import check_model_dir
from reslstm_tf.training.trainer import Trainer

_OPTION_NAMES = tuple(f.name for f in dataclasses.fields(TrainOptions))
TRAIN_VIEWS = ("auto", "off")
_RECORDED = (int, float, str, bool)
# How train_config.json holds a run's settings: "model" holds the architecture's, and these
# keys are what the run found or computed, not settings.
RECORD_SECTIONS = ("model",)
RECORD_ONLY = (
    "class_names", "feature_spec", "training_views", "view_seed", "num_examples",
    "steps_per_epoch", "batch_size_used",
)  # fmt: skip


@dataclasses.dataclass
class RunConfig:
    """One `reslstm-train` run: where the features are, the model, and how to train it.

    Attributes:
        model_dir: output folder: checkpoints, summaries, final weights
            (see `reslstm_tf.runs.RunDir`).
        features_npz: alternative input: a .npz with 'features' (N, T, d_f) (or 'rgb' and
            'flow'), 'labels' (N,) and optionally 'class_names'.
        features_dir: feature cache folder (sharded TFRecords).
        flow_features_dir: two_stream: folder of the flow caches (default: inside
            features_dir).
        split: split of the feature cache to train on.
        num_classes: classes C; default: the class names of the input.
        modality: stream(s) to train on: rgb, flow or two_stream.
        preset: architecture preset (res2-4, lstm2-4).
        fusion: two-stream fusion: sum, product, weighted or concat.
        level: two-stream fusion level: mid or late.
        feature_dim: d_f of the (rgb) features.
        flow_dim: d_f of the flow stream (two_stream; default feature_dim).
        units: override the preset's LSTM width.
        num_steps: override the preset's T (segments).
        dropout: override the preset's dropout rate, in [0, 1).
        masking: mask all-zero (padding) time steps.
        strategy: distribution strategy: default, mirrored or multi_worker.
        train_views: auto: when the training cache holds augmented views (reslstm-extract
            --views), each epoch feeds every video one of them; off: the centred view only.
        options: the loop's `TrainOptions` (epochs, batch_size, optimizer, ...).
    """

    model_dir: str
    features_npz: str | None = None
    features_dir: str | None = None
    flow_features_dir: str | None = None
    split: str = "train"
    num_classes: int | None = None
    modality: str = "rgb"
    preset: str = "res3"
    fusion: str = "product"
    level: str = "late"
    feature_dim: int = 1024
    flow_dim: int | None = None
    units: int | None = None
    num_steps: int | None = None
    dropout: float | None = None
    masking: bool = True
    strategy: str = "default"
    train_views: str = "auto"
    options: TrainOptions = dataclasses.field(default_factory=TrainOptions)

    @classmethod
    def from_kwargs(cls, **kwargs):
        """Returns the config of flat keyword arguments (run fields and option fields mixed)."""
        options = {k: kwargs.pop(k) for k in _OPTION_NAMES if k in kwargs}
        return cls(**kwargs, options=TrainOptions(**options))

    @classmethod
    def settings(cls, **kwargs):
        """The run's flat settings (`reslstm_tf.configs.settings`): its fields and options'."""
        return configs.settings(cls, **kwargs)

    def validate(self):
        """Checks every setting that needs no data or files; returns the model's T.

        Raises:
            TrainingInputError (or the model's ValueError): naming the first bad setting.
        """
        self.options.validate()
        check_choice("modality", self.modality, models.MODALITIES, TrainingInputError)
        check_choice("strategy", self.strategy, setup.STRATEGIES, TrainingInputError)
        check_choice("train_views", self.train_views, TRAIN_VIEWS, TrainingInputError)
        steps = models.resolve_architecture(self.preset, **self.architecture())["num_steps"]
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise TrainingInputError(
                f"dropout must be in [0, 1). Received: dropout={self.dropout!r}"
            )
        check_positive_int("feature_dim", self.feature_dim, error=TrainingInputError)
        return steps

    def architecture(self):
        """Returns the architecture overrides given (units, num_steps, dropout)."""
        arch = {"units": self.units, "num_steps": self.num_steps, "dropout": self.dropout}
        return {k: v for k, v in arch.items() if v is not None}


def _check_paths(config):
    check_model_dir(config.model_dir)
    npz, features_dir, flow_dir = config.features_npz, config.features_dir, config.flow_features_dir
    if npz is None and features_dir is not None and not os.path.isdir(features_dir):
        raise TrainingInputError(
            f"features_dir {str(features_dir)!r} is not an existing folder; expected the "
            "feature cache written by the extractor"
        )
    if flow_dir is not None and not os.path.isdir(flow_dir):
        raise TrainingInputError(
            f"flow_features_dir {str(flow_dir)!r} is not an existing folder; expected "
            "the flow feature cache written by reslstm-extract"
        )
    if npz is not None and not os.path.isfile(npz):
        raise TrainingInputError(f"features_npz {str(npz)!r} does not exist")


def _check_config(config):
    """Checks everything that needs no data; returns the model's T."""
    steps = config.validate()
    _check_paths(config)
    return steps


def _num_classes(config, class_names):
    num_classes = config.num_classes
    if num_classes is None:
        if not class_names:
            raise TrainingInputError(
                "num_classes is not set and the features record no class names; pass num_classes"
            )
        num_classes = len(class_names)
    elif class_names and len(class_names) != num_classes:
        raise TrainingInputError(
            f"num_classes={num_classes} but the features record {len(class_names)} class names"
        )
    return check_positive_int("num_classes", num_classes, error=TrainingInputError)


# The RunConfig fields that are `build_model` arguments of the same name.
_MODEL_FIELDS = ("modality", "preset", "fusion", "level", "feature_dim", "flow_dim", "masking",
                 "units", "num_steps", "dropout")  # fmt: skip


def _model_config(config, num_classes):
    """The `build_model` arguments of a run: its config's model fields and `num_classes`."""
    return dict(num_classes=num_classes, **{name: getattr(config, name) for name in _MODEL_FIELDS})


def _expected_shapes(config, steps):
    if config.modality == "two_stream":
        flow_dim = config.flow_dim or config.feature_dim
        return {"rgb": (steps, config.feature_dim), "flow": (steps, flow_dim)}
    return {"features": (steps, config.feature_dim)}


def _feature_spec(config):
    """Returns {stream: feature spec} of the caches trained on ({} for a `.npz`)."""
    if config.features_dir is None:
        return {}
    metadata = feature_sets.split_metadata(
        config.features_dir, config.split, config.modality, config.flow_features_dir
    )
    return {stream: runs.feature_spec(values) for stream, values in metadata.items()}


def _num_views(config):
    """Returns V, the views per video the run trains on (0: the centred view)."""
    if config.features_dir is None or config.train_views == "off":
        return 0
    counts = feature_sets.split_num_views(
        config.features_dir, config.split, config.modality, config.flow_features_dir
    )
    return max(counts.values())  # split_views refuses streams that disagree


def _training_data(config, steps, num_views):
    """Returns (first epoch's dataset, class names, dataset_fn or None)."""
    if not num_views:
        dataset, class_names = feature_sets.load_features(
            config.features_npz,
            config.features_dir,
            config.split,
            config.modality,
            steps,
            config.flow_features_dir,
        )
        return dataset, class_names, None
    views, labels, class_names = feature_sets.split_views(
        config.features_dir, config.split, config.modality, steps, config.flow_features_dir
    )
    dataset_fn = feature_sets.view_dataset_fn(views, labels, seed=config.options.seed)
    return dataset_fn(0), class_names, dataset_fn


def _view_seed(config, num_views):
    """The seed the training cache's views were extracted with (None: no views used)."""
    if not num_views:
        return None
    metadata = feature_sets.split_metadata(
        config.features_dir, config.split, config.modality, config.flow_features_dir
    )
    return {stream: values.get("view_seed") for stream, values in metadata.items()}


def _record(config, model_config, class_names, feature_spec, views):
    """Returns what `train_config.json` records of the run.

    `views` records the views per video trained on ("training_views", 0: the centred
    view) and their extraction seed ("view_seed"): resuming with others is refused.
    With the record's other keys (`RECORD_ONLY`) left out and "model" read as flat
    settings (`RECORD_SECTIONS`), the record is the run's settings but `model_dir`:
    `reslstm-train --config=<run>/train_config.json` trains the same run again.
    """
    options = dataclasses.asdict(config.options)
    paths = ("features_npz", "features_dir", "flow_features_dir")
    return {
        "model": model_config,
        "class_names": class_names,
        "feature_spec": feature_spec,
        **views,
        "strategy": config.strategy,
        **{k: None if getattr(config, k) is None else str(getattr(config, k)) for k in paths},
        "split": config.split,
        "train_views": config.train_views,
        **{k: v for k, v in options.items() if v is None or isinstance(v, _RECORDED)},
    }


def run_training(config=None, **kwargs):
    """Trains a model from features end to end: checks inputs, builds the model, trains it.

    The strategy is created first (MultiWorkerMirroredStrategy must precede other
    TensorFlow ops). Everything is checked before the first training step.

    Args:
        config: a `RunConfig`; or None and its fields (and `TrainOptions`' fields) as
            keyword arguments, e.g. `run_training(model_dir="runs/a", features_npz=...,
            epochs=3)`.

    Returns:
        The `TrainResult`.

    Raises:
        TrainingInputError: bad flags, features or model_dir, before training.
    """
    config = config if config is not None else RunConfig.from_kwargs(**kwargs)
    steps = _check_config(config)
    strategy = setup.make_strategy(config.strategy)
    try:
        num_views = _num_views(config)
        dataset, class_names, dataset_fn = _training_data(config, steps, num_views)
        feature_spec = _feature_spec(config)
        views = {"training_views": num_views, "view_seed": _view_seed(config, num_views)}
    except feature_sets.FeatureInputError as error:
        raise TrainingInputError(str(error)) from None
    num_classes = _num_classes(config, class_names)
    model_config = _model_config(config, num_classes)
    source = str(config.features_npz or config.features_dir)
    check_shapes(dataset, _expected_shapes(config, steps), source=source)
    trainer = Trainer(
        lambda: models.build_model(**model_config),
        num_classes=num_classes,
        model_dir=config.model_dir,
        strategy=strategy,
        config=_record(config, model_config, class_names, feature_spec, views),
        options=config.options,
    )
    result = trainer.fit(dataset if dataset_fn is None else dataset_fn)
    if result.is_chief and (warning := _collapse(result.model, dataset, class_names)):
        from absl import logging

        logging.warning("%s", warning)
    return result


def _collapse(model, dataset, class_names):
    """The `collapse_warning` of the trained model on its training videos (first view).

    A plain forward pass on this process (`model.predict` would run under the strategy,
    whose collectives wait for every worker: only the chief checks).
    """
    import numpy as np

    predicted, labels = [], []
    for features, label in dataset.batch(64):
        predicted.append(np.argmax(model(features, training=False), axis=-1))
        labels.append(label.numpy())
    return collapse_warning(np.concatenate(predicted), np.concatenate(labels), class_names)


def train(model_fn, dataset, *, num_classes, model_dir, strategy=None, config=None, **options):
    """Trains a model with a custom loop under any strategy; checkpoints and resumes.

    A `Trainer` in one call: `Trainer(model_fn, num_classes=..., model_dir=...,
    strategy=..., config=..., **options).fit(dataset)`.

    Args:
        model_fn: callable with no arguments returning a new `keras.Model` (logits out).
        dataset: unbatched `tf.data.Dataset` of `(features, label)`.
        num_classes: int, number of classes C.
        model_dir: the run folder (see `reslstm_tf.runs.RunDir`).
        strategy: a `tf.distribute.Strategy`, a name from `STRATEGIES`, or None.
        config: optional dict recorded in `model_dir/train_config.json` (chief).
        **options: fields of `TrainOptions` (epochs, batch_size, optimizer, ...).

    Returns:
        A `TrainResult`.

    Raises:
        TrainingInputError: bad arguments, data or model_dir, found before training.
    """
    trainer = Trainer(
        model_fn,
        num_classes=num_classes,
        model_dir=model_dir,
        strategy=strategy,
        config=config,
        **options,
    )
    return trainer.fit(dataset)
