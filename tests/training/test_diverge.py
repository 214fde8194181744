"""A diverged training stops at once and is never saved, evaluated or published as trained.

Before, `reslstm-train --weight_decay=inf` exited 0 with "loss nan" and wrote final weights
full of NaN, `--learning_rate=1e30` trained to the end, and `reslstm-eval` scored the NaN
model (every video predicted one class).
"""

import math
import os

import numpy as np
import pytest
import tensorflow as tf

from reslstm_tf import evaluate
from reslstm_tf.checks import check_finite_weights
from reslstm_tf.data.feature_sets import write_npz_features
from reslstm_tf.runs import RunDir
from reslstm_tf.training import TrainingDivergedError, TrainingInputError, run_training
from tests.training.helpers import TINY_RUN, separable_features, write_features


@pytest.fixture
def features_npz(tmp_path):
    return write_features(tmp_path / "train.npz")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"weight_decay": math.inf}, "weight_decay must be a finite number >= 0"),
        ({"learning_rate": math.inf}, "learning_rate must be a finite positive number"),
        ({"lr_decay_rate": math.nan}, "lr_decay_rate must be a finite positive number"),
    ],
)
def test_non_finite_flags_are_refused_before_training(tmp_path, features_npz, overrides, message):
    with pytest.raises(TrainingInputError, match=message):
        run_training(model_dir=tmp_path / "run", features_npz=features_npz, **TINY_RUN, **overrides)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_diverging_run_stops_keeps_a_finite_checkpoint_and_writes_no_weights(
    tmp_path, features_npz, optimizer
):
    # Adam's steps are ~ the learning rate: finite 1e30 weights and a loss of 1e31; SGD's
    # overflow to a NaN loss.
    run = RunDir(tmp_path / "run")
    kwargs = dict(TINY_RUN, epochs=3, checkpoint_every_steps=1, learning_rate=1e30)
    kwargs["optimizer"] = optimizer
    with pytest.raises(TrainingDivergedError) as info:
        run_training(model_dir=run.path, features_npz=features_npz, **kwargs)
    message = str(info.value)
    assert message.startswith("training diverged: "), message
    assert "no final weights written" in message and "\n" not in message
    assert not run.model_file.exists() and not run.legacy_weights_file.exists()
    latest = tf.train.latest_checkpoint(str(run.path / "checkpoints"))
    assert latest is None or f"{os.path.basename(latest)}, is kept" in message
    if latest is not None:  # every variable of the kept checkpoint is finite
        reader = tf.train.load_checkpoint(latest)
        for name, _ in tf.train.list_variables(latest):
            value = np.asarray(reader.get_tensor(name))
            if value.dtype.kind == "f":
                assert np.isfinite(value).all(), name


@pytest.mark.slow
def test_evaluation_refuses_non_finite_weights(tmp_path, features_npz):
    run = RunDir(tmp_path / "run")
    trained = run_training(model_dir=run.path, features_npz=features_npz, **TINY_RUN)
    check_finite_weights(trained.model)  # a finite model passes
    variable = trained.model.trainable_weights[0]
    variable.assign(np.full(variable.shape, np.nan, variable.dtype))
    trained.model.save(run.model_file)
    with pytest.raises(evaluate.EvaluationInputError, match="hold .* NaN or infinite values"):
        evaluate.load_trained_model(run.path)


def test_a_rising_loss_is_a_warning():
    from reslstm_tf.training.errors import rising_loss

    history = [{"loss": 0.7}, {"loss": 0.6}]
    assert rising_loss(history) is None
    warning = rising_loss([*history, {"loss": 12.0}])  # the small folder's epoch 3
    assert warning.startswith("the loss rose to 12 in epoch 3 from 0.6: training is diverging")
    assert rising_loss([{"loss": 12.0}]) is None
    # Wobbling near zero, still far below the first epoch: not divergence.
    assert rising_loss([{"loss": 0.7}, {"loss": 0.09}, {"loss": 0.17}]) is None


def test_a_collapsed_model_is_a_warning():
    from reslstm_tf.training.errors import collapse_warning

    labels = np.array([0, 1, 0, 1])
    assert collapse_warning(np.array([0, 1, 1, 1]), labels) is None
    assert collapse_warning(np.zeros(4), np.zeros(4)) is None  # one class: nothing to collapse
    warning = collapse_warning(np.ones(4), labels, ["Kickflip", "Ollie"])
    assert warning.startswith("the trained model predicts 'Ollie' for every one of the 4")


@pytest.mark.slow
def test_training_that_collapses_says_so(tmp_path, caplog):
    # Every video has the same features: whatever the head learns, it predicts one class.
    x, y = separable_features(num_videos=16)
    npz = tmp_path / "same.npz"
    write_npz_features(npz, np.repeat(x[:1], len(x), axis=0), y, ["a", "b", "c", "d"])
    with caplog.at_level("WARNING"):
        run_training(model_dir=tmp_path / "run", features_npz=npz, **TINY_RUN)
    collapsed = [r.getMessage() for r in caplog.records if "collapsed onto one class" in r.message]
    assert len(collapsed) == 1 and "16 training videos" in collapsed[0], caplog.text
