"""Ablations of the Res-LSTM head on cached segment features: baselines, depth, width, T, fusion.

The protocol of Lakhal et al. (2018, sections 4.2-4.4), run on a small feature cache on a CPU:

* **Validation inside the data.** Every accuracy is measured on clips held out from the
  cached set, never on the training clips: stratified k-fold cross-validation (`"cv"`,
  mean and std over folds x seeds) or one fixed stratified hold-out split (`"holdout"`,
  mean and std over seeds) for the expensive sweeps. Splits use a fixed split seed, so
  every architecture sees exactly the same folds; the training seed only changes the
  initialisation and dropout.
* **Fixed training budget.** Adam, a fixed number of epochs, no early stopping (nothing
  ever looks at the validation clips before the final evaluation).
* **Baselines** on the same features: mean-pooled features + multinomial logistic
  regression (`LogisticRegression`, numpy), plain stacked LSTMs and Res-LSTMs of depth 2-4.
* **Sweeps**: hidden size H per depth (LSTM vs Res-LSTM), number of LSTM steps T (step t
  reads segment `step_segment_map(T, K)[t]`), and two-stream fusions (sum, product,
  weighted at mid and late level) beside RGB-only and flow-only.

`run_ablation` plans the runs of the requested experiments (runs shared by experiments are
run once), runs them with a cost-weighted progress bar, and writes `runs.csv`,
`results.json`, `results.md` and PNG plots into the output folder.
"""

import csv
import dataclasses
import json
import math
import pathlib
import time

import numpy as np

from reslstm_tf.data.sampling import step_segment_map

EXPERIMENTS = ("baselines", "depth", "hidden", "steps", "fusion")
PROTOCOLS = ("cv", "holdout")
FUSIONS = (("sum", "mid"), ("product", "mid"), ("weighted", "mid"))
FUSIONS += (("sum", "late"), ("product", "late"), ("weighted", "late"))
RNN_ARCHS = ("lstm", "res")
CSV_FIELDS = (
    "experiment",
    "arch",
    "depth",
    "hidden",
    "T",
    "modality",
    "fusion",
    "level",
    "protocol",
    "seed",
    "fold",
    "n_train",
    "n_val",
    "epochs",
    "train_accuracy",
    "val_accuracy",
    "train_time_s",
)


class AblationError(ValueError):
    """An ablation was asked for with missing inputs or invalid settings."""


# --------------------------------------------------------------------------- splits


def stratified_folds(labels, num_folds, seed=0):
    """Splits clip indices into `num_folds` disjoint folds with the class balance preserved.

    Each class's indices are shuffled with `seed` and dealt round-robin over the folds, so
    every fold holds floor or ceil of n_c / num_folds clips of class c.

    Args:
        labels: int array (N,) of class indices.
        num_folds: int >= 2, at most the size of the smallest class.
        seed: int, the split seed.

    Returns:
        A list of `num_folds` sorted int64 arrays of indices into `labels`.
    """
    labels = np.asarray(labels)
    if isinstance(num_folds, bool) or not isinstance(num_folds, (int, np.integer)):
        raise AblationError(f"num_folds must be an int >= 2. Received: {num_folds!r}")
    counts = np.bincount(labels) if labels.size else np.zeros(0, np.int64)
    smallest = int(counts[counts > 0].min()) if counts.any() else 0
    if num_folds < 2 or num_folds > smallest:
        raise AblationError(
            f"num_folds must be in [2, {smallest}] (the smallest class has {smallest} clips). "
            f"Received: num_folds={num_folds}"
        )
    rng = np.random.default_rng(seed)
    folds = [[] for _ in range(num_folds)]
    offset = 0
    for label in np.flatnonzero(counts):
        members = rng.permutation(np.flatnonzero(labels == label))
        for position, index in enumerate(members):
            folds[(position + offset) % num_folds].append(index)
        offset += len(members)  # Start the next class where this one stopped: even fold sizes.
    return [np.sort(np.asarray(fold, np.int64)) for fold in folds]


