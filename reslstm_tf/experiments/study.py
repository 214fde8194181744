"""The whole study on one labelled video folder: frozen, augmented, fine-tuned, two-stream.

`run_study(StudyConfig(...))` cross-validates every recipe of the paper on the same folds and
seeds, on a CPU budget:

1. Streams: RGB and the flow of each `flow_methods` entry (flow computed once into a
   `FlowCache`). Every stream's clips (the study's `ClipSpec`, default
   `clip_spec.PRESETS["cpu_small"]`: T segments of L frames, S px) go through the
   Kinetics-400 I3D up to the block before `trainable_from`; these trunk outputs are stored
   once per clip view (`TrunkViews`: the centred eval view and `views` training views with
   random windows, crops and flips) and shared by every fold and seed.
2. Frozen features: the rest of the pretrained I3D on every view gives the (T, D) segment
   features (D the backbone's, 1024 for I3D). Recipes "frozen" (the centred view only, as
   `reslstm-extract` stores it) and "frozen_aug" (in epoch e video n trains on view
   `view_schedule(N, views, e, seed)[n]`, the schedule of `reslstm-train` and of trunk
   caching; evaluation on the centred view) train LSTM and Res-LSTM heads of every depth;
   "logreg" is the mean-pooled logistic regression.
3. Fine-tuning ("finetuned"): per fold and seed, the I3D blocks from `trainable_from` and a
   `finetune_preset` head train end to end on the stored trunk outputs (exactly fine-tuning
   with the lower blocks and BatchNorm frozen, see `training.trunk_cache`). Its validation
   probabilities and the fine-tuned backbone's features of every view are kept.
4. On the fine-tuned features: heads of every depth ("finetuned_features", RGB), the
   two-stream mid fusion ("mid_product": one head on the product of the RGB and flow
   features) and the late fusion of the fine-tuned streams' probabilities ("late_product",
   "late_sum"), as the paper fuses separately trained streams. (With two streams, the
   paper's weighted sum w1 * flow + w2 * rgb needs weights chosen on data the folds do not
   hold; equal weights rank classes as the sum does.)

Fine-tuning runs are built from `FinetuneConfig`s (`StudyConfig.finetune_config`: the study's
clip and `finetune_train` options) through fine-tuning's public functions; heads on features
and the loop over the plan are the experiments' one runner (`reslstm_tf.experiments.runner`),
which `reslstm-ablate` uses too.

Validation clips are used only to score a finished run. Every run appends one line to
`runs.jsonl`; a restarted study skips the runs already there (and every stored view and
feature file), so a killed study resumes where it stopped. `study_report` turns the lines
into `results.md`, `results.json` and `depth.png`.
"""

import dataclasses
import json
import pathlib
import time

import numpy as np

from reslstm_tf.checks import check_positive_int
from reslstm_tf.clip_spec import PRESETS, ClipSpec
from reslstm_tf.evaluate import softmax
from reslstm_tf.experiments.baselines import mean_pooled_accuracies
from reslstm_tf.experiments.config import RNN_ARCHS, AblationError, RunSpec, head_options
from reslstm_tf.experiments.runner import HeadRunner, RunLog, run_plan
from reslstm_tf.experiments.splits import stratified_folds
from reslstm_tf.files import atomic_write
from reslstm_tf.training.options import TrainOptions

STREAMS = ("rgb", "farneback", "tvl1")
FEATURE_RECIPES = ("frozen", "frozen_aug", "finetuned_features")
LATE_FUSIONS = ("late_product", "late_sum")


def finetune_train_options(**changes):
    """The study's fine-tuning `TrainOptions`: Adam 3e-4, 8 epochs, batch 8, no bar."""
    options = TrainOptions(
        epochs=8, batch_size=8, optimizer="adam", learning_rate=3e-4, progress=False
    )
    return dataclasses.replace(options, **changes)


# The names an earlier study_config.json gave the settings that now live in the clip and
# the two TrainOptions: {old name: (field, its field)}.
_FLAT_NAMES = {
    **{name: ("clip", name) for name in ("num_segments", "segment_len", "frame_size", "short")},
    **{f"head_{name}": ("head_train", name) for name in ("epochs", "batch_size", "learning_rate")},
    **{f"finetune_{name}": ("finetune_train", name)
       for name in ("epochs", "batch_size", "learning_rate")},
}  # fmt: skip


