"""The training loop: one `Trainer` for every `tf.distribute` strategy, with checkpoints and resume.

`Trainer.fit` runs `strategy.run` over `strategy.experimental_distribute_dataset`, so the
same code trains on one device, on several local devices (`MirroredStrategy`) and on
several hosts (`MultiWorkerMirroredStrategy`, configured by `TF_CONFIG`), where Keras 3
`model.fit` does not work. The loss is the one `model.compile` users get
(`SparseCategoricalCrossentropy(from_logits=True)`), averaged over the *global* batch.

Resume is exact: every `checkpoint_every_steps` steps and at the end of each epoch a
`tf.train.CheckpointManager` writes the model variables (including the dropout RNG
state), the optimizer variables (including its step counter), the global step, the
epoch, the running loss and accuracy sums of the current epoch and the per-epoch
history (`history.json` is a copy, rewritten from the checkpoint on resume). The order
of the examples depends only on `(seed, epoch)`, so a restarted run rebuilds the
epoch's batches and skips the ones already consumed; a run killed at any point and
restarted ends with the same weights and the same history as an uninterrupted one.
The reliability tests kill it with a real SIGKILL (`reslstm_tf.faults`,
`RESLSTM_FAULT=point:N`, the N-th time the point is reached) at:

* ``train_step``: after a step, before anything of it is saved;
* ``checkpoint_written``: checkpoint files written, not yet recorded by the manager;
* ``checkpoint_saved``: checkpoint recorded, `history.json` not yet rewritten;
* ``epoch_end``: an epoch finished, before its checkpoint;
* ``final_model_staged``: the final `.keras` model written beside `model.keras`, not yet
  renamed to it.

With `model_dir=None` nothing is written: the in-memory use of the ablation harness,
which trains many small models of one architecture with one `Trainer`, calling
`reset(seed)` between runs instead of tracing a new training step each time.

Input: an unbatched `tf.data.Dataset` of `(features, label)` pairs, `features` a
float32 `(T, d_f)` tensor (or `(T, ...)` of any rank, e.g. clips) or a dict
`{"rgb": ..., "flow": ...}`, the same as numpy arrays `fit(x, y)`, or `fit(dataset_fn)`
where `dataset_fn(epoch)` gives each epoch its own data (`epoch_dataset`).

A run in a folder holds the folder's lock while it trains (a second training there is
refused), refuses to resume with changed settings that alter the result, and
`restart=True` starts over (`reslstm_tf.training.run_folder`).
"""

import contextlib
import dataclasses
import json
import math
import shutil

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from reslstm_tf import runs
from reslstm_tf.checks import check_positive_int
from reslstm_tf.faults import fault_point
from reslstm_tf.precision import dtype_policy
from reslstm_tf.training import errors, run_folder, setup
from reslstm_tf.training.errors import TrainingInputError, disk_errors
from reslstm_tf.training.inputs import (
    as_dataset,
    check_labels,
    check_shapes,
    epoch_batches,
    model_input_shapes,
)
from reslstm_tf.training.options import TrainOptions, TrainResult, auto_batch_size


