"""What an ablation runs: its settings, the runs they plan, and the error it raises.

Heads train with one options type, `reslstm_tf.training.TrainOptions` (`head_options` gives
the experiments' defaults), the same the study and `reslstm-train` use.
"""

import dataclasses

from reslstm_tf.checks import check_choice, check_positive_int
from reslstm_tf.training.errors import TrainingInputError
from reslstm_tf.training.options import TrainOptions

EXPERIMENTS = ("baselines", "depth", "hidden", "steps", "fusion")
PROTOCOLS = ("cv", "holdout")
FUSIONS = (("sum", "mid"), ("product", "mid"), ("weighted", "mid"))
FUSIONS += (("sum", "late"), ("product", "late"), ("weighted", "late"))
RNN_ARCHS = ("lstm", "res")


class AblationError(ValueError):
    """An ablation was asked for with missing inputs or invalid settings."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run: a model config on one split with one seed.

    `arch` is "logreg", "lstm" or "res"; `modality` "rgb", "flow" or "two_stream" (then
    `fusion` and `level` name the fusion).
    """

    arch: str
    depth: int
    hidden: int
    steps: int
    modality: str
    fusion: str
    level: str
    protocol: str
    seed: int
    fold: int

    @property
    def config(self):
        """The run's config key without the seed and fold (what results are grouped by)."""
        return (
            self.arch,
            self.depth,
            self.hidden,
            self.steps,
            self.modality,
            self.fusion,
            self.level,
            self.protocol,
        )

    def cost(self, feature_dim):
        """Relative training cost, proportional to the LSTM multiply-adds on d_f features."""
        if self.arch == "logreg":
            return 0.01
        streams = 2 if self.level == "late" else 1
        width = self.hidden * (feature_dim + self.hidden) + (self.depth - 1) * 2 * self.hidden**2
        return streams * self.steps * width / (16 * 256 * 1280) + 0.3


def head_options(**changes):
    """The `TrainOptions` of heads on features: Adam 1e-3, 15 epochs, batch 16, no bar.

    A fixed number of epochs and no early stopping: nothing looks at the validation clips
    before a run's final score.
    """
    return dataclasses.replace(
        TrainOptions(epochs=15, batch_size=16, learning_rate=1e-3, progress=False), **changes
    )


def check_head_training(options, dropout):
    """Raises `AblationError` naming a bad training option of the heads, or a bad dropout."""
    try:
        options.validate()
    except TrainingInputError as error:
        raise AblationError(str(error)) from None
    if not options.learning_rate > 0:
        raise AblationError(f"learning_rate must be > 0. Received: {options.learning_rate!r}")
    if not 0.0 <= dropout < 1.0:
        raise AblationError(f"dropout must be in [0, 1). Received: {dropout!r}")


def options_from_record(record):
    """(`TrainOptions`, dropout) of a results.json "config" (old records' "train" held dropout).

    Fields a record does not state keep `head_options`' values; unknown ones are ignored.
    """
    train = dict((record or {}).get("train") or {})
    dropout = (record or {}).get("dropout", train.pop("dropout", 0.5))
    known = {field.name for field in dataclasses.fields(TrainOptions)}
    return head_options(**{k: v for k, v in train.items() if k in known}), dropout


