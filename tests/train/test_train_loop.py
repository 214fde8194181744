"""The custom training loop: the updates of model.fit, summaries, schedules, resume, bad input."""

import math
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from reslstm_tf import train as train_lib
from reslstm_tf.models import build_single_stream
from tests.train.helpers import DIM, NUM_CLASSES, STEPS, separable_features


def _model_fn(dropout=0.0, units=16):
    return lambda: build_single_stream(
        NUM_CLASSES, "res2", feature_dim=DIM, units=units, num_steps=STEPS, dropout=dropout
    )


def _dataset(num_videos=48, seed=0):
    x, y = separable_features(num_videos=num_videos, seed=seed)
    return train_lib.numpy_dataset(x, y), x, y


def _weights(model):
    return [np.asarray(v) for v in model.weights]


def _max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def test_one_epoch_equals_model_fit_on_the_same_batches(tmp_path):
    dataset, _, _ = _dataset()
    result = train_lib.train(
        _model_fn(),
        dataset,
        num_classes=NUM_CLASSES,
        model_dir=tmp_path,
        epochs=1,
        batch_size=8,
        optimizer="sgd",
        momentum=0.0,
        learning_rate=0.1,
        seed=5,
        progress=False,
    )
    # Reference: the same initial weights, compiled with the loss users get from fit,
    # trained by model.fit on the batches of epoch 0.
    keras.utils.set_random_seed(5)
    reference = _model_fn()()
    reference.compile(
        keras.optimizers.SGD(0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    batches = train_lib.epoch_batches(dataset, 0, 8, seed=5, num_examples=48)
    fit = reference.fit(batches, epochs=1, verbose=0, shuffle=False)
    assert _max_diff(_weights(result.model), _weights(reference)) < 1e-5
    assert result.history[0]["loss"] == pytest.approx(fit.history["loss"][0], rel=1e-4)
    assert result.history[0]["accuracy"] == pytest.approx(fit.history["accuracy"][0], abs=1e-6)
    assert result.global_step == 6
    x, _ = separable_features(num_videos=4)
    saved = keras.saving.load_model(tmp_path / "model.keras")
    rebuilt = _model_fn()()
    rebuilt.load_weights(tmp_path / "final.weights.h5")
    expected = result.model.predict(x, verbose=0)
    np.testing.assert_allclose(saved.predict(x, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), expected, atol=1e-6)


def test_training_separates_the_classes(tmp_path):
    dataset, x, y = _dataset()
    result = train_lib.train(
        _model_fn(dropout=0.2),
        dataset,
        num_classes=NUM_CLASSES,
        model_dir=tmp_path,
        epochs=12,
        batch_size=8,
        learning_rate=1e-2,
        progress=False,
    )
    predicted = np.argmax(result.model.predict(x, verbose=0), axis=-1)
    assert np.mean(predicted == y) >= 0.9
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
    assert result.steps_per_second > 0


def _scalars(log_dir):
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return {
        tag: {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}
        for tag in acc.Tags()["tensors"]
    }


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_summaries_record_loss_accuracy_and_the_scheduled_learning_rate(tmp_path, schedule):
    dataset, _, _ = _dataset()
    lr0, epochs, per_epoch = 0.01, 3, 6
    train_lib.train(
        _model_fn(),
        dataset,
        num_classes=NUM_CLASSES,
        model_dir=tmp_path,
        epochs=epochs,
        batch_size=8,
        learning_rate=lr0,
        schedule=schedule,
        lr_decay_epochs=1,
        lr_decay_rate=0.5,
        log_every_steps=1,
        progress=False,
    )
    scalars = _scalars(tmp_path / "train")
    assert {"loss", "accuracy", "learning_rate", "epoch_loss", "epoch_accuracy"} <= set(scalars)
    total = epochs * per_epoch
    assert sorted(scalars["loss"]) == list(range(1, total + 1))
    for step, value in scalars["learning_rate"].items():
        # The rate after `step` updates, as the optimizer uses for the next one.
        if schedule == "cosine":
            expected = lr0 * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        else:
            expected = lr0 * 0.5 ** (step // per_epoch)
        assert value == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert all(0.0 <= a <= 1.0 for a in scalars["accuracy"].values())


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    dataset, _, _ = _dataset()
    kwargs = dict(
        num_classes=NUM_CLASSES,
        epochs=3,
        batch_size=8,
        optimizer="adam",
        seed=11,
        checkpoint_every_steps=4,
        progress=False,
    )
    full = train_lib.train(_model_fn(dropout=0.4), dataset, model_dir=tmp_path / "a", **kwargs)
    part = train_lib.train(
        _model_fn(dropout=0.4), dataset, model_dir=tmp_path / "b", max_steps=7, **kwargs
    )
    assert part.global_step == 7
    assert not (tmp_path / "b" / "final.weights.h5").exists()
    rest = train_lib.train(_model_fn(dropout=0.4), dataset, model_dir=tmp_path / "b", **kwargs)
    assert rest.resumed_from.endswith("ckpt-7")
    assert rest.global_step == 18
    assert _max_diff(_weights(full.model), _weights(rest.model)) <= 1e-6
    assert [h["epoch"] for h in rest.history] == [1, 2, 3]


def test_epoch_order_depends_only_on_seed_and_epoch():
    dataset = tf.data.Dataset.from_tensor_slices((np.zeros((20, 2, 3), "float32"), np.arange(20)))

    def order(epoch, seed, skip=0):
        batches = train_lib.epoch_batches(dataset, epoch, 4, seed, 20, skip_batches=skip)
        return np.concatenate([y.numpy() for _, y in batches])

    assert np.array_equal(order(1, 3), order(1, 3))
    assert not np.array_equal(order(0, 3), order(1, 3))
    assert sorted(order(2, 3)) == list(range(20))
    assert np.array_equal(order(1, 3, skip=2), order(1, 3)[8:])


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_trains_with_float32_logits(tmp_path, precision):
    dataset, x, _ = _dataset(num_videos=16)
    result = train_lib.train(
        _model_fn(),
        dataset,
        num_classes=NUM_CLASSES,
        model_dir=tmp_path,
        epochs=2,
        batch_size=8,
        mixed_precision=precision,
        progress=False,
    )
    assert result.model.get_layer("residual_lstm").compute_dtype == precision
    assert all(np.isfinite(h["loss"]) for h in result.history)
    assert keras.config.dtype_policy().name == "float32"


def test_two_stream_training(tmp_path, features_npz):
    x, y = separable_features(num_videos=16)
    npz = tmp_path / "two.npz"
    train_lib.write_npz_features(npz, {"rgb": x, "flow": x[:, ::-1] * 0.5}, y)
    result = train_lib.run_training(
        model_dir=tmp_path / "run",
        features_npz=npz,
        num_classes=NUM_CLASSES,
        modality="two_stream",
        fusion="sum",
        level="mid",
        preset="res2",
        feature_dim=DIM,
        units=16,
        num_steps=STEPS,
        epochs=1,
        batch_size=8,
        progress=False,
    )
    assert set(result.model.input) == {"rgb", "flow"}
    assert result.global_step == 2


# ------------------------------------------------------------------------------ bad input


def _run(tmp_path, npz, **overrides):
    kwargs = dict(
        model_dir=tmp_path / "run",
        features_npz=npz,
        preset="res2",
        feature_dim=DIM,
        units=16,
        num_steps=STEPS,
        epochs=1,
        batch_size=8,
        progress=False,
    )
    kwargs.update(overrides)
    return train_lib.run_training(**kwargs)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"features_npz": None, "features_dir": "no/such/dir"}, "features_dir 'no/such/dir'"),
        ({"features_npz": "missing.npz"}, "missing.npz"),
        ({"feature_dim": 32}, "dimension d_f=16 but the model expects 32"),
        ({"num_steps": 8}, "6 time steps per video but the model expects num_steps=8"),
        ({"preset": "res9"}, "preset must be one of 'res2'"),
        ({"num_classes": 3}, "num_classes=3 but the features record 4 class names"),
        ({"modality": "two_stream"}, "needs 'rgb' and 'flow' features"),
        ({"modality": "depth"}, "modality must be one of 'rgb', 'flow', 'two_stream'"),
        ({"optimizer": "lamb"}, "optimizer must be one of 'adam', 'sgd', 'adamw'"),
        ({"schedule": "linear"}, "schedule must be one of"),
        ({"mixed_precision": "fp8"}, "mixed_precision must be one of"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"batch_size": 100}, "batch_size=100 is larger than the dataset (48 examples)"),
        ({"learning_rate": -1.0}, "learning_rate must be a positive number"),
        ({"dropout": 1.5}, "dropout must be in [0, 1)"),
    ],
)
def test_bad_input_is_refused_before_training(tmp_path, features_npz, overrides, message):
    with pytest.raises(ValueError) as info:
        _run(tmp_path, features_npz, **overrides)
    assert message in str(info.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unwritable_model_dir_is_refused(tmp_path, features_npz):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(train_lib.TrainingInputError, match="model_dir .* is not a writable"):
        _run(tmp_path, features_npz, model_dir=blocker / "run")


@pytest.mark.parametrize("bad_label", [-1, NUM_CLASSES])
def test_labels_outside_the_class_range_are_refused(tmp_path, bad_label):
    x, y = separable_features(num_videos=8)
    y[3] = bad_label
    match = rf"label {bad_label} outside the class range \[0, {NUM_CLASSES}\)"
    with pytest.raises(train_lib.TrainingInputError, match=match):
        train_lib.train(
            _model_fn(),
            train_lib.numpy_dataset(x, y),
            num_classes=NUM_CLASSES,
            model_dir=tmp_path,
            batch_size=4,
            progress=False,
        )


def test_resume_with_another_batch_size_is_refused(tmp_path):
    dataset, _, _ = _dataset(num_videos=16)
    common = dict(num_classes=NUM_CLASSES, model_dir=tmp_path, epochs=2, progress=False)
    train_lib.train(_model_fn(), dataset, batch_size=8, max_steps=1, **common)
    with pytest.raises(train_lib.TrainingInputError, match="resume with the same data"):
        train_lib.train(_model_fn(), dataset, batch_size=4, **common)


def test_feature_dataset_requires_an_existing_folder(tmp_path):
    with pytest.raises(train_lib.TrainingInputError, match="is not an existing folder"):
        train_lib.feature_dataset(tmp_path / "absent", "train")


def test_npz_without_labels_is_refused(tmp_path):
    path = pathlib.Path(tmp_path, "bad.npz")
    np.savez(path, features=np.zeros((2, 3, 4), "float32"))
    with pytest.raises(train_lib.TrainingInputError, match="expected 'labels'"):
        train_lib.load_npz_features(path)


def test_mirrored_strategy_gives_the_default_strategy_weights(tmp_path):
    dataset, _, _ = _dataset(num_videos=16)
    kwargs = dict(num_classes=NUM_CLASSES, epochs=2, batch_size=8, seed=2, progress=False)
    default = train_lib.train(_model_fn(), dataset, model_dir=tmp_path / "d", **kwargs)
    mirrored = train_lib.train(
        _model_fn(), dataset, model_dir=tmp_path / "m", strategy="mirrored", **kwargs
    )
    assert _max_diff(_weights(default.model), _weights(mirrored.model)) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_xla_compiled_steps_match_the_plain_ones(tmp_path, strategy):
    dataset, _, _ = _dataset(num_videos=16)
    kwargs = dict(num_classes=NUM_CLASSES, epochs=2, batch_size=8, seed=4, progress=False)
    plain = train_lib.train(_model_fn(), dataset, model_dir=tmp_path / "p", **kwargs)
    jitted = train_lib.train(
        _model_fn(),
        dataset,
        model_dir=tmp_path / "j",
        strategy=strategy,
        jit_compile=True,
        **kwargs,
    )
    assert _max_diff(_weights(plain.model), _weights(jitted.model)) < 1e-5
