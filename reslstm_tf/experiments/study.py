"""The whole study on one labelled video folder: frozen, augmented, fine-tuned, two-stream.

`run_study(StudyConfig(...))` cross-validates every recipe of the paper on the same folds and
seeds, on a CPU budget:

1. Streams: RGB and the flow of each `flow_methods` entry (flow computed once into a
   `FlowCache`). Every stream's clips (T segments of L frames, S px) go through the
   Kinetics-400 I3D up to the block before `trainable_from`; these trunk outputs are stored
   once per clip view (`TrunkViews`: the centred eval view and `views` training views with
   random windows, crops and flips) and shared by every fold and seed.
2. Frozen features: the rest of the pretrained I3D on every view gives the (T, 1024) segment
   features. Recipes "frozen" (the centred view only, as `reslstm-extract` stores it) and
   "frozen_aug" (epoch e trains on view e mod `views`, evaluation on the centred view) train
   LSTM and Res-LSTM heads of every depth; "logreg" is the mean-pooled logistic regression.
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
from reslstm_tf.experiments.baselines import mean_pooled_accuracies
from reslstm_tf.experiments.config import RNN_ARCHS, AblationError, RunSpec, TrainConfig
from reslstm_tf.experiments.splits import stratified_folds
from reslstm_tf.files import atomic_write

STREAMS = ("rgb", "farneback", "tvl1")
FEATURE_RECIPES = ("frozen", "frozen_aug", "finetuned_features")
LATE_FUSIONS = ("late_product", "late_sum")


@dataclasses.dataclass
class StudyConfig:
    """The study's data, clips, folds and training settings.

    Attributes:
        data_dir: the video folder; split_file: its labelled list (`Class/name.mp4`).
        out_dir: where views, features, runs and results go (resumable).
        flow_methods: the flow streams ("farneback", "tvl1"); () for RGB only.
        flow_cache_dir: the flow caches (default `<out_dir>/flow`; one folder per method).
        num_segments, segment_len, frame_size, short: T, L, S and the short-video policy.
        views: training views stored per video.
        trainable_from: the first fine-tuned I3D block.
        folds, seeds, split_seed: stratified `folds`-fold cross-validation x `seeds` seeds.
        finetune_seeds: seeds of the fine-tuning runs (default `seeds`).
        units, depths, dropout: the heads (LSTM units, depths compared, input dropout).
        head_epochs, head_batch_size, head_learning_rate: heads on features (Adam).
        finetune_preset, finetune_epochs, finetune_batch_size, finetune_learning_rate:
            the fine-tuning runs (Adam).
        recipes: which recipes to run (default all).
        progress: show progress bars.
    """

    data_dir: str
    split_file: str
    out_dir: str
    flow_methods: tuple = ("farneback", "tvl1")
    flow_cache_dir: str | None = None
    num_segments: int = 4
    segment_len: int = 16
    frame_size: int = 112
    short: str = "overlap"
    views: int = 3
    trainable_from: str = "Mixed_5b"
    folds: int = 5
    seeds: int = 3
    split_seed: int = 0
    finetune_seeds: int | None = None
    units: int = 256
    depths: tuple = (2, 3, 4)
    dropout: float = 0.5
    head_epochs: int = 15
    head_batch_size: int = 16
    head_learning_rate: float = 1e-3
    finetune_preset: str = "res3"
    finetune_epochs: int = 8
    finetune_batch_size: int = 8
    finetune_learning_rate: float = 3e-4
    recipes: tuple = ("logreg", "frozen", "frozen_aug", "finetuned", "finetuned_features",
                      "mid_product", *LATE_FUSIONS)  # fmt: skip
    progress: bool = True

    def validate(self):
        """Raises `AblationError` naming the first bad setting."""
        for name in ("num_segments", "segment_len", "frame_size", "views", "folds", "seeds"):
            check_positive_int(name, getattr(self, name), error=AblationError)
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
        """The `FinetuneConfig` of a stream's fine-tuning run (trunk-cached)."""
        from reslstm_tf.training.finetune import FinetuneConfig

        flow_dir = self.flow_cache_dir or str(pathlib.Path(self.out_dir) / "flow")
        return FinetuneConfig(
            data_dir=self.data_dir,
            split_file=self.split_file,
            modality="rgb" if stream == "rgb" else "flow",
            flow_method="tvl1" if stream == "rgb" else stream,
            flow_cache_dir=None if stream == "rgb" else str(pathlib.Path(flow_dir) / stream),
            num_segments=self.num_segments,
            segment_len=self.segment_len,
            frame_size=self.frame_size,
            short=self.short,
            trainable_from=self.trainable_from,
            preset=self.finetune_preset,
            head={"units": self.units, "dropout": self.dropout},
            trunk_cache=True,
            trunk_views=self.views,
            trunk_cache_dir=str(pathlib.Path(self.out_dir) / "views" / stream),
            epochs=self.finetune_epochs,
            batch_size=self.finetune_batch_size,
            optimizer="adam",
            learning_rate=self.finetune_learning_rate,
            seed=seed,
            progress=False,
        )