@dataclasses.dataclass
class StudyConfig:
    """The study's data, clips, folds and training settings.

    Attributes:
        data_dir: the video folder; split_file: its labelled list (`Class/name.mp4`).
        out_dir: where views, features, runs and results go (resumable).
        flow_methods: the flow streams ("farneback", "tvl1"); () for RGB only.
        flow_cache_dir: the flow caches (default `<out_dir>/flow`; one folder per method).
        clip: the `ClipSpec` of every stream's clips (default `clip_spec.PRESETS["cpu_small"]`:
            T = 4 segments of L = 16 frames at S = 112, short videos 'overlap'); a flow
            stream reads it with its modality and flow method.
        views: training views stored per video.
        trainable_from: the first fine-tuned I3D block.
        folds, seeds, split_seed: stratified `folds`-fold cross-validation x `seeds` seeds.
        finetune_seeds: seeds of the fine-tuning runs (default `seeds`).
        units, depths, dropout: the heads (LSTM units, depths compared, input dropout).
        head_train: the `TrainOptions` of heads on features (default `head_options()`:
            Adam 1e-3, 15 epochs, batch 16); each run's seed replaces its seed.
        finetune_preset: the head fine-tuned with the I3D blocks.
        finetune_train: the `TrainOptions` of the fine-tuning runs (default
            `finetune_train_options()`: Adam 3e-4, 8 epochs, batch 8).
        recipes: which recipes to run (default all).
        progress: show progress bars.
    """

    data_dir: str
    split_file: str
    out_dir: str
    flow_methods: tuple = ("farneback", "tvl1")
    flow_cache_dir: str | None = None
    clip: ClipSpec = PRESETS["cpu_small"]
    views: int = 3
    trainable_from: str = "Mixed_5b"
    folds: int = 5
    seeds: int = 3
    split_seed: int = 0
    finetune_seeds: int | None = None
    units: int = 256
    depths: tuple = (2, 3, 4)
    dropout: float = 0.5
    head_train: TrainOptions = dataclasses.field(default_factory=head_options)
    finetune_preset: str = "res3"
    finetune_train: TrainOptions = dataclasses.field(default_factory=finetune_train_options)
    recipes: tuple = ("logreg", "frozen", "frozen_aug", "finetuned", "finetuned_features",
                      "mid_product", *LATE_FUSIONS)  # fmt: skip
    progress: bool = True

    def validate(self):
        """Raises `AblationError` naming the first bad setting."""
        for name in ("views", "folds", "seeds"):
            check_positive_int(name, getattr(self, name), error=AblationError)
        for name in ("head_train", "finetune_train"):
            try:
                getattr(self, name).validate()
            except ValueError as error:
                raise AblationError(f"{name}: {error}") from None
        for method in self.flow_methods:
            if method not in STREAMS[1:]:
                raise AblationError(
                    f"flow_methods must hold 'farneback' and/or 'tvl1'. Received: {method!r}"
                )

    @property
    def streams(self):
        """ "rgb" and the flow methods."""
        return ("rgb", *self.flow_methods)

    def finetune_config(self, stream, seed=0):
        """The `FinetuneConfig` of a stream's fine-tuning run (trunk-cached).

        Built from the study's clip (with the stream's flow method) and `finetune_train`
        (with `seed`), not field by field.
        """
        from reslstm_tf.training.finetune import FinetuneConfig

        flow_dir = pathlib.Path(self.flow_cache_dir or pathlib.Path(self.out_dir) / "flow")
        flow = stream != "rgb"
        return FinetuneConfig(
            data_dir=self.data_dir,
            split_file=self.split_file,
            modality="flow" if flow else "rgb",
            flow_cache_dir=str(flow_dir / stream) if flow else None,
            clip=self.clip.replace(modality="rgb", flow_method=stream if flow else "tvl1"),
            train=dataclasses.replace(self.finetune_train, seed=seed, progress=False),
            trainable_from=self.trainable_from,
            preset=self.finetune_preset,
            head={"units": self.units, "dropout": self.dropout},
            trunk_cache=True,
            trunk_views=self.views,
            trunk_cache_dir=str(pathlib.Path(self.out_dir) / "views" / stream),
        )

    def to_record(self):
        """The config as JSON-able dict (`study_config.json`; `from_record` reads it back)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_record(cls, record):
        """The `StudyConfig` of a `to_record` dict, or of an earlier release's flat record."""
        values = {k: v for k, v in record.items() if k not in _FLAT_NAMES}
        nested = {"clip": {}, "head_train": {}, "finetune_train": {}}
        for name, (field, key) in _FLAT_NAMES.items():
            if name in record:
                nested[field][key] = record[name]
        values["clip"] = ClipSpec.from_dict(
            {**PRESETS["cpu_small"].to_dict(), **values.get("clip", {}), **nested["clip"]}
        )
        values["head_train"] = head_options(**values.get("head_train", {}),
                                            **nested["head_train"])  # fmt: skip
        values["finetune_train"] = finetune_train_options(
            **values.get("finetune_train", {}), **nested["finetune_train"]
        )
        for name in ("flow_methods", "depths", "recipes"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


def _segment_features(encoder, array, batch_size=16):
    """Runs a `SegmentEncoder` over (N, T, ...) trunk outputs; returns float32 (N, T, D)."""
    out = [
        np.asarray(encoder(np.asarray(array[i : i + batch_size]), training=False), np.float32)
        for i in range(0, len(array), batch_size)
    ]
    return np.concatenate(out)


def view_features(upper, views, batch_size=16):
    """Features of every stored view through an upper model: float32 (V + 1, N, T, D).

    Row 0 is the centred eval view, rows 1..V the training views; D is what the upper
    model's backbone gives.
    """
    encoder = upper.get_layer("segment_encoder")
    arrays = [views.array("eval"), *(views.array(v) for v in range(views.views))]
    return np.stack([_segment_features(encoder, a, batch_size) for a in arrays])


class Stream:
    """One stream's clips, stored trunk views and frozen features (computed once).

    The trunk and the upper model come from fine-tuning's public functions: the run's
    classifier (`build_classifier`, with the Trainer's seed) split at `trainable_from`.
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
        self.frozen = _cached_array(
            pathlib.Path(config.out_dir) / "features" / f"{stream}_frozen.npy",
            lambda: view_features(upper, self.views),
        )


def _cached_array(path, compute):
    """Loads `path` if it exists, else computes, stores atomically and returns the array."""
    path = pathlib.Path(path)
    if path.exists():
        return np.load(path)
    array = compute()
    with atomic_write(path) as handle:
        np.save(handle, array)
    return array


# -------------------------------------------------------------------------------- runs


def run_key(recipe, stream, arch, depth, fold, seed):
    """The identity of a run in `runs.jsonl`."""
    return f"{recipe}|{stream}|{arch}{depth}|fold{fold}|seed{seed}"


def study_heads(config, num_classes):
    """The study's `HeadRunner` (the experiments' one runner) with its head options."""
    return HeadRunner(num_classes, config.head_train, config.dropout)


def run_head(heads, config, arch, depth, features, labels, train_idx, val_idx, seed,
             augmented, fusion=None):  # fmt: skip
    """Trains one head of the study on stored view features; returns the `HeadResult`.

    Args:
        heads: the `HeadRunner` (`study_heads`).
        features: float (V + 1, N, T, D) (row 0 the centred view, rows 1..V the training
            views), or {"rgb": ..., "flow": ...} of such for a two-stream head.
        augmented: train on the training views (video n reads `view_schedule`'s view);
            False trains on the centred view every epoch.
        fusion: the two-stream mid fusion ("product"), or None for one stream.
    """
    two = isinstance(features, dict)
    spec = RunSpec(arch, depth, config.units, config.clip.num_segments,
                   "two_stream" if two else "rgb", fusion or "", "mid" if fusion else "",
                   "cv", seed, 0)  # fmt: skip
    if two:
        centred = {k: v[0] for k, v in features.items()}
        views = {k: v[1:] for k, v in features.items()}
    else:
        centred, views = features[0], features[1:]
    return heads.run(spec, centred, labels, train_idx, val_idx, views if augmented else None)


def _probabilities(model, array, rows, batch_size=16):
    """Softmax of a model over the given rows of an array (a stored view or its features)."""
    logits = [
        np.asarray(model(np.asarray(array[rows[i : i + batch_size]]), training=False))
        for i in range(0, len(rows), batch_size)
    ]
    return softmax(np.concatenate(logits))


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
        """Trains on `train_idx`; stores features and val probabilities; returns accuracies."""
        stream = self.stream
        upper = self.train(train_idx, seed)
        labels = np.asarray(stream.clips.labels)
        features = view_features(upper, stream.views)
        # The head on the centred view's features: the upper model's logits, without running
        # the fine-tuned blocks over that view a second time.
        train_p = _probabilities(upper.get_layer("head"), features[0], train_idx)
        val_p = _probabilities(upper.get_layer("head"), features[0], val_idx)
        with atomic_write(out_path) as handle:
            np.savez(handle, features=features.astype(np.float16), val_probabilities=val_p)
        train_acc = float(np.mean(train_p.argmax(-1) == labels[train_idx]))
        return train_acc, float(np.mean(val_p.argmax(-1) == labels[val_idx]))


def _fuse(rgb, flow, recipe):
    """Late fusion of two streams' class probabilities (the paper's product or sum)."""
    return rgb * flow if recipe == "late_product" else rgb + flow


@dataclasses.dataclass
class _Plan:
    """The study's runs: (key, recipe, stream, arch, depth, fold, seed) in execution order."""

    runs: list

    def __len__(self):
        return len(self.runs)


