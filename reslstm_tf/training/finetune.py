"""Fine-tuning a 3D CNN with the Res-LSTM head, end to end, from videos, through the `Trainer`.

`finetune(FinetuneConfig(...))` lists the videos of a split (`data.datasets`), fills the flow
cache once for flow streams (`data.flow_cache`), builds `build_video_classifier` inside the
Trainer's model function and trains on train-mode clips (`data.clips`: random windows, crops
and flips) with every strategy, mixed precision, XLA, checkpoints and exact resume of the
Trainer. `evaluate_finetuned` scores a run on centred eval-mode clips.

The Trainer reads clips `(T, L, S, S, C)` as they are (its shape checks take elements of
any rank), and each epoch reads its own dataset (`Trainer.fit(dataset_fn)`):
`VideoClips.dataset("train", epoch)`, whose order and augmentation depend only on
(seed, epoch), so a run killed mid-epoch resumes to the same weights; the Trainer's own
shuffle (which would hold N decoded clips) is off. The labels of the video list give the
Trainer N and the label range, so no video is decoded before training.

Trunk caching (``trunk_cache=True``): with BatchNorm frozen, the I3D layers before
`trainable_from` compute a fixed function of the clip, so their output (the "trunk") is
computed once per clip view (`trunk_views` views: view v is the clip epoch v would read) and
only the later blocks and the head are trained on it. For the cached views this is exactly
fine-tuning with that freeze, at a fraction of the cost (the upper blocks of I3D hold a small
part of its compute). In epoch e each video trains on its own scheduled view
(`reslstm_tf.data.feature_arrays.view_schedule`, a function of seed, epoch and video).
"""

import dataclasses
import functools

import keras
import numpy as np

from reslstm_tf import configs, runs
from reslstm_tf.backbones.i3d import VALID_ENDPOINTS
from reslstm_tf.checks import check_choice, check_positive_int
from reslstm_tf.clip_spec import ClipSpec
from reslstm_tf.data import datasets
from reslstm_tf.data.clips import MODALITIES, VideoClips, fill_flow_cache
from reslstm_tf.data.flow_cache import FlowCache
from reslstm_tf.precision import dtype_policy
from reslstm_tf.training import setup
from reslstm_tf.training.options import TrainOptions
from reslstm_tf.training.trainer import Trainer
from reslstm_tf.training.trunk_cache import TrunkSource, TrunkViews, trunk_outputs
from reslstm_tf.video_classifier import SegmentEncoder, build_video_classifier

CLASSIFIER = "video_classifier"
# The settings that make two runs' trunk views the same (with the videos and the views seed).
_TRUNK_SPEC_FIELDS = (
    "modality", "flow_method", "flow_short_side", "num_segments", "segment_len",
    "frame_size", "short", "flip", "backbone", "backbone_weights", "trainable_from",
)  # fmt: skip
# How a FinetuneConfig is written flat (flags, config files, the run's record): the clip's
# resize_short_side keeps its flag's name, and the Trainer's shuffle is always off.
SETTINGS = {"renames": {"resize_short_side": "flow_short_side"}, "exclude": ("shuffle_buffer",)}
UPPER = "upper_classifier"


class FinetuneError(ValueError):
    """A fine-tuning run that cannot be done as asked (options, videos, flow cache)."""


# Fine-tuning's own training defaults (small batches of clips, SGD); the rest are TrainOptions'.
FINETUNE_TRAIN_DEFAULTS = {"batch_size": 8, "optimizer": "sgd"}


def finetune_options(**changes):
    """Fine-tuning's `TrainOptions`: `FINETUNE_TRAIN_DEFAULTS`, then `changes`."""
    return TrainOptions(**{**FINETUNE_TRAIN_DEFAULTS, **changes})


