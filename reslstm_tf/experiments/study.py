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
from reslstm_tf.experiments.config import RNN_ARCHS, AblationError, head_options
from reslstm_tf.experiments.runner import RunLog, run_plan
from reslstm_tf.experiments.study_clips import (
    TTA_OFFSETS,
    clip_from_record,
    clip_tag,
    spec_features,
    tta_views,
)
from reslstm_tf.experiments.study_runs import LATE_FUSIONS, StudyRuns
from reslstm_tf.experiments.study_streams import (  # noqa: F401 - the study's public names
    FinetuneRunner,
    Stream,
    run_head,
    study_heads,
    view_features,
)
from reslstm_tf.files import atomic_write
from reslstm_tf.training.options import TrainOptions

STREAMS = ("rgb", "farneback", "tvl1")
FEATURE_RECIPES = ("frozen", "frozen_aug", "finetuned_features")
# The recipes that run on the features of every clip spec (`StudyConfig.frozen_clips`).
SPEC_RECIPES = ("logreg", "frozen", "frozen_aug")
# The extra clip spec of a study by default: the paper's 16 segments at I3D's native 224 px,
# short videos (all of them here) read with overlapping windows as the study's own clip.
PAPER_CLIP = PRESETS["paper"].replace(short="overlap")


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
        flow_methods: the flow streams ("farneback", "tvl1"); () for RGB only. Default
            Farneback alone: the TV-L1 cache costs about 40 min more here (opt-in).
        flow_cache_dir: the flow caches (default `<out_dir>/flow`; one folder per method).
        clip: the `ClipSpec` of every stream's clips (default `clip_spec.PRESETS["cpu_small"]`:
            T = 4 segments of L = 16 frames at S = 112, short videos 'overlap'); a flow
            stream reads it with its modality and flow method.
        views: training views stored per video.
        trainable_from: the first fine-tuned I3D block.
        folds, seeds, split_seed: stratified `folds`-fold cross-validation x `seeds` seeds.
        finetune_seeds: seeds of the fine-tuning runs (default `seeds`).
        units, depths, dropout: the heads (LSTM units, depths compared, input dropout). Depth
            3 by default (2-4 add 240 head runs; `reslstm-ablate` sweeps depth).
        head_train: the `TrainOptions` of heads on features (default `head_options()`:
            Adam 1e-3, 15 epochs, batch 16); each run's seed replaces its seed.
        finetune_preset: the head fine-tuned with the I3D blocks.
        finetune_train: the `TrainOptions` of the fine-tuning runs (default
            `finetune_train_options()`: Adam 3e-4, 8 epochs, batch 8).
        frozen_clips: further `ClipSpec`s whose frozen features the recipes of
            `SPEC_RECIPES` also run on (default `PAPER_CLIP`: 16 segments at 224 px);
            rows record each spec's tag (`study_clips.clip_tag`).
        frozen_clip_views: training views per further spec ("frozen_aug" there needs 1+).
        frozen_clip_depths: the head depths run on further specs (default `depths`).
        tta_offsets: the test-time views' window shifts (`study_clips.tta_views`; the first
            is 0, the eval view); () for no test-time views. tta_flips: each also mirrored.
        recipes: which recipes to run (default all).
        progress: show progress bars.
    """

    data_dir: str
    split_file: str
    out_dir: str
    flow_methods: tuple = ("farneback",)
    flow_cache_dir: str | None = None
    clip: ClipSpec = PRESETS["cpu_small"]
    views: int = 3
    trainable_from: str = "Mixed_5b"
    folds: int = 5
    seeds: int = 3
    split_seed: int = 0
    finetune_seeds: int | None = None
    units: int = 256
    depths: tuple = (3,)
    dropout: float = 0.5
    head_train: TrainOptions = dataclasses.field(default_factory=head_options)
    finetune_preset: str = "res3"
    finetune_train: TrainOptions = dataclasses.field(default_factory=finetune_train_options)
    frozen_clips: tuple = (PAPER_CLIP,)
    frozen_clip_views: int = 0
    frozen_clip_depths: tuple | None = None
    tta_offsets: tuple = TTA_OFFSETS
    tta_flips: bool = True
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
        tags = [self.clip_tag, *(clip_tag(spec) for spec in self.frozen_clips)]
        if len(set(tags)) != len(tags):
            raise AblationError(f"clip specs need distinct tags (size, segments). Received: {tags}")
        try:
            self.tta_view_list()
        except ValueError as error:
            raise AblationError(str(error)) from None

    @property
    def clip_tag(self):
        """The tag of the study's own clip spec, e.g. "i3d112_t4"."""
        return clip_tag(self.clip)

    @property
    def clips(self):
        """{tag: `ClipSpec`} of every clip spec of the study, its own first."""
        return {clip_tag(spec): spec for spec in (self.clip, *self.frozen_clips)}

    def tta_view_list(self):
        """The test-time views (`study_clips.TtaView`s), [] without TTA."""
        return tta_views(self.tta_offsets, self.tta_flips) if self.tta_offsets else []

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
        for name in ("flow_methods", "depths", "recipes", "tta_offsets", "frozen_clip_depths"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        if "frozen_clips" in values:
            values["frozen_clips"] = tuple(clip_from_record(c) for c in values["frozen_clips"])
        elif record:  # a study made before clip specs were a dimension had none
            values["frozen_clips"] = ()
        if "tta_offsets" not in values and record:
            values["tta_offsets"] = ()
        return cls(**values)


def run_key(recipe, clip, stream, arch, depth, fold, seed):
    """The identity of a run in `runs.jsonl`."""
    return f"{recipe}|{clip}|{stream}|{arch}{depth}|fold{fold}|seed{seed}"


@dataclasses.dataclass
class _Plan:
    """The study's runs: (key, recipe, clip, stream, arch, depth, fold, seed) in order."""

    runs: list

    def __len__(self):
        return len(self.runs)


def plan_study(config):
    """Every run of the study, cheap and independent ones first, one head config together.

    The recipes of `SPEC_RECIPES` run on the study's clip and on every further clip spec
    (`frozen_clips`, at `frozen_clip_depths`; "frozen_aug" there only with training views).
    """
    depths = [(arch, depth) for arch in RNN_ARCHS for depth in config.depths]
    spec_depths = [(arch, depth) for arch in RNN_ARCHS
                   for depth in (config.frozen_clip_depths or config.depths)]  # fmt: skip
    preset = config.finetune_preset
    ft_head = [("res" if preset.startswith("res") else "lstm", int(preset[-1]))]
    seeds = range(config.seeds)
    ft_seeds = range(config.finetune_seeds or config.seeds)
    main, others = config.clip_tag, [clip_tag(spec) for spec in config.frozen_clips]
    groups = []
    if "logreg" in config.recipes:
        groups.append(("logreg", main, "rgb", [("logreg", 0)], seeds))
    frozen = [r for r in ("frozen", "frozen_aug") if r in config.recipes]
    spec_frozen = [r for r in frozen if r == "frozen" or config.frozen_clip_views]
    # The fine-tuning head first on every stream, then what depends on fine-tuning, then
    # the other depths: a study stopped early has the main comparisons.
    groups += [(r, main, stream, ft_head, seeds) for r in frozen for stream in config.streams]
    if "finetuned" in config.recipes:
        groups += [("finetuned", main, stream, ft_head, ft_seeds) for stream in config.streams]
    for method in config.flow_methods:
        for recipe in ("mid_product", *LATE_FUSIONS):
            if recipe in config.recipes:
                groups.append((recipe, main, f"rgb+{method}", ft_head, ft_seeds))
    if "finetuned_features" in config.recipes:
        groups.append(("finetuned_features", main, "rgb", depths, ft_seeds))
    for tag in others:  # the further specs' features are computed when first needed
        if "logreg" in config.recipes:
            groups.append(("logreg", tag, "rgb", [("logreg", 0)], seeds))
        groups += [(r, tag, "rgb", spec_depths, seeds) for r in spec_frozen]
    groups += [(r, main, "rgb", depths, seeds) for r in frozen]
    runs, planned = [], set()
    for recipe, clip, stream, heads, run_seeds in groups:
        for arch, depth in heads:
            for fold in range(config.folds):
                for seed in run_seeds:
                    key = run_key(recipe, clip, stream, arch, depth, fold, seed)
                    if key not in planned:
                        planned.add(key)
                        runs.append((key, recipe, clip, stream, arch, depth, fold, seed))
    return _Plan(runs)


def run_study(config):
    """Runs (or resumes) every planned run; writes `runs.jsonl` and the report.

    The runs go through the experiments' one runner (`reslstm_tf.experiments.runner`:
    `run_plan` over the plan, heads by its `HeadRunner`).

    Returns:
        The report dict of `study_results` (by clip spec, with TTA and ensembles).
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
        _log_timing(out, f"stream {stream}: flow, trunk views, TTA views and frozen features",
                    time.perf_counter() - start)  # fmt: skip
    labels = np.asarray(streams["rgb"].clips.labels)
    runs = StudyRuns(config, labels, streams, _SpecFeatures(config, videos, out))
    plan = [(key, tuple(run)) for key, *run in plan_study(config).runs]
    run_plan(plan, runs.row, RunLog(out / "runs.jsonl"), progress=config.progress,
             desc="study")  # fmt: skip
    from reslstm_tf.experiments.study_results import study_results

    return study_results(out, config)


class _SpecFeatures(dict):
    """{clip tag: frozen features} of the further clip specs, computed when first asked for
    (`study_clips.spec_features`, stored in `features/rgb_frozen_<tag>.npy`)."""

    def __init__(self, config, videos, out):
        super().__init__()
        self.config, self.videos, self.out = config, videos, out

    def __missing__(self, tag):
        config = self.config
        start = time.perf_counter()
        self[tag] = spec_features(
            config.clips[tag], self.videos, config.data_dir,
            self.out / "features" / f"rgb_frozen_{tag}.npy", views=config.frozen_clip_views,
            seed=config.finetune_train.seed, progress=config.progress,
        )  # fmt: skip
        _log_timing(self.out, f"frozen features at {tag}", time.perf_counter() - start)
        return self[tag]


# Settings a resumed study may change: they add or skip runs, and change no finished one.
EXTENSIBLE = ("flow_methods", "flow_cache_dir", "seeds", "finetune_seeds", "recipes", "progress",
              "head_train.progress", "finetune_train.progress", "depths", "frozen_clips",
              "frozen_clip_depths")  # fmt: skip


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
