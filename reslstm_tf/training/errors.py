"""The errors training raises, and the translation of full-disk failures into one of them."""

import contextlib
import os

import tensorflow as tf


class TrainingInputError(ValueError):
    """Training input (data, flags, output folder) that cannot be used; raised before training."""


class TrainingDivergedError(ValueError):
    """The loss became NaN or infinite: training stopped, no final weights were written.

    The checkpoint on disk is the last one written before the loss was non-finite. A
    ValueError: the settings (learning rate, weight decay) or the data are the user's.
    """


# A mean cross-entropy above this is divergence, not learning: it gives the true class a
# probability of e^-10000, reachable only with exploded logits (a learning rate of 1e30 gives
# 1e31 while the weights are still finite).
MAX_LOSS = 1e4


def rising_loss(history, factor=2.0):
    """A warning if the last epoch's loss is over `factor` x the lowest and over the first's.

    A loss that climbs like that (0.7, 0.6, 12 on a small folder) means the learning rate is
    too high for the data: the run is diverging, and its model often predicts one class. A
    loss that wobbles near zero (0.7, 0.09, 0.17) is still below where it started: no warning.
    """
    losses = [entry["loss"] for entry in history]
    if len(losses) < 2 or not losses[-1] > factor * min(losses[:-1]):
        return None
    if not losses[-1] > losses[0]:
        return None
    return (
        f"the loss rose to {losses[-1]:.4g} in epoch {len(losses)} from {min(losses[:-1]):.4g}: "
        "training is diverging; lower --learning_rate (or use a larger --batch_size)"
    )


def collapse_warning(predictions, labels, class_names=None):
    """A warning if videos of several classes are all predicted as one class, else None.

    Args:
        predictions: int (N,) predicted classes of the training videos.
        labels: int (N,) their true classes.
        class_names: optional names of the classes, to name the one predicted.
    """
    predicted, truth = set(int(p) for p in predictions), set(int(y) for y in labels)
    if len(predicted) != 1 or len(truth) < 2:
        return None
    (only,) = predicted
    name = class_names[only] if class_names is not None and only < len(class_names) else only
    return (
        f"the trained model predicts {name!r} for every one of the {len(labels)} training "
        f"videos ({len(truth)} classes): it has collapsed onto one class; lower "
        "--learning_rate (or train longer) and run again with --restart"
    )


def diverged(loss, step, epoch, latest):
    """The `TrainingDivergedError` of a non-finite `loss` (None: of the weights) at `step`."""
    what = "the weights hold NaN or infinite values" if loss is None else f"the loss is {loss:.4g}"
    kept = (
        f"the last checkpoint with a finite loss, {os.path.basename(latest)}, is kept"
        if latest
        else "no checkpoint had been written"
    )
    return TrainingDivergedError(
        f"training diverged: {what} at step {step} (epoch {epoch + 1}); stopped, "
        f"no final weights written, {kept}. Lower --learning_rate (or --weight_decay) and run "
        "again with --restart"
    )


class TrainingWriteError(OSError):
    """The model_dir cannot be written mid-run (disk full, read-only, no permission).

    The checkpoints written before stay readable; the message names the folder, the
    cause and the last intact checkpoint, and the same command resumes once fixed.
    """


_DISK_PROBLEMS = (
    ("No space left", "the disk is full (no space left on device)"),
    ("Disk quota", "the disk quota is exceeded"),
    ("Read-only file system", "the file system is read-only"),
    ("Permission denied", "permission denied"),
)


@contextlib.contextmanager
def disk_errors(model_dir, checkpoint_dir=None):
    """Turns write failures (OSError, TensorFlow I/O errors) into a `TrainingWriteError`.

    Args:
        model_dir: the run folder, named in the message.
        checkpoint_dir: the folder whose latest checkpoint the message names, if any.
    """
    try:
        yield
    except (OSError, tf.errors.OpError) as error:
        text = str(error)
        problem = next((p for needle, p in _DISK_PROBLEMS if needle in text), None)
        if problem is None:
            raise
        latest = tf.train.latest_checkpoint(str(checkpoint_dir)) if checkpoint_dir else None
        kept = (
            f"the last checkpoint, {os.path.basename(latest)}, is intact"
            if latest
            else "no checkpoint had been written yet"
        )
        raise TrainingWriteError(
            f"cannot write to model_dir {os.fspath(model_dir)}: {problem}. Training stopped; "
            f"{kept}. Free space (or fix the folder) and run the same command to resume."
        ) from None