@dataclasses.dataclass
class FinetuneConfig:
    """A fine-tuning run: videos, clips, model, freezing and the Trainer's options.

    Attributes:
        data_dir: the video folder (split-file paths are relative to it).
        model_dir: the run folder (checkpoints, resume, final weights), or None.
        dataset: "folder", "ucf101" or "hmdb51" (`data.datasets.load_dataset`).
        split_dir: ucf101/hmdb51: the folder of the split files (default data_dir).
        split: ucf101/hmdb51: the official split 1, 2 or 3.
        split_file: folder: an optional list of <Class>/<video> lines to train on.
        subset: ucf101/hmdb51: the subset trained on.
        eval_subset: ucf101/hmdb51: the subset evaluated after training ("" for none).
        eval_split_file: folder: the list of videos evaluated after training.
        modality: "rgb", "flow" or "two_stream".
        flow_cache_dir: the flow cache folder, filled once before training (flow streams;
            None computes flow on the fly, for tiny tests only).
        clip: the `ClipSpec` of each stream (its modality is the stream's: the flow
            stream reads ``clip.replace(modality="flow")``); its ``resize_short_side`` is
            the shorter side of the cached flow.
        flip: flip training clips left to right with probability 1/2.
        trainable_from: the first fine-tuned I3D endpoint (None: all of it).
        frozen_batchnorm: keep BatchNorm statistics fixed (small batches).
        recompute: recompute backbone activations in the backward pass (less memory).
        preset: the head's preset (res2..res4, lstm2..lstm4).
        fusion: two_stream: sum, product, weighted or concat.
        level: two_stream: mid or late fusion.
        head: overrides of the head preset (units, num_layers, dropout).
        trunk_cache: train the blocks from `trainable_from` on cached trunk outputs.
        trunk_views: clip views cached per video with `trunk_cache`.
        trunk_cache_dir: keep the trunk views in this folder (computed once, shared by
            every run over the same clips and trunk, e.g. cross-validation folds); None
            keeps them in memory for this run only.
        train: the Trainer's `TrainOptions` (default `finetune_options()`: batch_size 8,
            SGD); its shuffle is off (`train_options`).
        strategy: "default", "mirrored" or "multi_worker".
        limit: use only the first N videos (smoke tests).
    """

    data_dir: str
    model_dir: str | None = None
    dataset: str = "folder"
    split_dir: str | None = None
    split: int = 1
    split_file: str | None = None
    subset: str = "train"
    eval_subset: str = ""
    eval_split_file: str | None = None
    modality: str = "rgb"
    flow_cache_dir: str | None = None
    clip: ClipSpec = dataclasses.field(default_factory=ClipSpec)
    flip: bool = True
    trainable_from: str | None = "Mixed_4f"
    frozen_batchnorm: bool = True
    recompute: bool = False
    preset: str = "res3"
    fusion: str = "product"
    level: str = "late"
    head: dict = dataclasses.field(default_factory=dict)
    trunk_cache: bool = False
    trunk_views: int = 1
    trunk_cache_dir: str | None = None
    train: TrainOptions = dataclasses.field(
        default_factory=finetune_options, metadata={"defaults": FINETUNE_TRAIN_DEFAULTS}
    )
    strategy: str = "default"
    limit: int | None = None

    def __post_init__(self):
        if not isinstance(self.clip, ClipSpec) or not isinstance(self.train, TrainOptions):
            raise TypeError(
                "FinetuneConfig's clip must be a ClipSpec and train a TrainOptions. "
                f"Received: clip={self.clip!r}, train={self.train!r}"
            )
        if self.clip.modality != "rgb":  # each stream sets its own
            self.clip = self.clip.replace(modality="rgb")

    def validate(self):
        """Raises `FinetuneError` naming the first bad option and what is allowed."""
        try:
            check_choice("modality", self.modality, MODALITIES)
            check_positive_int("trunk_views", self.trunk_views)
            check_choice("strategy", self.strategy, setup.STRATEGIES)
            if self.trainable_from is not None:
                check_choice("trainable_from", self.trainable_from, VALID_ENDPOINTS)
            self.train.validate()
        except ValueError as error:
            raise FinetuneError(str(error)) from None
        if self.trunk_cache:
            _check_trunk_cache(self)

    def stream_clip(self, stream):
        """The `ClipSpec` of one stream ("rgb" or "flow")."""
        return self.clip.replace(modality=stream)

    def train_options(self):
        """The `TrainOptions` of the run (the Trainer's shuffle is off: see the module doc)."""
        return dataclasses.replace(self.train, shuffle_buffer=1)


def _refuse_flat_fields(cls):
    """Makes `cls(...)` refuse the clip and training fields it held before as its own."""
    init = cls.__init__
    own = {f.name for f in dataclasses.fields(cls)}
    moved = {
        **{f.name: "clip" for f in dataclasses.fields(ClipSpec) if f.name not in own},
        **{f.name: "train" for f in dataclasses.fields(TrainOptions) if f.name not in own},
        "flow_short_side": "clip",
    }

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        given = sorted(set(kwargs) & set(moved))
        if given:
            where = "; ".join(
                f"{name} -> {moved[name]}="
                + ("ClipSpec" if moved[name] == "clip" else "finetune_options")
                + f"({'resize_short_side' if name == 'flow_short_side' else name}=...)"
                for name in given
            )
            raise TypeError(
                f"{cls.__name__} no longer takes {given} as its own fields; pass them in "
                f"clip=ClipSpec(...) and train=finetune_options(...), or build the config "
                f"from flat settings with finetune.from_flat({{...}}): {where}"
            )
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