def _segment_features(encoder, array, batch_size=16):
    """Runs a `SegmentEncoder` over (N, T, ...) trunk outputs; returns float32 (N, T, D)."""
    out = [
        np.asarray(encoder(np.asarray(array[i : i + batch_size]), training=False), np.float32)
        for i in range(0, len(array), batch_size)
    ]
    return np.concatenate(out)


def view_features(upper, views, batch_size=16):
    """Features of every stored view through an upper model: float32 (V + 1, N, T, D).

    Row 0 is the centred eval view, rows 1..V the training views.
    """
    encoder = upper.get_layer("segment_encoder")
    arrays = [views.array("eval"), *(views.array(v) for v in range(views.views))]
    return np.stack([_segment_features(encoder, a, batch_size) for a in arrays])


class Stream:
    """One stream's clips, stored trunk views and frozen features (computed once)."""

    def __init__(self, config, stream, videos, num_classes):
        import keras

        from reslstm_tf.training import finetune as ft

        self.name, self.config = stream, config
        self.finetune = config.finetune_config(stream)
        self.clips = ft.prepare_clips(dataclasses.replace(self.finetune, progress=True), videos)
        keras.utils.set_random_seed(0)
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


class RunLog:
    """`runs.jsonl`: one JSON line per finished run, appended and flushed; read on resume."""

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

    def add(self, row):
        """Appends a finished run's row."""
        self.rows[row["key"]] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()


def _view_dataset_fn(inputs, labels, views, seed):
    """Epoch e's unbatched (features, label) of training view e mod V (rows in a seeded order).

    Args:
        inputs: (V + 1, N, T, D) arrays (row 0 the eval view), or a dict of them (streams).
        labels: int labels (N,).
        views: V; 0 trains on the eval view every epoch.
        seed: seeds the order of each epoch.
    """
    import tensorflow as tf

    def dataset_fn(epoch):
        view = 0 if views == 0 else 1 + epoch % views
        order = np.random.default_rng([seed, epoch]).permutation(len(labels))
        if isinstance(inputs, dict):
            x = {k: v[view][order] for k, v in inputs.items()}
        else:
            x = inputs[view][order]
        return tf.data.Dataset.from_tensor_slices((x, labels[order]))

    return dataset_fn


class HeadRunner:
    """Trains heads on stored features through `Trainer`s reused across seeds and folds."""

    def __init__(self, config, num_classes):
        from reslstm_tf.experiments.ablation import HeadTrainers

        self.config = config
        train = TrainConfig(
            epochs=config.head_epochs,
            batch_size=config.head_batch_size,
            learning_rate=config.head_learning_rate,
            dropout=config.dropout,
        )
        self.trainers = HeadTrainers(num_classes, 1024, train)

    def run(self, arch, depth, features, labels, train_idx, val_idx, seed, views, fusion=None):
        """Trains one head; returns (train accuracy, val accuracy, val probabilities)."""
        modality = "two_stream" if isinstance(features, dict) else "rgb"
        spec = RunSpec(arch, depth, self.config.units, self.config.num_segments, modality,
                       fusion or "-", "mid" if fusion else "-", "cv", seed, 0)  # fmt: skip
        trainer = self.trainers.trainer_for(spec, masking=False)

        def pick(rows, view=0):
            if isinstance(features, dict):
                return {k: v[view][rows] for k, v in features.items()}
            return features[view][rows]

        train = {k: v[:, train_idx] for k, v in features.items()} if modality == "two_stream" \
            else features[:, train_idx]  # fmt: skip
        trainer.fit(
            _view_dataset_fn(train, labels[train_idx], views, seed), labels=labels[train_idx]
        )
        train_acc = trainer.evaluate(pick(train_idx), labels[train_idx])
        logits = trainer.predict(pick(val_idx))
        probabilities = _softmax(logits)
        val_acc = float(np.mean(probabilities.argmax(-1) == labels[val_idx]))
        return train_acc, val_acc, probabilities