def stratified_holdout(labels, fraction=0.2, seed=0):
    """Returns (train, val) index arrays: a fixed stratified hold-out of `fraction` per class.

    Args:
        labels: int array (N,) of class indices.
        fraction: float in (0, 1), share of each class held out (at least one clip).
        seed: int, the split seed.

    Returns:
        (train_indices, val_indices), sorted int64 arrays, disjoint, covering all clips.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise AblationError(f"holdout fraction must be in (0, 1). Received: {fraction!r}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = min(max(1, int(round(fraction * len(members)))), len(members) - 1)
        if count < 1:
            raise AblationError(f"class {label} has a single clip; it cannot be held out")
        val.extend(members[:count])
    val = np.sort(np.asarray(val, np.int64))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


def splits_for(protocol, labels, folds=5, holdout_fraction=0.2, split_seed=0):
    """Returns the list of (fold id, train indices, val indices) of a protocol."""
    if protocol == "cv":
        parts = stratified_folds(labels, folds, split_seed)
        everything = np.arange(len(labels))
        return [(i, np.setdiff1d(everything, part), part) for i, part in enumerate(parts)]
    if protocol == "holdout":
        train, val = stratified_holdout(labels, holdout_fraction, split_seed)
        return [(0, train, val)]
    raise AblationError(f"protocol must be one of {PROTOCOLS}. Received: {protocol!r}")


# ---------------------------------------------------------------- logistic regression


class LogisticRegression:
    """Multinomial logistic regression with L2 penalty, fitted by full-batch gradient descent.

    Minimises ``mean_i CE(softmax(W x_i + b), y_i) + l2 / 2 * ||W||^2`` (bias not
    penalised) on standardised inputs (the mean and std of the training set) with
    Nesterov momentum. The objective is strictly convex, so the fit is deterministic and
    does not depend on a seed.

    Args:
        l2: float >= 0, the penalty on the weights. Defaults to 1e-2.
        learning_rate: float, the gradient step. Defaults to 0.5.
        steps: int, gradient steps. Defaults to 2000.
        tolerance: stop when the gradient's max-norm falls below this. Defaults to 1e-7.
    """

    def __init__(self, l2=1e-2, learning_rate=0.5, steps=2000, tolerance=1e-7):
        if l2 < 0:
            raise AblationError(f"l2 must be >= 0. Received: l2={l2!r}")
        self.l2 = float(l2)
        self.learning_rate = float(learning_rate)
        self.steps = int(steps)
        self.tolerance = float(tolerance)
        self.weights = self.bias = self.mean = self.scale = None

    def _standardise(self, x):
        return (np.asarray(x, np.float64) - self.mean) / self.scale

    def objective_and_gradients(self, z, y, weights, bias):
        """Returns (loss, dW, db) of the penalised objective on standardised inputs `z`."""
        logits = z @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        n = len(y)
        loss = -log_p[np.arange(n), y].mean() + 0.5 * self.l2 * np.sum(weights**2)
        delta = np.exp(log_p)
        delta[np.arange(n), y] -= 1.0
        delta /= n
        return loss, z.T @ delta + self.l2 * weights, delta.sum(axis=0)

    def fit(self, x, y, num_classes=None):
        """Fits the model to features `x` (N, D) and int labels `y` (N,); returns self."""
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.int64)
        if x.ndim != 2 or len(x) != len(y):
            raise AblationError(f"x must be (N, D) and y (N,). Received x{x.shape} and y{y.shape}")
        num_classes = int(num_classes or y.max() + 1)
        self.mean = x.mean(axis=0)
        self.scale = x.std(axis=0) + 1e-6
        z = self._standardise(x)
        weights = np.zeros((x.shape[1], num_classes))
        bias = np.zeros(num_classes)
        velocity_w, velocity_b = np.zeros_like(weights), np.zeros_like(bias)
        momentum = 0.9
        # A safe step for the smooth part: the Hessian of the mean CE is bounded by
        # ||Z||_2^2 / (2N) (softmax curvature <= 1/2), plus l2.
        lipschitz = np.linalg.norm(z, 2) ** 2 / (2 * len(z)) + self.l2
        step = min(self.learning_rate, 1.0 / lipschitz)
        for _ in range(self.steps):
            look_w = weights + momentum * velocity_w
            look_b = bias + momentum * velocity_b
            _, grad_w, grad_b = self.objective_and_gradients(z, y, look_w, look_b)
            velocity_w = momentum * velocity_w - step * grad_w
            velocity_b = momentum * velocity_b - step * grad_b
            weights, bias = weights + velocity_w, bias + velocity_b
            if max(np.abs(grad_w).max(), np.abs(grad_b).max()) < self.tolerance:
                break
        self.weights, self.bias = weights, bias
        return self

    def predict_proba(self, x):
        """Returns class probabilities (N, C) for features `x` (N, D)."""
        if self.weights is None:
            raise AblationError("LogisticRegression.predict_proba called before fit")
        logits = self._standardise(x) @ self.weights + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, x):
        """Returns the predicted class index (N,) for features `x` (N, D)."""
        return self.predict_proba(x).argmax(axis=1)


# ------------------------------------------------------------------------- features


@dataclasses.dataclass
class FeatureSet:
    """The cached features of one or two modalities, aligned by clip id.

    Attributes:
        ids: list of N clip ids (sorted).
        labels: int64 (N,).
        rgb: float32 (N, K, d_f).
        flow: float32 (N, K, d_f) or None.
        class_names: list of class names from the cache metadata (may be empty).
        metadata: the RGB cache's metadata dict.
    """

    ids: list
    labels: np.ndarray
    rgb: np.ndarray
    flow: np.ndarray = None
    class_names: list = dataclasses.field(default_factory=list)
    metadata: dict = dataclasses.field(default_factory=dict)


def _read_cache(cache_dir, flag_name):
    from reslstm_tf.data.feature_cache import FeatureCacheError, read_features

    path = pathlib.Path(cache_dir)
    if not path.is_dir():
        raise AblationError(
            f"{flag_name}={cache_dir} is not a folder; give a feature cache written by "
            "reslstm-extract (a folder with index.json and features-*.tfrecord)"
        )
    try:
        records = read_features(path)
    except FeatureCacheError as error:
        raise AblationError(f"{flag_name}={cache_dir}: {error}") from None
    if not records:
        raise AblationError(f"{flag_name}={cache_dir} holds no clips")
    shapes = {r["features"].shape for r in records}
    if len(shapes) != 1:
        raise AblationError(
            f"{flag_name}={cache_dir} holds clips with different feature shapes {sorted(shapes)}; "
            "the ablation needs K segments of d_f features for every clip"
        )
    return {r["id"]: r for r in records}


def load_feature_set(features_dir, flow_features_dir=None):
    """Reads an RGB feature cache (and optionally a flow cache) into a `FeatureSet`.

    Args:
        features_dir: RGB feature cache folder (from `reslstm-extract`).
        flow_features_dir: optional flow feature cache holding the same clip ids.

    Returns:
        A `FeatureSet`.

    Raises:
        AblationError: a folder is missing or not a cache, or the caches disagree.
    """
    from reslstm_tf.data.feature_cache import read_index

    rgb = _read_cache(features_dir, "features_dir")
    ids = sorted(rgb)
    labels = np.asarray([rgb[i]["label"] for i in ids], np.int64)
    metadata = read_index(features_dir)["metadata"]
    flow = None
    if flow_features_dir:
        flow_records = _read_cache(flow_features_dir, "flow_features_dir")
        missing = sorted(set(ids) ^ set(flow_records))
        if missing:
            raise AblationError(
                f"flow_features_dir={flow_features_dir} and features_dir={features_dir} hold "
                f"different clips ({len(missing)} differ, e.g. {missing[:3]}); finish the "
                "flow extraction or pass the matching caches"
            )
        flow_labels = np.asarray([flow_records[i]["label"] for i in ids])
        if not np.array_equal(flow_labels, labels):
            raise AblationError("the RGB and flow caches give different labels to some clips")
        flow = np.stack([flow_records[i]["features"] for i in ids]).astype(np.float32)
    return FeatureSet(
        ids=ids,
        labels=labels,
        rgb=np.stack([rgb[i]["features"] for i in ids]).astype(np.float32),
        flow=flow,
        class_names=list(metadata.get("classes", [])),
        metadata=metadata,
    )


def select_steps(features, num_steps):
    """Returns features (N, K, d) resampled to T steps: step t reads segment sigma(t)."""
    return features[:, step_segment_map(num_steps, features.shape[1])]


# ----------------------------------------------------------------------------- runs


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

    def cost(self, feature_dim=1024):
        """Relative training cost, proportional to the LSTM multiply-adds."""
        if self.arch == "logreg":
            return 0.01
        streams = 2 if self.level == "late" else 1
        width = self.hidden * (feature_dim + self.hidden) + (self.depth - 1) * 2 * self.hidden**2
        return streams * self.steps * width / (16 * 256 * 1280) + 0.3


@dataclasses.dataclass
class TrainConfig:
    """Training hyper-parameters shared by every recurrent run.

    Attributes:
        epochs: fixed number of epochs (no early stopping).
        batch_size: mini-batch size.
        learning_rate: Adam learning rate.
        dropout: dropout before the classifier.
    """

    epochs: int = 15
    batch_size: int = 16
    learning_rate: float = 1e-3
    dropout: float = 0.5


def _build(spec, num_classes, feature_dim, dropout, masking):
    from reslstm_tf.models import build_single_stream, build_two_stream

    preset = f"{'res' if spec.arch == 'res' else 'lstm'}{min(max(spec.depth, 2), 4)}"
    overrides = dict(
        units=spec.hidden,
        num_layers=spec.depth,
        residual=spec.arch == "res",
        num_steps=spec.steps,
        dropout=dropout,
    )
    if spec.modality == "two_stream":
        return build_two_stream(
            num_classes,
            preset,
            fusion=spec.fusion,
            level=spec.level,
            rgb_dim=feature_dim,
            flow_dim=feature_dim,
            masking=masking,
            **overrides,
        )
    return build_single_stream(
        num_classes, preset, feature_dim=feature_dim, masking=masking, **overrides
    )


class _ModelCache:
    """Compiles one model per config and re-initialises it per run (one graph trace per config).

    Re-initialising copies every variable of a freshly built model (built after
    `keras.utils.set_random_seed(seed)`, so its initial weights and dropout seed state
    depend on the seed only) and zeroes the optimizer state, so a run gives the same
    result as training a newly built model with that seed.
    """

    def __init__(self, num_classes, feature_dim, train_config):
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.train_config = train_config
        self._key = None
        self._model = None

    def model_for(self, spec, masking):
        import keras

        key = (spec.config, masking)
        if key != self._key:
            keras.backend.clear_session(free_memory=False)
        keras.utils.set_random_seed(spec.seed)
        fresh = _build(spec, self.num_classes, self.feature_dim, self.train_config.dropout, masking)
        if key != self._key:
            fresh.compile(
                optimizer=keras.optimizers.Adam(self.train_config.learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=False,
            )
            self._key, self._model = key, fresh
            return fresh
        model = self._model
        for target, source in zip(model.variables, fresh.variables):
            target.assign(source)
        # Fresh optimizer state: step counter and moments to zero, the learning rate kept.
        optimizer = model.optimizer
        for variable in optimizer.variables:
            if variable is not optimizer._learning_rate:
                variable.assign(np.zeros(variable.shape, variable.dtype))
        return model


def _inputs(spec, data, indices):
    if spec.modality == "two_stream":
        return {
            "rgb": select_steps(data.rgb[indices], spec.steps),
            "flow": select_steps(data.flow[indices], spec.steps),
        }
    source = data.flow if spec.modality == "flow" else data.rgb
    return select_steps(source[indices], spec.steps)


def _accuracy(model, inputs, labels, batch_size=32):
    """Accuracy of `model` on `inputs`, padded to whole batches (one predict trace per model)."""
    count = len(labels)
    pad = -count % batch_size

    def padded(x):
        return np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad else x

    inputs = (
        {k: padded(v) for k, v in inputs.items()} if isinstance(inputs, dict) else padded(inputs)
    )
    logits = model.predict(inputs, batch_size=batch_size, verbose=0)[:count]
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def train_and_evaluate(spec, data, train_idx, val_idx, train_config, cache=None):
    """Trains one run on `train_idx` and returns (train accuracy, val accuracy, seconds).

    The validation clips are used only for the final accuracy.
    """
    start = time.perf_counter()
    y_train, y_val = data.labels[train_idx], data.labels[val_idx]
    num_classes = int(data.labels.max()) + 1
    if spec.arch == "logreg":
        source = data.flow if spec.modality == "flow" else data.rgb
        model = LogisticRegression().fit(source[train_idx].mean(axis=1), y_train, num_classes)
        train_acc = float(np.mean(model.predict(source[train_idx].mean(axis=1)) == y_train))
        val_acc = float(np.mean(model.predict(source[val_idx].mean(axis=1)) == y_val))
        return train_acc, val_acc, time.perf_counter() - start
    cache = cache or _ModelCache(num_classes, data.rgb.shape[-1], train_config)
    # Masking only matters for zero-padded clips; skipping it when none exist is faster.
    masking = bool(np.any(np.all(data.rgb == 0, axis=-1)))
    model = cache.model_for(spec, masking)
    x_train, x_val = _inputs(spec, data, train_idx), _inputs(spec, data, val_idx)
    model.fit(
        x_train,
        y_train,
        epochs=train_config.epochs,
        batch_size=train_config.batch_size,
        shuffle=True,
        verbose=0,
    )
    train_acc = _accuracy(model, x_train, y_train)
    val_acc = _accuracy(model, x_val, y_val)
    return train_acc, val_acc, time.perf_counter() - start


# ------------------------------------------------------------------------- planning


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
    steps: tuple = (5, 15, 25, 35)
    base_hidden: int = 256
    base_depth: int = 3
    base_steps: int = 16
    fusion_arch: str = "res"
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def validate(self, has_flow):
        """Raises AblationError naming the bad setting and what is allowed."""
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
        if self.sweep_protocol not in PROTOCOLS:
            raise AblationError(
                f"sweep_protocol must be one of {PROTOCOLS}. Received: {self.sweep_protocol!r}"
            )
        if self.fusion_arch not in RNN_ARCHS:
            raise AblationError(
                f"fusion_arch must be one of {RNN_ARCHS}. Received: {self.fusion_arch!r}"
            )
        for name in ("seeds", "sweep_seeds", "base_hidden", "base_depth", "base_steps"):
            _positive(name, getattr(self, name))
        for name in ("epochs", "batch_size"):
            _positive(name, getattr(self.train, name))
        if not self.train.learning_rate > 0:
            raise AblationError(
                f"learning_rate must be > 0. Received: {self.train.learning_rate!r}"
            )
        if not 0.0 <= self.train.dropout < 1.0:
            raise AblationError(f"dropout must be in [0, 1). Received: {self.train.dropout!r}")
        for name in ("hidden", "depths", "steps"):
            values = getattr(self, name)
            if not values:
                raise AblationError(f"{name} must list at least one positive integer")
            for value in values:
                _positive(name, value)


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise AblationError(f"{name} must be a positive integer. Received: {name}={value!r}")


def plan_runs(config, has_flow):
    """Returns {experiment: [RunSpec, ...]} for the requested experiments."""
    config.validate(has_flow)
    plan = {}

    def specs(arch, depth, hidden, steps, protocol, seeds, modality="rgb", fusion="", level=""):
        folds = config.folds if protocol == "cv" else 1
        return [
            RunSpec(arch, depth, hidden, steps, modality, fusion, level, protocol, seed, fold)
            for seed in range(seeds)
            for fold in range(folds)
        ]

    base = dict(hidden=config.base_hidden, steps=config.base_steps)
    if "baselines" in config.experiments:
        runs = specs("logreg", 0, 0, config.base_steps, "cv", config.seeds)
        for arch in RNN_ARCHS:
            for depth in config.depths:
                runs += specs(arch, depth, protocol="cv", seeds=config.seeds, **base)
        plan["baselines"] = runs
    if "depth" in config.experiments:
        plan["depth"] = [
            spec
            for arch in RNN_ARCHS
            for depth in config.depths
            for spec in specs(arch, depth, protocol="cv", seeds=config.seeds, **base)
        ]
    sweep = dict(protocol=config.sweep_protocol, seeds=config.sweep_seeds)
    if "hidden" in config.experiments:
        plan["hidden"] = [
            spec
            for hidden in config.hidden
            for depth in config.depths
            for arch in RNN_ARCHS
            for spec in specs(arch, depth, hidden, config.base_steps, **sweep)
        ]
    if "steps" in config.experiments:
        plan["steps"] = [
            spec
            for steps in config.steps
            for arch in RNN_ARCHS
            for spec in specs(arch, config.base_depth, config.base_hidden, steps, **sweep)
        ]
    if "fusion" in config.experiments:
        arch, depth = config.fusion_arch, config.base_depth
        runs = []
        for modality in ("rgb", "flow"):
            runs += specs(arch, depth, modality=modality, **base, **sweep)
        for fusion, level in FUSIONS:
            runs += specs(
                arch, depth, modality="two_stream", fusion=fusion, level=level, **base, **sweep
            )
        plan["fusion"] = runs
    return plan


# ------------------------------------------------------------------------ reporting


def _label(arch, depth):
    return "logreg (mean-pooled)" if arch == "logreg" else f"{arch}{depth}"


def summarise(rows):
    """Groups run rows by config; returns a list of dicts with mean/std/n of val accuracy."""
    groups = {}
    for row in rows:
        key = tuple(
            row[k]
            for k in ("arch", "depth", "hidden", "T", "modality", "fusion", "level", "protocol")
        )
        groups.setdefault(key, []).append(row)
    summary = []
    for key, members in groups.items():
        acc = np.asarray([m["val_accuracy"] for m in members], np.float64)
        summary.append(
            dict(
                zip(
                    ("arch", "depth", "hidden", "T", "modality", "fusion", "level", "protocol"), key
                ),
                mean=float(acc.mean()),
                std=float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                n=len(acc),
                n_val=int(members[0]["n_val"]),
                train_accuracy=float(np.mean([m["train_accuracy"] for m in members])),
                train_time_s=float(np.sum([m["train_time_s"] for m in members])),
                experiments=sorted({e for m in members for e in m["experiment"].split(";")}),
            )
        )
    return summary


def _error(entry):
    """Error bar: std over runs, or the binomial standard error for a single hold-out run."""
    if entry["n"] > 1:
        return entry["std"]
    p = entry["mean"]
    return math.sqrt(p * (1 - p) / max(entry["n_val"], 1))


def _pick(summary, experiment, **filters):
    return [
        s
        for s in summary
        if experiment in s["experiments"] and all(s[k] == v for k, v in filters.items())
    ]


def select_best(summary):
    """Returns the best recurrent RGB head by mean cross-validated accuracy (ties: fewer units).

    Only configs evaluated with the "cv" protocol compete, so the choice rests on the
    most folds x seeds; among equal means the smaller, shallower head wins.
    """
    candidates = [
        s
        for s in summary
        if s["arch"] in RNN_ARCHS and s["modality"] == "rgb" and s["protocol"] == "cv"
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda s: (round(s["mean"], 6), -s["hidden"], -s["depth"]))


def _pct(entry):
    if entry["n"] == 1:
        return f"{100 * entry['mean']:.1f}"
    return f"{100 * entry['mean']:.1f} ± {100 * entry['std']:.1f}"


def _protocol_text(config, protocol):
    if protocol == "cv":
        return (
            f"stratified {config.folds}-fold cross-validation x {config.seeds} seeds "
            f"(split seed {config.split_seed}); mean ± std over the {config.folds * config.seeds}"
            " runs"
        )
    return (
        f"fixed stratified hold-out ({config.holdout_fraction:.0%} of each class, split seed "
        f"{config.split_seed}) x {config.sweep_seeds} seed(s); mean ± std over seeds "
        "(± binomial standard error when there is one seed)"
    )


def results_markdown(summary, config, data_info, timings):
    """Returns the Markdown report of a finished ablation."""
    lines = ["# Res-LSTM ablation results", ""]
    lines += [
        f"- data: {data_info['num_clips']} clips, {data_info['num_classes']} classes "
        f"({', '.join(data_info['class_names'])}), features {data_info['feature_shape']}",
        f"- training: Adam lr {config.train.learning_rate}, {config.train.epochs} epochs, batch "
        f"{config.train.batch_size}, dropout {config.train.dropout}, no early stopping",
        f"- total time: {timings['total_s'] / 60:.1f} min for {timings['runs']} runs",
        "",
    ]
    if any(e in config.experiments for e in ("baselines", "depth")):
        lines += ["## Baselines (RGB)", "", f"Protocol: {_protocol_text(config, 'cv')}.", ""]
        lines += [f"Hidden size {config.base_hidden}, T = {config.base_steps}.", ""]
        lines += ["| model | val accuracy (%) | runs | train accuracy (%) |", "|---|---|---|---|"]
        rows = _pick(summary, "baselines") or _pick(summary, "depth")
        order = {"logreg": 0, "lstm": 1, "res": 2}
        for s in sorted(rows, key=lambda s: (order[s["arch"]], s["depth"])):
            lines.append(
                f"| {_label(s['arch'], s['depth'])} | {_pct(s)} | {s['n']} | "
                f"{100 * s['train_accuracy']:.1f} |"
            )
        lines.append("")
    if "hidden" in config.experiments:
        lines += [
            "## Hidden size",
            "",
            f"Protocol: {_protocol_text(config, config.sweep_protocol)}.",
            f"T = {config.base_steps}. Plot: `hidden_size.png`.",
            "",
        ]
        header = "| depth | model | " + " | ".join(f"H={h}" for h in config.hidden) + " |"
        lines += [header, "|---|---|" + "---|" * len(config.hidden)]
        for depth in config.depths:
            for arch in RNN_ARCHS:
                cells = []
                for hidden in config.hidden:
                    found = _pick(summary, "hidden", arch=arch, depth=depth, hidden=hidden)
                    cells.append(f"{100 * found[0]['mean']:.1f}" if found else "-")
                lines.append(f"| {depth} | {arch} | " + " | ".join(cells) + " |")
        lines.append("")
    if "steps" in config.experiments:
        lines += [
            "## Number of LSTM steps T",
            "",
            f"Protocol: {_protocol_text(config, config.sweep_protocol)}.",
            f"Depth {config.base_depth}, hidden {config.base_hidden}; step t reads segment "
            "`step_segment_map(T, K)[t]` of the K cached segments. Plot: `steps.png`.",
            "",
        ]
        header = "| model | " + " | ".join(f"T={t}" for t in config.steps) + " |"
        lines += [header, "|---|" + "---|" * len(config.steps)]
        for arch in RNN_ARCHS:
            cells = []
            for steps in config.steps:
                found = _pick(summary, "steps", arch=arch, T=steps)
                cells.append(_pct(found[0]) if found else "-")
            lines.append(f"| {arch}{config.base_depth} | " + " | ".join(cells) + " |")
        lines.append("")
    if "fusion" in config.experiments:
        lines += [
            "## Two-stream fusion",
            "",
            f"Protocol: {_protocol_text(config, config.sweep_protocol)}.",
            f"Head {config.fusion_arch}{config.base_depth}, hidden {config.base_hidden}, "
            f"T = {config.base_steps}.",
            "",
            "| input | fusion | level | val accuracy (%) | runs |",
            "|---|---|---|---|---|",
        ]
        rows = _pick(summary, "fusion")
        order = {"rgb": 0, "flow": 1, "two_stream": 2}
        for s in sorted(rows, key=lambda s: (order[s["modality"]], s["level"], s["fusion"])):
            name = {"rgb": "RGB only", "flow": "flow only", "two_stream": "RGB + flow"}
            lines.append(
                f"| {name[s['modality']]} | {s['fusion'] or '-'} | {s['level'] or '-'} | "
                f"{_pct(s)} | {s['n']} |"
            )
        lines.append("")
    best = select_best(summary)
    if best:
        lines += [
            "## Selected head",
            "",
            f"{best['arch']}{best['depth']}, hidden {best['hidden']}: {_pct(best)} % "
            f"({best['protocol']}, {best['n']} runs).",
            "",
        ]
    return "\n".join(lines)


def plot_results(summary, config, out_dir):
    """Writes `hidden_size.png`, `steps.png` and `depth.png` for the experiments that ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = pathlib.Path(out_dir)
    written = []
    styles = {"lstm": ("tab:blue", "o", "LSTM"), "res": ("tab:red", "s", "Res-LSTM")}
    if "hidden" in config.experiments:
        fig, axes = plt.subplots(
            1,
            len(config.depths),
            figsize=(4.2 * len(config.depths), 3.6),
            sharey=True,
            squeeze=False,
        )
        for axis, depth in zip(axes[0], config.depths):
            for arch, (color, marker, label) in styles.items():
                found = sorted(
                    _pick(summary, "hidden", arch=arch, depth=depth), key=lambda s: s["hidden"]
                )
                if not found:
                    continue
                axis.errorbar(
                    [s["hidden"] for s in found],
                    [100 * s["mean"] for s in found],
                    yerr=[100 * _error(s) for s in found],
                    color=color,
                    marker=marker,
                    capsize=3,
                    label=label,
                )
            axis.set_xscale("log", base=2)
            axis.set_xticks(list(config.hidden), [str(h) for h in config.hidden])
            axis.set_title(f"depth {depth}")
            axis.set_xlabel("hidden size H")
            axis.grid(alpha=0.3)
        axes[0][0].set_ylabel("val accuracy (%)")
        axes[0][0].legend()
        fig.suptitle(f"Accuracy vs hidden size ({config.sweep_protocol})")
        fig.tight_layout()
        fig.savefig(out_dir / "hidden_size.png", dpi=90)
        plt.close(fig)
        written.append(out_dir / "hidden_size.png")
    single = [
        ("steps", "T", "steps.png", "number of LSTM steps T", {"hidden": config.base_hidden}),
        ("depth", "depth", "depth.png", "depth L", {"hidden": config.base_hidden}),
    ]
    for experiment, axis_key, file_name, xlabel, filters in single:
        if experiment not in config.experiments:
            continue
        fig, axis = plt.subplots(figsize=(5, 3.6))
        for arch, (color, marker, label) in styles.items():
            found = sorted(
                _pick(summary, experiment, arch=arch, **filters), key=lambda s: s[axis_key]
            )
            axis.errorbar(
                [s[axis_key] for s in found],
                [100 * s["mean"] for s in found],
                yerr=[100 * _error(s) for s in found],
                color=color,
                marker=marker,
                capsize=3,
                label=label,
            )
        axis.set_xlabel(xlabel)
        axis.set_ylabel("val accuracy (%)")
        axis.grid(alpha=0.3)
        axis.legend()
        fig.tight_layout()
        fig.savefig(out_dir / file_name, dpi=90)
        plt.close(fig)
        written.append(out_dir / file_name)
    return written