_refuse_flat_fields(FinetuneConfig)


def _check_trunk_cache(config):
    """Trunk caching needs a fixed trunk: I3D, frozen BatchNorm, a cut after the input."""
    if config.clip.backbone != "i3d" or config.modality == "two_stream":
        raise FinetuneError(
            "trunk_cache needs one I3D stream. Received: "
            f"backbone={config.clip.backbone!r}, modality={config.modality!r}"
        )
    if not config.frozen_batchnorm or config.trainable_from in (None, VALID_ENDPOINTS[0]):
        raise FinetuneError(
            "trunk_cache needs frozen_batchnorm=True and trainable_from after the first "
            "endpoint (e.g. 'Mixed_5b'): only then is the trunk a fixed function of the clip. "
            f"Received: frozen_batchnorm={config.frozen_batchnorm}, "
            f"trainable_from={config.trainable_from!r}"
        )


# ----------------------------------------------------------------------------- the data


def load_videos(config, subset=None, split_file=None):
    """Lists the videos of the run's split (`subset`, default `config.subset`)."""
    videos = datasets.load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        split_dir=config.split_dir,
        split=config.split,
        subset=subset or config.subset,
        split_file=split_file if split_file is not None else config.split_file,
    )
    if config.limit:
        videos = datasets.VideoList(videos.items[: config.limit], videos.classes)
    if not len(videos):
        raise FinetuneError(f"no videos to read in data_dir={config.data_dir!r}")
    return videos


def flow_cache(config):
    """The run's `FlowCache`, or None (no flow stream, or flow computed on the fly)."""
    if config.modality == "rgb" or not config.flow_cache_dir:
        return None
    spec = config.stream_clip("flow")
    return FlowCache(config.flow_cache_dir, method=spec.flow_method, short_side=spec.short_side)


def prepare_clips(config, videos):
    """Fills the flow cache for `videos` (once: cached videos are skipped); returns the clips.

    Raises:
        FinetuneError: a video's flow could not be computed.
    """
    cache = flow_cache(config)
    if cache is not None:
        summary = fill_flow_cache(cache, videos, config.data_dir, progress=config.train.progress)
        if summary["failed"]:
            failed = "; ".join(f"{vid}: {reason}" for vid, reason in summary["failed"][:5])
            raise FinetuneError(f"{len(summary['failed'])} video(s) have no flow: {failed}")
    return VideoClips(
        videos,
        config.data_dir,
        config.clip,
        modality=config.modality,
        flow_cache=cache,
        flip=config.flip,
        seed=config.train.seed,
    )


class ClipSource:
    """Each epoch's clips for the Trainer, ordered and augmented by (seed, epoch)."""

    def __init__(self, clips):
        self.clips = clips
        self.labels = clips.labels

    def train_data(self, epoch):
        """The unbatched training data of `epoch`."""
        return self.clips.dataset("train", epoch)


# ---------------------------------------------------------------------------- the model


def build_classifier(config, num_classes):
    """The run's `build_video_classifier` model, named `CLASSIFIER`."""
    return build_video_classifier(
        num_classes,
        config.modality,
        config.clip.backbone,
        config.preset,
        num_segments=config.clip.num_segments,
        segment_len=config.clip.segment_len,
        frame_size=config.clip.frame_size,
        backbone_weights=config.clip.backbone_weights,
        trainable_from=config.trainable_from,
        frozen_batchnorm=config.frozen_batchnorm,
        recompute=config.recompute,
        fusion=config.fusion,
        level=config.level,
        name=CLASSIFIER,
        **config.head,
    )