def _softmax(logits):
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _probabilities(model, array, rows, batch_size=16):
    """Softmax of a model over the given rows of an array (a stored view or its features)."""
    logits = [
        np.asarray(model(np.asarray(array[rows[i : i + batch_size]]), training=False))
        for i in range(0, len(rows), batch_size)
    ]
    return _softmax(np.concatenate(logits))


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

    def run(self, train_idx, val_idx, seed, out_path):
        """Trains on `train_idx`; stores features and val probabilities; returns accuracies."""
        from reslstm_tf.training.trunk_cache import TrunkSource

        stream = self.stream
        self.trainer.reset(seed)
        source = TrunkSource(stream.clips, stream.views, indices=train_idx, seed=seed)
        self.trainer.fit(source.train_data, labels=source.labels)
        upper = self.trainer.model
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
        self.heads = HeadRunner(config, self.num_classes)
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
    """Runs one planned run; returns (train accuracy or None, val accuracy, epochs)."""
    config, labels = ctx.config, ctx.labels
    train_idx, val_idx = ctx.split(fold)
    if recipe == "logreg":
        features = ctx.streams["rgb"].frozen[0]
        return (*mean_pooled_accuracies(features, labels, train_idx, val_idx), 0)
    if recipe == "finetuned":
        path = ctx.finetuned_path(stream, fold, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        return (*ctx.finetuner(stream).run(train_idx, val_idx, seed, path), config.finetune_epochs)
    if recipe in LATE_FUSIONS:
        rgb_method = stream.split("+")
        rgb, flow = (ctx.finetuned(s, fold, seed, "val_probabilities") for s in rgb_method)
        fused = _fuse(rgb, flow, recipe)
        return None, float(np.mean(fused.argmax(-1) == labels[val_idx])), 0
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
    views = 0 if recipe == "frozen" else config.views
    result = ctx.heads.run(arch, depth, features, labels, train_idx, val_idx, seed, views, fusion)
    return result[0], result[1], config.head_epochs


def run_study(config):
    """Runs (or resumes) every planned run; writes `runs.jsonl` and the report.

    Returns:
        The report dict of `study_report`.
    """
    from tqdm.auto import tqdm

    from reslstm_tf.data import datasets

    config.validate()
    out = pathlib.Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_resumable(config, out / "study_config.json")
    with atomic_write(out / "study_config.json", "w") as handle:
        handle.write(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    videos = datasets.load_dataset("folder", data_dir=config.data_dir, split_file=config.split_file)
    num_classes = len(videos.classes)
    streams = {}
    for stream in config.streams:
        start = time.perf_counter()
        streams[stream] = Stream(config, stream, videos, num_classes)
        _log_timing(out, f"stream {stream}: flow, trunk views and frozen features",
                    time.perf_counter() - start)  # fmt: skip
    labels = np.asarray(streams["rgb"].clips.labels)
    ctx = _Context(config, labels, streams)
    log = RunLog(out / "runs.jsonl")
    plan = plan_study(config)
    todo = [run for run in plan.runs if not log.done(run[0])]
    with tqdm(total=len(plan), initial=len(plan) - len(todo), desc="study", unit="run",
              disable=not config.progress) as bar:  # fmt: skip
        for key, recipe, stream, arch, depth, fold, seed in todo:
            bar.set_postfix_str(key)
            start = time.perf_counter()
            train_acc, val_acc, epochs = _execute(ctx, recipe, stream, arch, depth, fold, seed)
            seconds = time.perf_counter() - start
            train_idx, val_idx = ctx.split(fold)
            log.add({
                "key": key, "recipe": recipe, "stream": stream, "arch": arch, "depth": depth,
                "fold": fold, "seed": seed, "n_train": len(train_idx), "n_val": len(val_idx),
                "epochs": epochs, "train_accuracy": train_acc, "val_accuracy": val_acc,
                "seconds": round(seconds, 2),
            })  # fmt: skip
            bar.update(1)
    from reslstm_tf.experiments.study_report import study_report

    return study_report(out)


# Settings a resumed study may change: they add or skip runs, and change no finished one.
EXTENSIBLE = ("flow_methods", "flow_cache_dir", "seeds", "finetune_seeds", "recipes", "progress")


def _check_resumable(config, path):
    """Refuses to resume a study whose finished runs were made with other settings."""
    if not path.exists():
        return
    stored = json.loads(path.read_text(encoding="utf-8"))
    current = json.loads(json.dumps(dataclasses.asdict(config)))
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
