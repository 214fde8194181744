"""What a training run is given and gives back: `TrainOptions` and `TrainResult`."""

import dataclasses
import math

import keras

from reslstm_tf.checks import check_choice, check_positive_int
from reslstm_tf.training import setup
from reslstm_tf.training.errors import TrainingInputError


@dataclasses.dataclass
class TrainOptions:
    """How a model is trained: the loop's hyper-parameters (see `Trainer`).

    Attributes:
        epochs: passes over the data.
        batch_size: global batch size (over all replicas); the last partial batch of
            each epoch is dropped. None (the default): fitted to the data by
            `auto_batch_size`, the largest power of two up to 32 that leaves at least 4
            steps an epoch (10 clips: 2; 128 clips or more: 32).
        optimizer: "adam", "sgd" or "adamw", or a `keras.optimizers.Optimizer`
            (created in the strategy scope by the caller).
        learning_rate: initial learning rate.
        schedule: "constant", "cosine" or "step".
        weight_decay: decoupled weight decay.
        momentum: SGD momentum.
        lr_decay_epochs: period of the "step" schedule.
        lr_decay_rate: factor of the "step" schedule.
        seed: seeds weights, dropout and the per-epoch shuffles.
        mixed_precision: "none", "float16" or "bfloat16".
        checkpoint_every_steps: checkpoint every N steps (0: only at epoch ends).
        max_checkpoints: checkpoints to keep (resuming needs only the latest; each
            holds the model and the optimizer slots, 3x the weights with Adam).
        max_steps: stop (with a checkpoint) once the global step reaches it; a later
            run with the same `model_dir` continues.
        log_every_steps: write step summaries every N steps.
        shuffle_buffer: shuffle buffer size; default the dataset size (a full shuffle).
        deterministic: run with `tf.config.experimental.enable_op_determinism()`
            (restored afterwards), so runs and resumed runs are reproducible.
        jit_compile: compile the forward and backward pass with XLA; the gradient
            all-reduce and the update stay outside.
        progress: show a tqdm progress bar (chief only).
        save_worker_weights: non-chief workers also write their final weights to
            `model_dir/workers/<task_type>_<id>/final.weights.h5`.
        restart: delete the checkpoints and outputs of a previous run in model_dir and
            start over (otherwise a run resumes, and refuses changed settings).
        keep_checkpoints: keep the checkpoints (model and optimizer slots, about 3x the
            weights with Adam) once training finished; by default they are deleted after
            the final weights and model are written, and a finished run cannot be continued.
    """

    epochs: int = 10
    batch_size: int | None = None
    optimizer: object = "adam"
    learning_rate: float = 1e-3
    schedule: str = "constant"
    weight_decay: float = 0.0
    momentum: float = 0.9
    lr_decay_epochs: int | None = None
    lr_decay_rate: float = 0.1
    seed: int = 0
    mixed_precision: str = "none"
    checkpoint_every_steps: int = 0
    max_checkpoints: int = 1
    max_steps: int | None = None
    log_every_steps: int = 10
    shuffle_buffer: int | None = None
    deterministic: bool = True
    jit_compile: bool = False
    progress: bool = True
    save_worker_weights: bool = False
    restart: bool = False
    keep_checkpoints: bool = False

    def validate(self):
        """Raises `TrainingInputError` naming the first bad option and what is allowed."""
        for name in ("epochs", "log_every_steps", "max_checkpoints"):
            check_positive_int(name, getattr(self, name), error=TrainingInputError)
        if self.batch_size is not None:
            check_positive_int("batch_size", self.batch_size, error=TrainingInputError)
        check_positive_int(
            "checkpoint_every_steps", self.checkpoint_every_steps, True, TrainingInputError
        )
        for name in ("max_steps", "shuffle_buffer"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name), error=TrainingInputError)
        for name, low in (("learning_rate", None), ("weight_decay", 0), ("momentum", 0)):
            _check_number(name, getattr(self, name), low)
        if self.lr_decay_epochs is not None:
            check_positive_int("lr_decay_epochs", self.lr_decay_epochs, error=TrainingInputError)
        _check_number("lr_decay_rate", self.lr_decay_rate, None, high=1)
        setup.mixed_precision_policy(self.mixed_precision)
        if isinstance(self.optimizer, str):
            check_choice("optimizer", self.optimizer, setup.OPTIMIZERS, TrainingInputError)
        check_choice("schedule", self.schedule, setup.SCHEDULES, TrainingInputError)


MAX_AUTO_BATCH = 32
MIN_AUTO_STEPS = 4


def auto_batch_size(num_examples, replicas=1):
    """The batch of `batch_size=None`: a power of two <= 32 with >= 4 steps an epoch.

    A multiple of `replicas` (at least `replicas`), so every replica gets the same share;
    a batch larger than a small folder would leave no step, and one step an epoch makes
    Adam's early steps large enough to diverge (10 clips at batch 8: a loss of 12 by epoch 3).
    """
    batch = MAX_AUTO_BATCH
    while batch > 1 and num_examples // batch < MIN_AUTO_STEPS:
        batch //= 2
    return max(replicas, batch // replicas * replicas)


def _check_number(name, value, low, high=None):
    """Raises `TrainingInputError` unless `value` is a number >= `low` (None: > 0), <= `high`."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    number = number and math.isfinite(value)  # inf and nan train to a NaN loss
    if number and (value >= low if low is not None else value > 0):
        if high is None or value <= high:
            return
    kind = "a finite positive number" if low is None else f"a finite number >= {low}"
    kind += f" and <= {high}" if high is not None else ""
    raise TrainingInputError(f"{name} must be {kind}. Received: {name}={value!r}")


@dataclasses.dataclass
class TrainResult:
    """What `Trainer.fit` returns.

    Attributes:
        model: the trained `keras.Model`.
        history: per-epoch dicts (epoch, loss, accuracy, learning_rate, steps).
        global_step: int, optimizer steps taken in total (across restarts).
        steps_per_second: float, training speed of this process (after the first step).
        resumed_from: the checkpoint the run resumed from, or None.
        is_chief: bool, this process writes summaries and the final weights.
    """

    model: keras.Model
    history: list
    global_step: int
    steps_per_second: float
    resumed_from: str | None
    is_chief: bool