def trunk_split(classifier, trainable_from, recompute=False):
    """Splits a one-stream I3D classifier at `trainable_from`: (trunk, upper model).

    The trunk maps (n, L, S, S, C) segments to the output of the endpoint before
    `trainable_from`; the upper model maps (B, T, *trunk output) to the logits with the
    classifier's own later I3D layers and head (shared, not copied).
    """
    backbone = classifier.get_layer("segment_encoder").backbone
    cut = VALID_ENDPOINTS[VALID_ENDPOINTS.index(trainable_from) - 1]
    cut_output = backbone.get_layer(cut).output
    trunk = keras.Model(backbone.input, cut_output, name="trunk")
    rest = keras.Model(cut_output, backbone.output, name="upper_backbone")
    steps, *segment = classifier.input.shape[1:]
    cut_shape = trunk.compute_output_shape((1, *segment))[1:]
    features = keras.Input((steps, *cut_shape), name="trunk_features")
    encoded = SegmentEncoder(rest, recompute=recompute, name="segment_encoder")(features)
    upper = keras.Model(features, classifier.get_layer("head")(encoded), name=UPPER)
    return trunk, upper


def model_fn(config, num_classes):
    """The Trainer's model function: the classifier (or the upper model with trunk caching)."""

    def build():
        classifier = build_classifier(config, num_classes)
        if config.trunk_cache:
            classifier = trunk_split(classifier, config.trainable_from, config.recompute)[1]
        return classifier

    return build


def _trunk(config, num_classes):
    """The trunk with the weights the Trainer's model gets (same seed, same policy)."""
    keras.utils.set_random_seed(config.train.seed)
    with dtype_policy(setup.mixed_precision_policy(config.train.mixed_precision)):
        return trunk_split(build_classifier(config, num_classes), config.trainable_from)[0]


# ----------------------------------------------------------------------- train, evaluate


@dataclasses.dataclass
class FinetuneResult:
    """What `finetune` returns.

    Attributes:
        train: the Trainer's `TrainResult`.
        classifier: the trained classifier (clips in), or the upper model with trunk caching.
        classes: the class names.
        evaluation: `evaluate_finetuned`'s dict, or None.
    """

    train: object
    classifier: keras.Model
    classes: list
    evaluation: dict | None = None


def settings(**kwargs):
    """The flat settings of `FinetuneConfig` (`reslstm_tf.configs.settings`, `SETTINGS`)."""
    return configs.settings(FinetuneConfig, **SETTINGS, **kwargs)


def to_flat(config):
    """The flat settings of a config: what `train_config.json` records under "finetune"."""
    return configs.to_flat(config, settings())


def from_flat(values):
    """The `FinetuneConfig` of flat settings (as `to_flat` gives; missing ones default).

    Raises:
        ConfigFileError: a name that is no setting.
    """
    return configs.from_flat(FinetuneConfig, values, settings())


def trunk_spec(config):
    """What makes two runs' trunk views the same (with the videos and the views seed)."""
    flat = to_flat(config)
    return {k: flat[k] for k in _TRUNK_SPEC_FIELDS}


def _record(config, classes):
    """The run's `train_config.json`: the flat config (a `--config` file) and class names."""
    return {"finetune": to_flat(config), "class_names": list(classes)}


def stored_trunk_views(config, clips, trunk, progress=None):
    """The run's `TrunkViews` in `config.trunk_cache_dir`, filled (computed once, then read)."""
    views = TrunkViews(
        config.trunk_cache_dir, clips, trunk, config.trunk_views, spec=trunk_spec(config)
    )
    views.fill(progress=config.train.progress if progress is None else progress)
    return views


def _trunk_arrays(config, clips, num_classes):
    """The trunk outputs of the training views: from `trunk_cache_dir` or computed now."""
    trunk = _trunk(config, num_classes)
    if not config.trunk_cache_dir:
        return [trunk_outputs(clips, trunk, "train", v) for v in range(config.trunk_views)]
    return stored_trunk_views(config, clips, trunk)


def make_trainer(config, clips, classes, strategy=None):
    """Returns `(trainer, source)` of a run over `clips` (the training videos' `VideoClips`).

    Train with `trainer.fit(source.train_data, labels=source.labels)`.
    """
    build = model_fn(config, len(classes))
    if config.trunk_cache:
        source = TrunkSource(clips, _trunk_arrays(config, clips, len(classes)))
    else:
        source = ClipSource(clips)
    trainer = Trainer(
        build,
        num_classes=len(classes),
        model_dir=config.model_dir,
        strategy=strategy or config.strategy,
        config=_record(config, classes),
        options=config.train_options(),
    )
    return trainer, source