def plan_study(config):
    """Every run of the study, cheap and independent ones first, one head config together."""
    depths = [(arch, depth) for arch in RNN_ARCHS for depth in config.depths]
    preset = config.finetune_preset
    ft_head = [("res" if preset.startswith("res") else "lstm", int(preset[-1]))]
    seeds = range(config.seeds)
    ft_seeds = range(config.finetune_seeds or config.seeds)
    groups = []
    if "logreg" in config.recipes:
        groups.append(("logreg", "rgb", [("logreg", 0)], seeds))
    frozen = [r for r in ("frozen", "frozen_aug") if r in config.recipes]
    # The fine-tuning head first on every stream, then what depends on fine-tuning, then
    # the other depths: a study stopped early has the main comparisons.
    groups += [(r, stream, ft_head, seeds) for r in frozen for stream in config.streams]
    if "finetuned" in config.recipes:
        groups += [("finetuned", stream, ft_head, ft_seeds) for stream in config.streams]
    for method in config.flow_methods:
        for recipe in ("mid_product", *LATE_FUSIONS):
            if recipe in config.recipes:
                groups.append((recipe, f"rgb+{method}", ft_head, ft_seeds))
    if "finetuned_features" in config.recipes:
        groups.append(("finetuned_features", "rgb", depths, ft_seeds))
    groups += [(r, "rgb", depths, seeds) for r in frozen]
    runs, planned = [], set()
    for recipe, stream, heads, run_seeds in groups:
        for arch, depth in heads:
            for fold in range(config.folds):
                for seed in run_seeds:
                    key = run_key(recipe, stream, arch, depth, fold, seed)
                    if key not in planned:
                        planned.add(key)
                        runs.append((key, recipe, stream, arch, depth, fold, seed))
    return _Plan(runs)


