"""Training: the `Trainer` (set-up, step, epoch, checkpoints, resume) and the runs built on it.

* `trainer.py`: `Trainer`;
* `options.py`: `TrainOptions` (the loop's hyper-parameters) and `TrainResult`;
* `run.py`: `RunConfig` and `run_training()`, the library behind `reslstm-train`, and
  `train()` (a Trainer in one call);
* `run_folder.py`: the run folder as training uses it (lock, restart, resume checks);
* `setup.py`: strategy, dtype policy, learning-rate schedule and optimizer;
* `inputs.py`: checks of a dataset against the model, and each epoch's batches;
* `errors.py`: `TrainingInputError`, `TrainingWriteError`, `TrainingDivergedError`;
* `demo.py`: the `reslstm-demo` smoke test.
"""

from reslstm_tf.training.errors import (
    TrainingDivergedError,
    TrainingInputError,
    TrainingWriteError,
)
from reslstm_tf.training.options import TrainOptions, TrainResult
from reslstm_tf.training.run import RunConfig, run_training, train
from reslstm_tf.training.setup import MIXED_PRECISION, OPTIMIZERS, SCHEDULES, STRATEGIES
from reslstm_tf.training.trainer import Trainer

__all__ = [
    "MIXED_PRECISION",
    "OPTIMIZERS",
    "SCHEDULES",
    "STRATEGIES",
    "RunConfig",
    "TrainOptions",
    "TrainResult",
    "Trainer",
    "TrainingDivergedError",
    "TrainingInputError",
    "TrainingWriteError",
    "run_training",
    "train",
]