class Trainer:
    """Trains one model under any strategy; checkpoints and resumes when given a model_dir.

    The model, the optimizer and the traced training step are made by the first `fit`
    (which knows the data). If `model_dir` holds a checkpoint, that `fit` resumes from
    it; a finished run is not trained further. Everything is checked before the first
    step.

    Args:
        model_fn: callable with no arguments returning a new `keras.Model` (logits
            out); called inside the strategy scope, under the dtype policy.
        num_classes: int, number of classes C.
        model_dir: the run folder (`reslstm_tf.runs.RunDir`: checkpoints, summaries,
            history, final weights and model), or None to write nothing.
        strategy: a `tf.distribute.Strategy`, a name from `STRATEGIES`, or None
            (the default strategy).
        config: optional dict recorded in `train_config.json` (chief, with model_dir).
        options: a `TrainOptions`; keyword arguments override its fields.

    Example:

        trainer = Trainer(lambda: build_single_stream(5, "res2"), num_classes=5,
                          model_dir=None, epochs=3, batch_size=16, progress=False)
        for seed in range(3):
            trainer.reset(seed)
            trainer.fit(x_train, y_train)
            print(trainer.evaluate(x_val, y_val))
    """

    def __init__(
        self, model_fn, *, num_classes, model_dir=None, strategy=None, config=None, options=None,
        **kwargs,
    ):  # fmt: skip
        self.options = dataclasses.replace(options or TrainOptions(), **kwargs)
        self.options.validate()
        self.num_classes = check_positive_int("num_classes", num_classes, error=TrainingInputError)
        if strategy is None or isinstance(strategy, str):
            strategy = setup.make_strategy(strategy or "default")
        self.strategy = strategy
        self.model_fn = model_fn
        self.config = config
        self.run = None if model_dir is None else run_folder.check_model_dir(model_dir)
        self.task_type, self.task_id, self.is_chief = setup.task_info(strategy)
        replicas = strategy.num_replicas_in_sync
        if self.options.batch_size is not None and self.options.batch_size % replicas:
            raise TrainingInputError(
                f"batch_size={self.options.batch_size} must be divisible by the number of "
                f"replicas ({replicas})"
            )
        self.seed = self.options.seed
        self.model = self.optimizer = self.resumed_from = self._dataset_fn = None
        self.history, self.global_step, self.steps_per_epoch = [], 0, None

    # ------------------------------------------------------------------------ set-up

    def _plan(self, num_examples):
        """Sets the run's length from N (changeable later only in memory, constant rate).

        A `batch_size` of None becomes `auto_batch_size(N)` here, once, for the whole run.
        """
        if self.options.batch_size is None:
            replicas = self.strategy.num_replicas_in_sync
            auto = auto_batch_size(num_examples, replicas)
            self.options = dataclasses.replace(self.options, batch_size=auto)
        batch_size = self.options.batch_size
        steps_per_epoch = num_examples // batch_size
        if steps_per_epoch == 0:
            raise TrainingInputError(
                f"batch_size={batch_size} is larger than the dataset ({num_examples} examples); "
                f"use batch_size <= {num_examples}"
            )
        if self.model is not None and steps_per_epoch != self.steps_per_epoch:
            if self.run is not None or self.options.schedule != "constant":
                raise TrainingInputError(
                    f"this Trainer was set up for {self.steps_per_epoch} steps per epoch, but "
                    f"the data gives {steps_per_epoch}; make a new Trainer"
                )
            self._steps_per_epoch_var.assign(steps_per_epoch)
        self.num_examples, self.steps_per_epoch = num_examples, steps_per_epoch
        self.total_steps = self.options.epochs * steps_per_epoch

    def _policy(self):
        return dtype_policy(setup.mixed_precision_policy(self.options.mixed_precision))

    def _make_optimizer(self):
        opts = self.options
        if not isinstance(opts.optimizer, str):
            return opts.optimizer
        rate = setup.make_learning_rate(
            opts.learning_rate,
            opts.schedule,
            self.total_steps,
            self.steps_per_epoch,
            opts.lr_decay_epochs,
            opts.lr_decay_rate,
        )
        return setup.make_optimizer(
            opts.optimizer, rate, opts.weight_decay, opts.momentum, opts.mixed_precision
        )

    def _build(self, dataset):
        """Makes the model, the optimizer, the training state and the traced step."""
        keras.utils.set_random_seed(self.seed)
        with self._policy(), self.strategy.scope():
            self.model = self.model_fn()
            check_shapes(dataset, model_input_shapes(self.model))
            self.optimizer = self._make_optimizer()
            self.optimizer.build(self.model.trainable_variables)
            self._step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self._epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self._steps_per_epoch_var = tf.Variable(
                self.steps_per_epoch, dtype=tf.int64, trainable=False
            )
            self._loss_fn = keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction=None
            )
        # The running sums of the current epoch (loss, correct, examples) and the history
        # of the finished epochs travel with the checkpoint, so an epoch interrupted mid-way
        # reports the loss of an uninterrupted one and history.json can always be rewritten
        # to agree with the checkpoint it resumes from.
        self._totals_var = tf.Variable(
            [0.0, 0.0, 0.0], dtype=tf.float64, trainable=False, name="epoch_totals"
        )
        self._history_var = tf.Variable("[]", dtype=tf.string, trainable=False, name="history")
        self._initial_optimizer = [np.array(v.numpy()) for v in self.optimizer.variables]
        self._sums, self._last_saved = [0.0, 0.0, 0], -1
        self._make_checkpoint()
        self._make_train_step()
        self._predict_step = tf.function(lambda x: self.model(x, training=False))

    def _make_checkpoint(self):
        self._core = dict(
            model_variables=runs.checkpoint_slots(self.model.variables),
            optimizer_variables=runs.checkpoint_slots(self.optimizer.variables),
            step=self._step_var,
            epoch=self._epoch_var,
            steps_per_epoch=self._steps_per_epoch_var,
        )
        self._checkpoint = tf.train.Checkpoint(
            **self._core, epoch_totals=self._totals_var, history=self._history_var
        )
        self._manager = self._checkpoint_dir = None
        if self.run is None:
            return
        if self.is_chief:
            self._checkpoint_dir = self.run.checkpoint_dir
        else:
            self._checkpoint_dir = self.run.worker_checkpoint_dir(self.task_type, self.task_id)
        self._manager = tf.train.CheckpointManager(
            self._checkpoint,
            str(self._checkpoint_dir),
            max_to_keep=self.options.max_checkpoints,
            checkpoint_name=runs.CHECKPOINT_NAME,
        )
        # Runs after the checkpoint files are written, before the manager records them.
        self._write_options = tf.train.CheckpointOptions(
            experimental_write_callbacks=[lambda: fault_point("checkpoint_written")]
        )

    # ---------------------------------------------------------------------- one step

    def _forward_backward(self, features, labels):
        with tf.GradientTape() as tape:
            logits = self.model(features, training=True)
            per_example = self._loss_fn(labels, logits)
            loss = tf.nn.compute_average_loss(
                per_example, global_batch_size=self.options.batch_size
            )
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            opt = self.optimizer
            scaled = opt.scale_loss(loss) if hasattr(opt, "scale_loss") else loss
        grads = tape.gradient(scaled, self.model.trainable_variables)
        return logits, per_example, grads

    def _replica_step(self, features, labels):
        labels = tf.cast(labels, tf.int32)
        logits, per_example, grads = self._gradients(features, labels)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))
        return tf.reduce_sum(per_example), correct

    def _distributed_step(self, iterator):
        features, labels = next(iterator)
        loss_sum, correct = self.strategy.run(self._replica_step, args=(features, labels))
        total = tf.distribute.ReduceOp.SUM
        return (
            self.strategy.reduce(total, loss_sum, axis=None),
            self.strategy.reduce(total, correct, axis=None),
        )

    def _make_train_step(self):
        self._gradients = self._forward_backward
        if self.options.jit_compile:
            self._gradients = tf.function(self._forward_backward, jit_compile=True)
        self._train_step = tf.function(self._distributed_step)

    def learning_rate(self):
        """Returns the learning rate the optimizer uses for its next step."""
        value = self.optimizer.learning_rate
        return float(value.numpy() if hasattr(value, "numpy") else value)

    # ------------------------------------------------------------------ checkpoint state

    def _restore(self):
        """Restores the latest checkpoint of model_dir, if any; returns its path or None."""
        latest = self.run.latest_checkpoint() if self.run is not None else None
        if not latest:
            return None
        saved = {name.split("/")[0] for name, _ in tf.train.list_variables(latest)}
        if "history" in saved:
            self._checkpoint.restore(latest).assert_existing_objects_matched()
            self.history = json.loads(self._history_var.numpy().decode("utf-8"))
            loss, correct, seen = (float(v) for v in self._totals_var.numpy())
            self._sums = [loss, correct, int(seen)]
        else:
            # A checkpoint written before the history moved into it.
            tf.train.Checkpoint(**self._core).restore(latest).assert_existing_objects_matched()
            epoch = int(self._epoch_var.numpy())
            self.history = [e for e in self.run.history() if e["epoch"] <= epoch]
        self.global_step = self._last_saved = int(self._step_var.numpy())
        logging.warning("resuming from checkpoint %s at step %d", latest, self.global_step)
        saved_steps = int(self._steps_per_epoch_var.numpy())
        if saved_steps != self.steps_per_epoch:
            raise TrainingInputError(
                f"model_dir {str(self.run.path)!r} holds a run with {saved_steps} steps per "
                f"epoch, but this run has {self.steps_per_epoch} ({self.num_examples} examples, "
                f"batch_size={self.options.batch_size}); resume with the same data and batch "
                "size or use a new model_dir"
            )
        return latest

    def _check_finite(self, loss=None):
        """Raises `TrainingDivergedError` if `loss` (a step's sum) or a weight is not finite."""
        if loss is None and all(np.isfinite(v.numpy()).all() for v in self.model.trainable_weights):
            return
        latest = self._manager.latest_checkpoint if self._manager is not None else None
        mean = None if loss is None else loss / self.options.batch_size
        step = self.global_step
        raise errors.diverged(mean, step, (step - 1) // self.steps_per_epoch, latest)

    def _save_checkpoint(self):
        if self._manager is None:
            return
        self._check_finite()  # a checkpoint never holds a diverged model
        self._totals_var.assign(self._sums)
        self._history_var.assign(json.dumps(self.history))
        self._manager.save(checkpoint_number=self.global_step, options=self._write_options)
        if not self.is_chief:
            shutil.rmtree(self._checkpoint_dir, ignore_errors=True)
        fault_point("checkpoint_saved")
        self._last_saved = self.global_step

    def _write_run_files(self):
        """Chief: history.json caught up with a resumed checkpoint, and train_config.json."""
        if self.run is None or not self.is_chief:
            return
        if self.resumed_from:
            # A run killed after a checkpoint, before history.json caught up with it.
            self.run.write_history(self.history)
        if self.config is not None:
            record = dict(
                self.config,
                num_examples=self.num_examples,
                steps_per_epoch=self.steps_per_epoch,
                batch_size_used=self.options.batch_size,  # batch_size None: auto_batch_size
            )
            self.run.write_config(record)

    def _save_final(self):
        if self.run is None:
            return
        self._check_finite()  # no final weights of a diverged model
        if self.is_chief:
            runs.save_final(
                self.model,
                self.run.model_file,
                before_rename=lambda: fault_point("final_model_staged"),
            )
            if not self.options.keep_checkpoints:  # the model and optimizer state: 3x weights
                shutil.rmtree(self._checkpoint_dir, ignore_errors=True)
        elif self.options.save_worker_weights:
            runs.save_final(self.model, self.run.worker_weights_file(self.task_type, self.task_id))

    def _disk_errors(self):
        if self.run is None:
            return contextlib.nullcontext()
        return disk_errors(self.run.path, self._checkpoint_dir)

    # ------------------------------------------------------------------------ the loop

    def _writer(self):
        """Returns the summary writer: TensorBoard files for the chief of a run, else None."""
        if self.run is None or not self.is_chief:
            return None
        return tf.summary.create_file_writer(str(self.run.summary_dir))

    def _progress_bar(self):
        if not (self.options.progress and self.is_chief):
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.total_steps,
            initial=self.global_step,
            unit="step",
            desc="train",
            dynamic_ncols=True,
        )

    def _one_step(self, iterator, epoch, epoch_end, bar):
        """Trains on one global batch and does what the step's number asks for."""
        opts = self.options
        loss_sum, correct = self._train_step(iterator)
        self.global_step += 1
        step = self.global_step
        self._step_var.assign(step)
        fault_point("train_step")
        loss_sum, correct = float(loss_sum), float(correct)
        if not math.isfinite(loss_sum) or loss_sum > errors.MAX_LOSS * opts.batch_size:
            self._check_finite(loss_sum)  # raised before this update is checkpointed or saved
        sums = self._sums
        sums[0], sums[1], sums[2] = sums[0] + loss_sum, sums[1] + correct, sums[2] + opts.batch_size
        self._timer.tick()
        if self._summaries and (step % opts.log_every_steps == 0 or step == epoch_end):
            tf.summary.scalar("loss", loss_sum / opts.batch_size, step=step)
            tf.summary.scalar("accuracy", correct / opts.batch_size, step=step)
            tf.summary.scalar("learning_rate", self.learning_rate(), step=step)
        # A step checkpoint at the epoch's end waits for the epoch count.
        every = opts.checkpoint_every_steps
        if every and step % every == 0 and step != epoch_end:
            self._save_checkpoint()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(
                epoch=epoch + 1,
                loss=f"{sums[0] / sums[2]:.4f}",
                acc=f"{sums[1] / sums[2]:.3f}",
            )

    def _finish_epoch(self, epoch):
        loss, correct, seen = self._sums
        entry = {
            "epoch": epoch + 1,
            "loss": loss / seen,
            "accuracy": correct / seen,
            "learning_rate": self.learning_rate(),
            "steps": seen // self.options.batch_size,
        }
        self.history.append(entry)
        if self.is_chief and (warning := errors.rising_loss(self.history)):
            logging.warning("%s", warning)
        if self._summaries:
            tf.summary.scalar("epoch_loss", entry["loss"], step=self.global_step)
            tf.summary.scalar("epoch_accuracy", entry["accuracy"], step=self.global_step)
        self._epoch_var.assign(epoch + 1)
        fault_point("epoch_end")

    def _run_epoch(self, dataset, stop_step, bar):
        """Trains the rest of the current epoch (up to `stop_step`), then checkpoints it."""
        opts, steps_per_epoch = self.options, self.steps_per_epoch
        epoch, skip = divmod(self.global_step, steps_per_epoch)
        self._epoch_var.assign(epoch)
        batches = epoch_batches(
            self.epoch_dataset(epoch, dataset),
            epoch,
            opts.batch_size,
            self.seed,
            self.num_examples,
            skip,
            opts.shuffle_buffer,
        )
        iterator = iter(self.strategy.experimental_distribute_dataset(batches))
        if not skip:
            self._sums = [0.0, 0.0, 0]
        epoch_end = min((epoch + 1) * steps_per_epoch, stop_step)
        while self.global_step < epoch_end:
            self._one_step(iterator, epoch, epoch_end, bar)
        if self.global_step % steps_per_epoch == 0:
            self._finish_epoch(epoch)
        if self._last_saved != self.global_step:
            self._save_checkpoint()
        if self.run is not None and self.is_chief:
            self.run.write_history(self.history)

    def _train(self, dataset):
        max_steps = self.options.max_steps
        stop_step = self.total_steps if max_steps is None else min(self.total_steps, max_steps)
        writer, bar = self._writer(), self._progress_bar()
        self._summaries, self._timer = writer is not None, setup.StepTimer()
        summaries = writer.as_default() if writer else contextlib.nullcontext()
        try:
            with summaries:
                while self.global_step < stop_step:
                    self._run_epoch(dataset, stop_step, bar)
                if writer:
                    writer.flush()
        finally:
            if writer:
                writer.close()
            if bar is not None:
                bar.close()
        if self.global_step >= self.total_steps:
            self._save_final()

    # ---------------------------------------------------------------------- public API

    def epoch_dataset(self, epoch, dataset):
        """Returns the unbatched data epoch `epoch` trains on (0-based); override to vary it.

        By default: `fit`'s `dataset_fn(epoch)` when `fit` was given one, else `dataset`
        (the same data every epoch, reshuffled by `(seed, epoch)`). The result must have
        the element spec of the first epoch's and N elements; a resumed run calls it
        again for the interrupted epoch, so it must depend only on `epoch`.
        """
        return dataset if self._dataset_fn is None else self._dataset_fn(epoch)

    def _input(self, x, y):
        """Returns the first epoch's dataset of `fit`'s arguments; remembers a dataset_fn."""
        self._dataset_fn = None
        if callable(x) and not isinstance(x, tf.data.Dataset):
            if y is not None:
                raise TrainingInputError("pass labels inside the datasets of a dataset_fn")
            self._dataset_fn = x
            return as_dataset(x(0))
        return as_dataset(x, y)

    def fit(self, x, y=None, *, labels=None):
        """Trains until `epochs` (or `max_steps`); resumes from model_dir's checkpoint.

        Args:
            x: an unbatched `tf.data.Dataset` of `(features, label)`, numpy features
                `(N, T, d_f)` or a dict `{"rgb", "flow"}` of such, or `dataset_fn`: a
                callable `epoch -> unbatched dataset`, the data of each epoch (e.g. newly
                augmented clips; see `epoch_dataset`). Features are `(T, ...)`: axis 0
                is the time step, the other axes are compared with the model's input.
            y: int labels `(N,)` with numpy features.
            labels: optional int labels `(N,)` of the data, in any order: N and the label
                range are then checked from them instead of by reading the data once
                (which decodes every video of a clip dataset).

        Returns:
            A `TrainResult`.

        Raises:
            TrainingInputError: bad data or a checkpoint of another run, before training.
            FolderBusyError: another process is training in model_dir.
        """
        dataset = self._input(x, y)
        self._plan(check_labels(dataset, self.num_classes, labels=labels))
        with (
            run_folder.lock(self.run, self.is_chief, self.task_type, self.task_id),
            setup.op_determinism(self.options.deterministic),
        ):
            if self.model is None:
                run_folder.start_or_resume(
                    self.run, self.config, self.options.restart, self.is_chief
                )
                self._build(dataset)
                self.resumed_from = None if self.options.restart else self._restore()
                with self._disk_errors():
                    self._write_run_files()
            else:
                check_shapes(dataset, model_input_shapes(self.model))
            with self._disk_errors():
                self._train(dataset)
        done = (self.model, self.history, self.global_step, self._timer.rate())
        return TrainResult(*done, self.resumed_from, self.is_chief)

    def reset(self, seed):
        """Starts a new in-memory run: fresh weights for `seed`, optimizer state as new.

        The model variables are copied from a model `model_fn` builds after
        `keras.utils.set_random_seed(seed)`, and the optimizer variables are set back to
        their values right after `optimizer.build`, so the next `fit` trains exactly as
        a new `Trainer` with this seed would, without tracing the step again.

        Raises:
            TrainingInputError: the trainer writes a model_dir (a run is resumed, not reset).
        """
        if self.run is not None:
            raise TrainingInputError("reset() is for model_dir=None; a run in a folder resumes")
        self.seed = int(seed)
        self.history, self.global_step, self.resumed_from = [], 0, None
        if self.model is None:
            return
        keras.utils.set_random_seed(self.seed)
        with self._policy(), self.strategy.scope():
            fresh = self.model_fn()
        for target, source in zip(self.model.variables, fresh.variables):
            target.assign(source)
        for variable, value in zip(self.optimizer.variables, self._initial_optimizer):
            variable.assign(value)
        for variable in (self._step_var, self._epoch_var):
            variable.assign(0)
        self._sums, self._last_saved = [0.0, 0.0, 0], -1

    def predict(self, x, batch_size=32):
        """Returns the float32 logits `(N, C)` of numpy features (one trace per input shape).

        Inputs are padded to whole batches, so every call runs the same traced graph.
        """
        if self.model is None:
            raise TrainingInputError("call fit() before predict()")
        is_dict = isinstance(x, dict)
        arrays = {k: np.asarray(v, "float32") for k, v in (x.items() if is_dict else [("", x)])}
        count = len(next(iter(arrays.values())))
        pad = -count % batch_size
        padded = {
            k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) if pad else v
            for k, v in arrays.items()
        }
        logits = []
        for start in range(0, count + pad, batch_size):
            batch = {k: v[start : start + batch_size] for k, v in padded.items()}
            logits.append(np.asarray(self._predict_step(batch if is_dict else batch[""])))
        return np.concatenate(logits)[:count]

    def evaluate(self, x, y, batch_size=32):
        """Returns the top-1 accuracy of the model on numpy features and labels."""
        predicted = np.argmax(self.predict(x, batch_size), axis=-1)
        return float(np.mean(predicted == np.asarray(y)))