# ----------------------------------------------------------------------------- main


def run_ablation(
    features_dir, out_dir, config=None, flow_features_dir=None, progress=True, command=None
):
    """Runs the requested ablation experiments and writes their results to `out_dir`.

    Args:
        features_dir: RGB feature cache folder.
        out_dir: output folder (created): runs.csv, results.json, results.md, *.png.
        config: an `AblationConfig`; defaults to `AblationConfig()`.
        flow_features_dir: optional flow feature cache (needed by the fusion experiment).
        progress: show a tqdm progress bar (weighted by each run's estimated cost).
        command: the command line to record in results.json.

    Returns:
        The results dict also written to results.json.
    """
    config = config or AblationConfig()
    if "fusion" in config.experiments and not flow_features_dir:
        config.validate(has_flow=False)  # Fails early, before reading any features.
    data = load_feature_set(features_dir, flow_features_dir)
    plan = plan_runs(config, has_flow=data.flow is not None)
    unique = {}
    for experiment, specs in plan.items():
        for spec in specs:
            unique.setdefault(spec, []).append(experiment)
    # Group runs of one config together (one graph trace each), cheapest configs first.
    order = sorted(unique, key=lambda s: (s.cost(), s.config, s.seed, s.fold))
    splits = {
        protocol: splits_for(
            protocol, data.labels, config.folds, config.holdout_fraction, config.split_seed
        )
        for protocol in {s.protocol for s in order}
    }
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    from tqdm.auto import tqdm

    num_classes = int(data.labels.max()) + 1
    cache = _ModelCache(num_classes, data.rgb.shape[-1], config.train)
    rows = []
    start = time.perf_counter()
    total = sum(s.cost() for s in order)
    bar = tqdm(
        total=round(total, 2),
        disable=not progress,
        unit="cost",
        bar_format="{l_bar}{bar}| {percentage:3.0f}% [{elapsed}<{remaining}] {postfix}",
    )
    csv_path = out_dir / "runs.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for number, spec in enumerate(order, 1):
            fold_id, train_idx, val_idx = splits[spec.protocol][spec.fold]
            name = _label(spec.arch, spec.depth)
            bar.set_postfix_str(
                f"run {number}/{len(order)} {name} H={spec.hidden} T={spec.steps} "
                f"{spec.modality}{'/' + spec.fusion + '-' + spec.level if spec.fusion else ''}"
            )
            train_acc, val_acc, seconds = train_and_evaluate(
                spec, data, train_idx, val_idx, config.train, cache
            )
            row = {
                "experiment": ";".join(unique[spec]),
                "arch": spec.arch,
                "depth": spec.depth,
                "hidden": spec.hidden,
                "T": spec.steps,
                "modality": spec.modality,
                "fusion": spec.fusion,
                "level": spec.level,
                "protocol": spec.protocol,
                "seed": spec.seed,
                "fold": fold_id,
                "n_train": len(train_idx),
                "n_val": len(val_idx),
                "epochs": 0 if spec.arch == "logreg" else config.train.epochs,
                "train_accuracy": round(train_acc, 6),
                "val_accuracy": round(val_acc, 6),
                "train_time_s": round(seconds, 3),
            }
            writer.writerow(row)
            handle.flush()
            rows.append(row)
            bar.update(round(spec.cost(), 2))
    bar.close()
    elapsed = time.perf_counter() - start
    summary = summarise(rows)
    written = plot_results(summary, config, out_dir)
    data_info = {
        "num_clips": len(data.ids),
        "num_classes": num_classes,
        "class_names": data.class_names or [str(i) for i in range(num_classes)],
        "class_counts": np.bincount(data.labels).tolist(),
        "feature_shape": list(data.rgb.shape[1:]),
        "flow": data.flow is not None,
        "metadata": data.metadata,
    }
    timings = {"total_s": round(elapsed, 1), "runs": len(rows)}
    config_dict = dataclasses.asdict(config)
    protocols = {
        "cv": _protocol_text(config, "cv"),
        config.sweep_protocol: _protocol_text(config, config.sweep_protocol),
    }
    results = {
        "command": command,
        "config": config_dict,
        "protocols": protocols,
        "experiment_protocol": {
            e: ("cv" if e in ("baselines", "depth") else config.sweep_protocol) for e in plan
        },
        "data": data_info,
        "timings": timings,
        "summary": summary,
        "best": select_best(summary),
        "plots": [p.name for p in written],
        "csv": csv_path.name,
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out_dir / "results.md").write_text(
        results_markdown(summary, config, data_info, timings) + "\n", encoding="utf-8"
    )
    return results