class _Context:
    """What the runs share: labels, folds, streams, trainers and the output folder."""

    def __init__(self, config, labels, streams):
        self.config, self.labels, self.streams = config, labels, streams
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
        """An array of a finished fine-tuning run ("features" as float32, "val_probabilities")."""
        with np.load(self.finetuned_path(stream, fold, seed)) as data:
            return np.asarray(data[what], np.float32)

    def finetuner(self, stream):
        """The stream's `FinetuneRunner` (made once)."""
        if stream not in self.finetuners:
            self.finetuners[stream] = FinetuneRunner(self.streams[stream], self.num_classes)
        return self.finetuners[stream]


def _execute(ctx, recipe, stream, arch, depth, fold, seed):
    """Runs one planned run; returns (train accuracy or None, val predictions, epochs)."""
    config, labels = ctx.config, ctx.labels
    train_idx, val_idx = ctx.split(fold)
    if recipe == "logreg":
        features = ctx.streams["rgb"].frozen[0]
        train_acc, _, predicted = mean_pooled_accuracies(
            features, labels, train_idx, val_idx, return_predictions=True
        )
        return train_acc, predicted, 0
    if recipe == "finetuned":
        path = ctx.finetuned_path(stream, fold, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        train_acc, _ = ctx.finetuner(stream).run(train_idx, val_idx, seed, path)
        probabilities = ctx.finetuned(stream, fold, seed, "val_probabilities")
        return train_acc, probabilities.argmax(-1), config.finetune_train.epochs
    if recipe in LATE_FUSIONS:
        rgb_method = stream.split("+")
        rgb, flow = (ctx.finetuned(s, fold, seed, "val_probabilities") for s in rgb_method)
        return None, _fuse(rgb, flow, recipe).argmax(-1), 0
    if recipe in ("frozen", "frozen_aug"):
        features, fusion = ctx.streams[stream].frozen, None
    elif recipe == "finetuned_features":
        features, fusion = ctx.finetuned(stream, fold, seed, "features"), None
    else:  # mid_product
        parts = stream.split("+")
        features = {
            k: ctx.finetuned(s, fold, seed, "features") for k, s in zip(("rgb", "flow"), parts)
        }
        fusion = "product"
    result = run_head(ctx.heads, config, arch, depth, features, labels, train_idx, val_idx,
                      seed, augmented=recipe != "frozen", fusion=fusion)  # fmt: skip
    return result.train_accuracy, result.val_probabilities.argmax(-1), config.head_train.epochs


def _execute_logged(ctx, run):
    """Runs one planned run and times it; returns its `runs.jsonl` row (without the key).

    Besides the accuracies the row keeps which validation videos the run got right
    (`val_index`, `val_correct`), for McNemar's test on pooled out-of-fold predictions.
    """
    recipe, stream, arch, depth, fold, seed = run
    start = time.perf_counter()
    train_acc, predicted, epochs = _execute(ctx, recipe, stream, arch, depth, fold, seed)
    seconds = time.perf_counter() - start
    train_idx, val_idx = ctx.split(fold)
    correct = np.asarray(predicted) == ctx.labels[val_idx]
    return {
        "recipe": recipe, "stream": stream, "arch": arch, "depth": depth, "fold": fold,
        "seed": seed, "n_train": len(train_idx), "n_val": len(val_idx), "epochs": epochs,
        "train_accuracy": train_acc, "val_accuracy": float(np.mean(correct)),
        "seconds": round(seconds, 2), "val_index": [int(i) for i in val_idx],
        "val_correct": [int(c) for c in correct],
    }  # fmt: skip


def run_study(config):
    """Runs (or resumes) every planned run; writes `runs.jsonl` and the report.

    The runs go through the experiments' one runner (`reslstm_tf.experiments.runner`:
    `run_plan` over the plan, heads by its `HeadRunner`).

    Returns:
        The report dict of `study_report`.
    """
    from reslstm_tf.data import datasets

    config.validate()
    out = pathlib.Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_resumable(config, out / "study_config.json")
    with atomic_write(out / "study_config.json", "w") as handle:
        handle.write(json.dumps(config.to_record(), indent=2) + "\n")
    videos = datasets.load_dataset("folder", data_dir=config.data_dir, split_file=config.split_file)
    num_classes = len(videos.classes)
    streams = {}
    for stream in config.streams:
        start = time.perf_counter()
        streams[stream] = Stream(config, stream, videos, num_classes)
        _log_timing(out, f"stream {stream}: flow, trunk views and frozen features",
                    time.perf_counter() - start)  # fmt: skip
    ctx = _Context(config, np.asarray(streams["rgb"].clips.labels), streams)
    runs = [(key, tuple(run)) for key, *run in plan_study(config).runs]
    run_plan(runs, lambda run: _execute_logged(ctx, run), RunLog(out / "runs.jsonl"),
             progress=config.progress, desc="study")  # fmt: skip
    from reslstm_tf.experiments.study_report import study_report

    return study_report(out)


# Settings a resumed study may change: they add or skip runs, and change no finished one.
EXTENSIBLE = ("flow_methods", "flow_cache_dir", "seeds", "finetune_seeds", "recipes", "progress",
              "head_train.progress", "finetune_train.progress")  # fmt: skip


def _flat(record, prefix=""):
    """A nested record as {"clip.frame_size": 112, ...}."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_resumable(config, path):
    """Refuses to resume a study whose finished runs were made with other settings.

    A `study_config.json` of an earlier release (flat clip and training settings) is read
    as the config it describes (`StudyConfig.from_record`).
    """
    if not path.exists():
        return
    record = json.loads(path.read_text(encoding="utf-8"))
    stored = _flat(StudyConfig.from_record(record).to_record())
    current = _flat(config.to_record())
    changed = [
        f"{key}: {stored.get(key)!r} -> {current.get(key)!r}"
        for key in sorted(set(stored) | set(current))
        if key not in EXTENSIBLE and stored.get(key) != current.get(key)
    ]
    if changed:
        raise AblationError(
            f"{path.parent} holds runs made with other settings ({'; '.join(changed)}); "
            "use another out_dir, or the same settings to resume"
        )


def _log_timing(out, what, seconds):
    """Appends a one-off stage's wall time to `timings.jsonl`."""
    with open(out / "timings.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"stage": what, "seconds": round(seconds, 1)}) + "\n")
