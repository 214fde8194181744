"""The run folder as training uses it: created, locked, cleared, or checked before resuming."""

import contextlib

from absl import logging

from reslstm_tf import runs
from reslstm_tf.files import folder_lock
from reslstm_tf.training.errors import TrainingInputError


def check_model_dir(model_dir):
    """Creates `model_dir`, checks it is writable and returns its `RunDir`."""
    run = runs.RunDir(model_dir)
    try:
        return run.create()
    except OSError as error:
        raise TrainingInputError(
            f"model_dir {str(run.path)!r} is not a writable folder ({error.strerror or error}); "
            "pass a folder you can create and write to"
        ) from error


def lock(run, is_chief=True, task_type=None, task_id=0):
    """Holds the run folder's lock (a non-chief worker: its own lock file); None: no lock.

    Raises:
        FolderBusyError: another process trains in the folder.
    """
    if run is None:
        return contextlib.nullcontext()
    name = runs.LOCK_FILE if is_chief else f"{runs.LOCK_FILE}-{task_type}_{task_id}"
    return folder_lock(run.path, "model_dir", lock_name=name)


def start_or_resume(run, config, restart=False, is_chief=True):
    """Before a run is built: `restart` clears the folder, else a resumed run must match it.

    Args:
        run: the `RunDir`, or None (nothing to do).
        config: the new run's `train_config.json` record (or None: not compared).
        restart: delete the previous run's files (the chief does) and start over.
        is_chief: this process owns the folder's shared files.

    Raises:
        TrainingInputError: the folder holds a checkpoint of a run whose recorded
            settings that alter the result (`runs.config_changes`) differ from `config`, or
            a finished run whose checkpoints were deleted (nothing to resume).
    """
    if run is None:
        return
    if restart:
        removed = run.clear() if is_chief else []
        if removed:
            logging.warning("restart: deleted %s in %s", ", ".join(removed), run.path)
        return
    finished = run.model_file.is_file() and not run.latest_checkpoint()
    if config is None or not run.config_file.is_file() or not (run.latest_checkpoint() or finished):
        return
    changes = runs.config_changes(run.config(), config)
    if changes:
        listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes)
        raise TrainingInputError(
            f"model_dir {str(run.path)!r} holds a run with other settings, which resuming "
            f"would mix with these ({listed}); run with the recorded values to resume, "
            "restart=True (--restart) to delete that run and start over, or use another "
            "model_dir"
        )
    if finished:  # its checkpoints were deleted when it finished (keep_checkpoints=False)
        raise TrainingInputError(
            f"model_dir {str(run.path)!r} holds a finished run ({runs.FINAL_MODEL}) whose "
            "checkpoints were deleted; evaluate it, use another model_dir, or run with "
            "--restart to train it again (--keep_checkpoints keeps them to continue a run)"
        )