def finetune(config, strategy=None):
    """Fine-tunes a backbone and the Res-LSTM head on videos; checkpoints and resumes.

    Args:
        config: a `FinetuneConfig`.
        strategy: a `tf.distribute.Strategy` instead of `config.strategy` (e.g. one
            made with chosen devices).

    Returns:
        A `FinetuneResult`; with `eval_subset` / `eval_split_file` also evaluated.

    Raises:
        FinetuneError: bad options, no videos, or videos without flow.
        TrainingInputError: the Trainer's checks (batch size, a run of another shape).
    """
    config.validate()
    videos = load_videos(config)
    clips = prepare_clips(config, videos)
    trainer, source = make_trainer(config, clips, list(videos.classes), strategy)
    result = trainer.fit(source.train_data, labels=source.labels)
    classifier = result.model
    evaluation = None
    if config.eval_subset or config.eval_split_file:
        subset = config.eval_subset or "test"
        eval_videos = load_videos(config, subset, config.eval_split_file)
        evaluation = evaluate_finetuned(
            config, classifier, eval_videos, split=subset, classes=videos.classes
        )
    return FinetuneResult(result, classifier, list(videos.classes), evaluation)


def _eval_batches(config, model, clips, batch_size):
    """Yields (model inputs, labels) of the centred eval clips (trunk outputs if cached)."""
    trunk = None
    if config.trunk_cache:
        trunk = SegmentEncoder(_trunk(config, int(model.output.shape[-1])))
    for element, labels in clips.dataset("eval").batch(batch_size):
        if trunk is not None:
            element = trunk(element, training=False)
        yield element, np.asarray(labels)


def evaluate_finetuned(config, model=None, videos=None, split="test", batch_size=4, classes=None):
    """Scores a fine-tuned classifier on centred eval-mode clips.

    Args:
        config: the run's `FinetuneConfig`.
        model: the trained classifier (`FinetuneResult.classifier`); None rebuilds it and
            loads the weights of `config.model_dir` (final weights, else the latest
            checkpoint).
        videos: the `VideoList` to score (default: `config.eval_subset` of the dataset).
        split: the name of the evaluation; with a model_dir the metrics and predictions go
            to `<model_dir>/eval_<split>/`.
        batch_size: videos per forward pass.
        classes: the class names the model was trained on, in id order (default: those
            recorded in `config.model_dir`); the videos' labels are mapped onto them by name.

    Returns:
        dict with "top1", "num_videos" and "predictions": [{"video", "label",
        "predicted", "probabilities"}] in video order, labels in the run's class ids.

    Raises:
        FinetuneError: the videos hold classes the model was not trained on.
    """
    if videos is None:
        videos = load_videos(config, config.eval_subset or "test", config.eval_split_file)
    if classes is None and config.model_dir is not None:
        classes = runs.RunDir(config.model_dir).config().get("class_names")
    classes = list(classes) if classes else list(videos.classes)
    mapping = runs.class_id_map(classes, videos.classes, "the evaluation videos", FinetuneError)
    if model is None:
        model = _load_trained(config, len(classes))
    clips = prepare_clips(config, videos)
    labels = clips.labels if mapping is None else mapping[np.asarray(clips.labels)]
    probabilities = []
    for inputs, _ in _eval_batches(config, model, clips, batch_size):
        logits = model(inputs, training=False)
        probabilities.append(np.asarray(keras.ops.softmax(logits), np.float32))
    probabilities = np.concatenate(probabilities)
    predicted = probabilities.argmax(-1)
    predictions = [
        {"video": path, "label": int(label), "predicted": int(guess), "probabilities": p.tolist()}
        for path, label, guess, p in zip(clips.paths, labels, predicted, probabilities)
    ]
    top1 = float(np.mean(predicted == labels))
    if config.model_dir is not None:
        folder = runs.RunDir(config.model_dir).eval_dir(split).create()
        folder.write_metrics({"top1": top1, "num_videos": len(predictions)})
        folder.write_predictions(probabilities, labels)
    return {"top1": top1, "num_videos": len(predictions), "predictions": predictions}


def _load_trained(config, num_classes):
    """Rebuilds the run's model and loads its trained weights; returns the classifier."""
    if config.model_dir is None:
        raise FinetuneError("evaluate_finetuned needs a model or a model_dir to load")
    keras.utils.set_random_seed(config.train.seed)
    model = model_fn(config, num_classes)()
    runs.RunDir(config.model_dir).load_weights(model)
    return model


__all__ = [
    "FinetuneConfig",
    "FinetuneError",
    "FinetuneResult",
    "evaluate_finetuned",
    "finetune",
]