@dataclasses.dataclass
class AblationConfig:
    """What to run (see `reslstm-ablate --help` for the meaning of each field)."""

    experiments: tuple = EXPERIMENTS
    seeds: int = 3
    folds: int = 5
    sweep_protocol: str = "holdout"
    sweep_seeds: int = 1
    holdout_fraction: float = 0.2
    split_seed: int = 0
    hidden: tuple = (256, 512, 1024)  # 2048: ~30 min more on 2 CPU cores (docs)
    depths: tuple = (2, 3, 4)
    hidden_depths: tuple = ()  # the hidden-size sweep's depths; () means every one of `depths`
    steps: tuple = (5, 15, 25, 35)
    base_hidden: int = 256
    base_depth: int = 3
    base_steps: int = 16
    fusion_arch: str = "res"
    train: TrainOptions = dataclasses.field(default_factory=head_options)
    dropout: float = 0.5

    def validate(self, has_flow):
        """Raises AblationError naming the bad setting and what is allowed."""
        self._validate_experiments(has_flow)
        check_choice("sweep_protocol", self.sweep_protocol, PROTOCOLS, error=AblationError)
        check_choice("fusion_arch", self.fusion_arch, RNN_ARCHS, error=AblationError)
        for name in ("seeds", "sweep_seeds", "base_hidden", "base_depth", "base_steps"):
            check_positive_int(name, getattr(self, name), error=AblationError)
        check_head_training(self.train, self.dropout)
        for name in ("hidden", "depths", "steps", "hidden_depths"):
            values = getattr(self, name)
            if not values and name != "hidden_depths":
                raise AblationError(f"{name} must list at least one positive integer")
            for value in values:
                check_positive_int(name, value, error=AblationError)

    @property
    def sweep_hidden_depths(self):
        """The depths the hidden-size sweep runs at: `hidden_depths`, or else `depths`."""
        return tuple(self.hidden_depths or self.depths)

    def _validate_experiments(self, has_flow):
        unknown = [e for e in self.experiments if e not in EXPERIMENTS]
        if unknown or not self.experiments:
            raise AblationError(
                f"experiments must be a non-empty subset of {', '.join(EXPERIMENTS)}. "
                f"Received: {', '.join(self.experiments) or '(none)'}"
            )
        if "fusion" in self.experiments and not has_flow:
            raise AblationError(
                "the fusion experiment needs flow features: pass --flow_features_dir (a cache "
                "from reslstm-extract --modality=flow) or drop 'fusion' from --experiments"
            )

    def protocol_of(self, experiment):
        """Returns the protocol an experiment is measured with ("cv" or `sweep_protocol`).

        Under "cv" every experiment runs on the same folds (`folds`, `split_seed`) and seeds
        0, 1, ...: baselines and depth with `seeds` of them, the sweeps with `sweep_seeds`,
        so a sweep's runs pair with each other (and with the depth runs of the same config
        and seed) fold by fold and seed by seed.
        """
        return "cv" if experiment in ("baselines", "depth") else self.sweep_protocol


# ------------------------------------------------------------------------- planning


def _specs(
    config, arch, depth, hidden, steps, protocol, seeds, modality="rgb", fusion="", level=""
):
    """Returns the runs of one model config: every seed, and every fold under "cv"."""
    folds = config.folds if protocol == "cv" else 1
    return [
        RunSpec(arch, depth, hidden, steps, modality, fusion, level, protocol, seed, fold)
        for seed in range(seeds)
        for fold in range(folds)
    ]


def _plan_depth(config):
    base = dict(hidden=config.base_hidden, steps=config.base_steps)
    return [
        spec
        for arch in RNN_ARCHS
        for depth in config.depths
        for spec in _specs(config, arch, depth, protocol="cv", seeds=config.seeds, **base)
    ]


def _plan_baselines(config):
    logreg = _specs(config, "logreg", 0, 0, config.base_steps, "cv", config.seeds)
    return logreg + _plan_depth(config)


def _plan_hidden(config):
    sweep = dict(protocol=config.sweep_protocol, seeds=config.sweep_seeds)
    return [
        spec
        for hidden in config.hidden
        for depth in config.sweep_hidden_depths
        for arch in RNN_ARCHS
        for spec in _specs(config, arch, depth, hidden, config.base_steps, **sweep)
    ]


def _plan_steps(config):
    sweep = dict(protocol=config.sweep_protocol, seeds=config.sweep_seeds)
    return [
        spec
        for steps in config.steps
        for arch in RNN_ARCHS
        for spec in _specs(config, arch, config.base_depth, config.base_hidden, steps, **sweep)
    ]


def _plan_fusion(config):
    arch, depth = config.fusion_arch, config.base_depth
    head = dict(hidden=config.base_hidden, steps=config.base_steps)
    head.update(protocol=config.sweep_protocol, seeds=config.sweep_seeds)
    runs = []
    for modality in ("rgb", "flow"):
        runs += _specs(config, arch, depth, modality=modality, **head)
    for fusion, level in FUSIONS:
        runs += _specs(
            config, arch, depth, modality="two_stream", fusion=fusion, level=level, **head
        )
    return runs


_PLANNERS = {
    "baselines": _plan_baselines,
    "depth": _plan_depth,
    "hidden": _plan_hidden,
    "steps": _plan_steps,
    "fusion": _plan_fusion,
}


def plan_runs(config, has_flow):
    """Returns {experiment: [RunSpec, ...]} for the requested experiments.

    Args:
        config: an `AblationConfig` (validated here).
        has_flow: whether flow features are available (the fusion experiment needs them).

    Returns:
        A dict in `EXPERIMENTS` order; a run shared by experiments appears in each.
    """
    config.validate(has_flow)
    return {e: _PLANNERS[e](config) for e in EXPERIMENTS if e in config.experiments}