def train_final(data, arch, depth, hidden, steps, train_config, seed=0):
    """Trains one RGB head on every clip of `data` (no validation) and returns the model.

    The model is built with masking on (the zoo's default), so it handles zero-padded clips.
    """
    import keras

    spec = RunSpec(arch, depth, hidden, steps, "rgb", "", "", "all", seed, 0)
    keras.utils.set_random_seed(seed)
    model = _build(
        spec, int(data.labels.max()) + 1, data.rgb.shape[-1], train_config.dropout, masking=True
    )
    model.compile(
        optimizer=keras.optimizers.Adam(train_config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    model.fit(
        select_steps(data.rgb, steps),
        data.labels,
        epochs=train_config.epochs,
        batch_size=train_config.batch_size,
        shuffle=True,
        verbose=0,
    )
    return model


def cast_weights(model, build_fn, dtype="float16"):
    """Returns a copy of `model` whose variables are stored as `dtype` (for smaller files).

    Args:
        model: the trained model.
        build_fn: a zero-argument function building the same architecture.
        dtype: the storage dtype, e.g. "float16". Layers pinned to float32 (the logits)
            stay float32. `load_weights` into a float32 model casts back.

    Returns:
        The cast model (same layer and variable paths, so its weights load into `model`'s
        architecture).
    """
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)
    try:
        cast = build_fn()
    finally:
        keras.config.set_dtype_policy(previous)
    for target, source in zip(cast.weights, model.weights):
        target.assign(np.asarray(source).astype(target.dtype))
    return cast


def report_from_csv(csv_path, config, out_dir, command=None):
    """Rebuilds results.json/.md and the plots from a (possibly partial) runs.csv.

    Useful when a long ablation was interrupted: every finished run is in the CSV.
    """
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    ints = ("depth", "hidden", "T", "seed", "fold", "n_train", "n_val", "epochs")
    floats = ("train_accuracy", "val_accuracy", "train_time_s")
    for row in rows:
        row.update({k: int(row[k]) for k in ints})
        row.update({k: float(row[k]) for k in floats})
    summary = summarise(rows)
    out_dir = pathlib.Path(out_dir)
    written = plot_results(summary, config, out_dir)
    labels = sorted({r["arch"] for r in rows})
    data_info = {"num_clips": None, "runs": len(rows), "archs": labels}
    timings = {"total_s": round(sum(r["train_time_s"] for r in rows), 1), "runs": len(rows)}
    results = {
        "command": command,
        "config": dataclasses.asdict(config),
        "timings": timings,
        "summary": summary,
        "best": select_best(summary),
        "plots": [p.name for p in written],
        "csv": pathlib.Path(csv_path).name,
        "partial": True,
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results, data_info


def publish_head(
    features_dir,
    results,
    name,
    entry,
    manifest_path=None,
    weights_dir=None,
    dtype="float16",
    seeds=(0, 1, 2),
):
    """Trains the selected head on every clip of a cache and publishes it to a zoo manifest.

    The architecture and training settings come from `results` (the dict `run_ablation`
    returns or its results.json): `results["best"]` and `results["config"]["train"]`.
    One model is trained per seed in `seeds`; the one with the lowest training loss (in
    inference mode, on the training clips: no validation data exists here) is published.
    With `dtype="float16"` the weights are stored as float16 if the float16 copy predicts
    the same class as the float32 model on every clip (checked here; raises otherwise).

    Args:
        features_dir: the RGB feature cache the ablation ran on.
        results: the ablation results dict.
        name: the zoo entry name, `<dataset>_<arch>`.
        entry: the manifest entry without `weights` (see `reslstm_tf.zoo.publish`); its
            `architecture` must describe the selected head.
        manifest_path, weights_dir: as in `reslstm_tf.zoo.publish`.
        dtype: "float32" or "float16", the storage dtype of the weights.
        seeds: the training seeds to try.

    Returns:
        (published entry, info dict with the seed, its training loss and accuracy, the
        float16 check and the training time).
    """
    from reslstm_tf import zoo
    from reslstm_tf.models import build_single_stream

    if dtype not in ("float32", "float16"):
        raise AblationError(f"dtype must be 'float32' or 'float16'. Received: {dtype!r}")
    best = results["best"]
    if not best:
        raise AblationError("results hold no cross-validated recurrent head to publish")
    train_config = TrainConfig(**results["config"]["train"])
    data = load_feature_set(features_dir)
    start = time.perf_counter()
    x = select_steps(data.rgb, best["T"])
    trained = []
    for seed in seeds:
        candidate = train_final(
            data, best["arch"], best["depth"], best["hidden"], best["T"], train_config, seed
        )
        candidate_logits = np.asarray(candidate.predict(x, verbose=0), np.float64)
        shifted = candidate_logits - candidate_logits.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = float(-log_p[np.arange(len(x)), data.labels].mean())
        trained.append((loss, seed, candidate, candidate_logits))
    loss, seed, model, logits = min(trained, key=lambda item: item[0])
    seconds = time.perf_counter() - start
    info = {
        "seed": seed,
        "train_losses": {s: round(item_loss, 4) for item_loss, s, _, _ in trained},
        "train_seconds": round(seconds, 1),
        "train_accuracy_all_clips": float(np.mean(logits.argmax(-1) == data.labels)),
        "dtype": dtype,
    }
    to_save = model
    if dtype == "float16":

        def build():
            return build_single_stream(
                int(data.labels.max()) + 1,
                f"{'res' if best['arch'] == 'res' else 'lstm'}{min(max(best['depth'], 2), 4)}",
                feature_dim=data.rgb.shape[-1],
                units=best["hidden"],
                num_layers=best["depth"],
                residual=best["arch"] == "res",
                num_steps=best["T"],
                dropout=train_config.dropout,
            )

        to_save = cast_weights(model, build, "float16")
        half = np.asarray(to_save.predict(x, verbose=0), np.float32)
        agree = float(np.mean(half.argmax(-1) == logits.argmax(-1)))
        info["float16_prediction_agreement"] = agree
        info["float16_max_logit_difference"] = float(np.abs(half - logits).max())
        if agree < 1.0:
            raise AblationError(
                f"float16 weights change {100 * (1 - agree):.1f}% of the predictions; "
                "publish with dtype='float32'"
            )
    published = zoo.publish(to_save, name, entry, manifest_path, weights_dir)
    return published, info
