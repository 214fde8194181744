"""The Trainer: the updates of model.fit, summaries, schedules, resume, strategies, reset."""

import json
import math
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from reslstm_tf.data.feature_sets import numpy_dataset
from reslstm_tf.models import build_single_stream
from reslstm_tf.training import Trainer, TrainingInputError, train
from reslstm_tf.training.inputs import epoch_batches
from tests.training.helpers import DIM, NUM_CLASSES, STEPS, cli_env, separable_features


def _model_fn(dropout=0.0, units=16):
    return lambda: build_single_stream(
        NUM_CLASSES, "res2", feature_dim=DIM, units=units, num_steps=STEPS, dropout=dropout
    )


def _dataset(num_videos=48, seed=0):
    x, y = separable_features(num_videos=num_videos, seed=seed)
    return numpy_dataset(x, y), x, y


def _weights(model):
    return [np.asarray(v) for v in model.weights]


def _max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.mark.slow
def test_one_epoch_equals_model_fit_on_the_same_batches(tmp_path):
    dataset, _, _ = _dataset()
    result = train(
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
    batches = epoch_batches(dataset, 0, 8, seed=5, num_examples=48)
    fit = reference.fit(batches, epochs=1, verbose=0, shuffle=False)
    assert _max_diff(_weights(result.model), _weights(reference)) < 1e-5
    assert result.history[0]["loss"] == pytest.approx(fit.history["loss"][0], rel=1e-4)
    assert result.history[0]["accuracy"] == pytest.approx(fit.history["accuracy"][0], abs=1e-6)
    assert result.global_step == 6
    x, _ = separable_features(num_videos=4)
    saved = keras.saving.load_model(tmp_path / "model.keras")
    rebuilt = _model_fn()()
    rebuilt.load_weights(tmp_path / "model.keras")
    expected = result.model.predict(x, verbose=0)
    np.testing.assert_allclose(saved.predict(x, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), expected, atol=1e-6)


@pytest.mark.slow
def test_training_separates_the_classes(tmp_path):
    dataset, x, y = _dataset()
    result = train(
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
    train(
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


@pytest.mark.slow
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
    full = train(_model_fn(dropout=0.4), dataset, model_dir=tmp_path / "a", **kwargs)
    part = train(_model_fn(dropout=0.4), dataset, model_dir=tmp_path / "b", max_steps=7, **kwargs)
    assert part.global_step == 7
    assert not (tmp_path / "b" / "model.keras").exists()
    rest = train(_model_fn(dropout=0.4), dataset, model_dir=tmp_path / "b", **kwargs)
    assert rest.resumed_from.endswith("ckpt-7")
    assert rest.global_step == 18
    assert _max_diff(_weights(full.model), _weights(rest.model)) <= 1e-6
    assert [h["epoch"] for h in rest.history] == [1, 2, 3]


def test_epoch_order_depends_only_on_seed_and_epoch():
    dataset = tf.data.Dataset.from_tensor_slices((np.zeros((20, 2, 3), "float32"), np.arange(20)))

    def order(epoch, seed, skip=0):
        batches = epoch_batches(dataset, epoch, 4, seed, 20, skip_batches=skip)
        return np.concatenate([y.numpy() for _, y in batches])

    assert np.array_equal(order(1, 3), order(1, 3))
    assert not np.array_equal(order(0, 3), order(1, 3))
    assert sorted(order(2, 3)) == list(range(20))
    assert np.array_equal(order(1, 3, skip=2), order(1, 3)[8:])


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_trains_with_float32_logits(tmp_path, precision):
    dataset, x, _ = _dataset(num_videos=16)
    result = train(
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


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("bad_label", [-1, NUM_CLASSES])
def test_labels_outside_the_class_range_are_refused(tmp_path, bad_label):
    x, y = separable_features(num_videos=8)
    y[3] = bad_label
    match = rf"label {bad_label} outside the class range \[0, {NUM_CLASSES}\)"
    with pytest.raises(TrainingInputError, match=match):
        train(
            _model_fn(),
            numpy_dataset(x, y),
            num_classes=NUM_CLASSES,
            model_dir=tmp_path,
            batch_size=4,
            progress=False,
        )


def test_resume_with_another_batch_size_is_refused(tmp_path):
    dataset, _, _ = _dataset(num_videos=16)
    common = dict(num_classes=NUM_CLASSES, model_dir=tmp_path, epochs=2, progress=False)
    train(_model_fn(), dataset, batch_size=8, max_steps=1, **common)
    with pytest.raises(TrainingInputError, match="resume with the same data"):
        train(_model_fn(), dataset, batch_size=4, **common)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_xla_compiled_steps_match_the_plain_ones(tmp_path, strategy):
    dataset, _, _ = _dataset(num_videos=16)
    kwargs = dict(num_classes=NUM_CLASSES, epochs=2, batch_size=8, seed=4, progress=False)
    plain = train(_model_fn(), dataset, model_dir=tmp_path / "p", **kwargs)
    jitted = train(
        _model_fn(),
        dataset,
        model_dir=tmp_path / "j",
        strategy=strategy,
        jit_compile=True,
        **kwargs,
    )
    assert _max_diff(_weights(plain.model), _weights(jitted.model)) < 1e-5


# ------------------------------------------------------------- per-epoch data, any rank


def _grid_model_fn():
    """A model of (T, 4, 4) elements: each step's 4x4 grid flattened, then the tiny LSTM."""

    def build():
        inputs = keras.Input((STEPS, 4, 4))
        flat = keras.layers.Reshape((STEPS, DIM))(inputs)
        return keras.Model(inputs, _model_fn()()(flat))

    return build


@pytest.mark.slow
def test_dataset_fn_gives_each_epoch_its_data_and_elements_of_any_rank(tmp_path):
    x, y = separable_features(num_videos=16)
    grids = x.reshape(16, STEPS, 4, 4)
    calls = []

    def dataset_fn(epoch):
        calls.append(epoch)
        return numpy_dataset(grids * (1.0 + epoch), y)

    options = dict(num_classes=NUM_CLASSES, epochs=3, batch_size=8, seed=5, progress=False)
    trainer = Trainer(_grid_model_fn(), model_dir=tmp_path / "fn", **options)
    result = trainer.fit(dataset_fn, labels=y)
    assert calls == [0, 0, 1, 2] and result.global_step == 6
    # The same as three runs of one epoch each on the epoch's own data, resumed in a folder.
    step_by_step = tmp_path / "by_epoch"
    for epoch in range(3):
        resumed = Trainer(
            _grid_model_fn(), model_dir=step_by_step, max_steps=2 * (epoch + 1), **options
        )
        resumed.epoch_dataset = lambda e, data: numpy_dataset(grids * (1.0 + e), y)
        last = resumed.fit(numpy_dataset(grids, y))
    assert _max_diff(_weights(result.model), _weights(last.model)) == 0.0


def test_labels_given_are_checked_without_reading_the_data(tmp_path):
    x, y = separable_features(num_videos=16)

    def refuse(features, label):
        with tf.control_dependencies([tf.debugging.Assert(False, ["the data was read"])]):
            return tf.identity(features), label

    bad = tf.data.Dataset.from_tensor_slices((x, y)).map(refuse)
    trainer = Trainer(_model_fn(), num_classes=NUM_CLASSES, epochs=1, progress=False)
    with pytest.raises(TrainingInputError, match="label 9 outside the class range"):
        trainer.fit(bad, labels=np.r_[y[:-1], 9])


def test_elements_of_another_shape_are_refused():
    x, y = separable_features(num_videos=16)
    trainer = Trainer(
        _grid_model_fn(), num_classes=NUM_CLASSES, epochs=1, batch_size=8, progress=False
    )
    with pytest.raises(TrainingInputError, match=r"shape \(6, 2, 8\) but the model expects"):
        trainer.fit(x.reshape(16, STEPS, 2, 8), y)


# Two logical CPU devices must be configured before TensorFlow initialises its devices,
# so the two-replica comparison runs in a fresh interpreter.
_TWO_REPLICAS = """
import json
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from reslstm_tf.data.feature_sets import numpy_dataset
from reslstm_tf.training import train
from tests.training.test_trainer import _dataset, _model_fn, _max_diff, _weights
from tests.training.helpers import NUM_CLASSES

dataset, _, _ = _dataset(num_videos=16)
kwargs = dict(num_classes=NUM_CLASSES, epochs=2, batch_size=8, seed=2, progress=False)
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
one = train(_model_fn(), dataset, model_dir=None, **kwargs)
two = train(_model_fn(), dataset, model_dir=None, strategy=mirrored, **kwargs)
print(json.dumps({
    "replicas": mirrored.num_replicas_in_sync,
    "diff": _max_diff(_weights(one.model), _weights(two.model)),
    "moved": _max_diff(_weights(one.model), _weights(_model_fn()())),
    "loss": [one.history[-1]["loss"], two.history[-1]["loss"]],
}))
"""


@pytest.mark.slow
def test_two_replica_mirrored_strategy_gives_the_one_device_weights():
    from tests.conftest import PROJECT_ROOT

    result = subprocess.run(
        [sys.executable, "-c", _TWO_REPLICAS],
        cwd=PROJECT_ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    # Each replica takes half of the global batch; the summed gradients equal one device's.
    assert out["diff"] < 1e-5
    assert out["moved"] > 1e-3  # the runs trained: equal weights are not the initial ones
    assert out["loss"][1] == pytest.approx(out["loss"][0], rel=1e-5)


# ------------------------------------------------------------------- in-memory training


@pytest.mark.slow
def test_numpy_input_without_model_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = separable_features(num_videos=16)
    trainer = Trainer(
        _model_fn(), num_classes=NUM_CLASSES, epochs=2, batch_size=8, seed=3, progress=False
    )
    result = trainer.fit(x, y)
    assert result.global_step == 4 and len(result.history) == 2
    assert list(tmp_path.iterdir()) == []
    reference = train(
        _model_fn(),
        numpy_dataset(x, y),
        num_classes=NUM_CLASSES,
        model_dir=tmp_path / "run",
        epochs=2,
        batch_size=8,
        seed=3,
        progress=False,
    )
    assert _max_diff(_weights(result.model), _weights(reference.model)) == 0.0
    logits = trainer.predict(x[:5])
    np.testing.assert_allclose(logits, result.model.predict(x[:5], verbose=0), atol=1e-5)
    expected = float(np.mean(np.argmax(result.model.predict(x, verbose=0), -1) == y))
    assert trainer.evaluate(x, y, batch_size=6) == expected


@pytest.mark.slow
def test_reset_trains_exactly_like_a_new_trainer():
    x, y = separable_features(num_videos=24)
    options = dict(num_classes=NUM_CLASSES, epochs=2, batch_size=8, progress=False)
    reused = Trainer(_model_fn(dropout=0.3), **options)
    reused.reset(1)
    first = _weights(reused.fit(x, y).model)
    reused.reset(2)
    reused.fit(x[:16], y[:16])  # another seed and another size in between
    reused.reset(1)
    again = reused.fit(x, y)
    fresh = Trainer(_model_fn(dropout=0.3), seed=1, **options).fit(x, y)
    assert _max_diff(_weights(again.model), first) == 0.0
    assert _max_diff(_weights(again.model), _weights(fresh.model)) == 0.0
    assert again.history == fresh.history and again.global_step == 6
    assert reused.fit(x, y).global_step == 6  # a finished run is not trained further


@pytest.mark.slow
def test_two_stream_numpy_dict_input():
    from reslstm_tf.models import build_two_stream

    x, y = separable_features(num_videos=16)
    trainer = Trainer(
        lambda: build_two_stream(
            NUM_CLASSES, "res2", fusion="sum", level="late", rgb_dim=DIM, flow_dim=DIM,
            units=8, num_steps=STEPS,
        ),
        num_classes=NUM_CLASSES,
        epochs=1,
        batch_size=8,
        progress=False,
    )  # fmt: skip
    features = {"rgb": x, "flow": x[:, ::-1]}
    assert trainer.fit(features, y).global_step == 2
    assert trainer.predict(features).shape == (16, NUM_CLASSES)


def test_reset_is_refused_for_a_run_in_a_folder(tmp_path):
    trainer = Trainer(_model_fn(), num_classes=NUM_CLASSES, model_dir=tmp_path, progress=False)
    with pytest.raises(TrainingInputError, match="reset"):
        trainer.reset(0)
