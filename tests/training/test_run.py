"""`run_training`: a run from features on disk, its recorded config, bad input refused early."""

import json

import pytest

from reslstm_tf.data.feature_sets import write_npz_features
from reslstm_tf.evaluate import load_trained_model
from reslstm_tf.runs import RunDir
from reslstm_tf.training import RunConfig, TrainingInputError, TrainOptions, run_training
from tests.training.helpers import NUM_CLASSES, TINY_RUN, separable_features


@pytest.mark.slow
def test_two_stream_training(tmp_path):
    x, y = separable_features(num_videos=16)
    npz = tmp_path / "two.npz"
    write_npz_features(npz, {"rgb": x, "flow": x[:, ::-1] * 0.5}, y)
    result = run_training(
        model_dir=tmp_path / "run",
        features_npz=npz,
        num_classes=NUM_CLASSES,
        modality="two_stream",
        fusion="sum",
        level="mid",
        **TINY_RUN,
    )
    assert set(result.model.input) == {"rgb", "flow"}
    assert result.global_step == 2


@pytest.mark.slow
def test_a_config_object_and_keyword_arguments_make_the_same_run(tmp_path, features_npz):
    config = RunConfig(
        model_dir=str(tmp_path / "a"),
        features_npz=str(features_npz),
        preset="res2",
        feature_dim=16,
        units=16,
        num_steps=6,
        options=TrainOptions(epochs=1, batch_size=8, seed=4, progress=False),
    )
    by_config = run_training(config)
    by_kwargs = run_training(
        model_dir=tmp_path / "b", features_npz=features_npz, seed=4, **TINY_RUN
    )
    assert by_config.history == by_kwargs.history
    record = RunDir(tmp_path / "a").config()
    assert record == json.loads((tmp_path / "b" / "train_config.json").read_text()) | {
        "features_npz": str(features_npz)
    }
    assert record["model"]["units"] == 16 and record["class_names"] == ["a", "b", "c", "d"]
    assert record["num_examples"] == 48 and record["steps_per_epoch"] == 6
    assert record["epochs"] == 1 and record["seed"] == 4


def _run(tmp_path, npz, **overrides):
    kwargs = dict(TINY_RUN, model_dir=tmp_path / "run", features_npz=npz)
    kwargs.update(overrides)
    return run_training(**kwargs)


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
        ({"learning_rate": -1.0}, "learning_rate must be a finite positive number"),
        ({"learning_rate": float("nan")}, "learning_rate must be a finite positive number"),
        ({"weight_decay": float("inf")}, "weight_decay must be a finite number >= 0"),
        ({"momentum": float("inf")}, "momentum must be a finite number >= 0"),
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
    with pytest.raises(TrainingInputError, match="model_dir .* is not a writable"):
        _run(tmp_path, features_npz, model_dir=blocker / "run")


# --------------------------------------------------------------------------- resuming


@pytest.mark.slow
def test_resuming_with_changed_settings_is_refused_and_restart_starts_over(tmp_path, features_npz):
    first = _run(tmp_path, features_npz, epochs=2, max_steps=3, seed=1, dropout=0.1)
    assert first.global_step == 3
    recorded = RunDir(tmp_path / "run").config()
    for change, listed in (
        ({"learning_rate": 1e-2}, "learning_rate: 0.001 -> 0.01"),
        ({"seed": 2}, "seed: 1 -> 2"),
        ({"dropout": 0.3}, "model.dropout: 0.1 -> 0.3"),  # was a RestoreV2 traceback
    ):
        kwargs = dict(epochs=2, seed=1, dropout=0.1) | change
        with pytest.raises(TrainingInputError) as info:
            _run(tmp_path, features_npz, **kwargs)
        assert listed in str(info.value) and "--restart" in str(info.value)
        assert RunDir(tmp_path / "run").config() == recorded  # nothing rewritten
    # Settings that do not change the result may change.
    resumed = _run(tmp_path, features_npz, epochs=2, seed=1, dropout=0.1, max_steps=4)
    assert resumed.resumed_from and resumed.global_step == 4
    again = _run(tmp_path, features_npz, epochs=2, seed=2, dropout=0.3, restart=True)
    assert again.resumed_from is None and again.global_step == 12
    record = RunDir(tmp_path / "run").config()
    assert record["seed"] == 2 and record["model"]["dropout"] == 0.3
    fresh = run_training(
        **dict(TINY_RUN, epochs=2), model_dir=tmp_path / "fresh", features_npz=features_npz,
        seed=2, dropout=0.3,
    )  # fmt: skip
    assert again.history == fresh.history


def test_a_run_keeps_one_checkpoint_and_its_final_files(tmp_path, features_npz):
    _run(tmp_path, features_npz, epochs=3, keep_checkpoints=True)
    run = RunDir(tmp_path / "run")
    assert sorted(p.name for p in run.checkpoint_dir.glob("*.index")) == ["ckpt-18.index"]
    assert run.model_file.is_file() and not run.legacy_weights_file.exists()
    assert not list(run.path.glob(".tmp-*"))


def _folder_bytes(path):
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.mark.slow
def test_a_finished_run_deletes_its_checkpoints_and_refuses_to_run_again(tmp_path, features_npz):
    # Before: the optimizer checkpoint (3x the weights with Adam) stayed after training.
    result = _run(tmp_path, features_npz, epochs=2)
    run = RunDir(tmp_path / "run")
    assert not run.checkpoint_dir.exists()
    assert run.model_file.is_file() and not run.legacy_weights_file.exists()
    assert load_trained_model(run.path)[0].count_params() == result.model.count_params()
    # One copy of the weights (model.keras) plus small JSON files and summaries.
    result.model.save_weights(tmp_path / "weights.weights.h5")
    weights = (tmp_path / "weights.weights.h5").stat().st_size
    assert _folder_bytes(run.path) <= 1.2 * weights + (256 << 10)
    with pytest.raises(TrainingInputError, match="holds a finished run .* --restart"):
        _run(tmp_path, features_npz, epochs=2)
    with pytest.raises(TrainingInputError, match="learning_rate: 0.001 -> 0.01"):
        _run(tmp_path, features_npz, epochs=2, learning_rate=1e-2)
    assert _run(tmp_path, features_npz, epochs=2, restart=True).global_step == 12


def test_nan_features_in_a_cache_are_a_training_input_error(tmp_path):
    from tests.reliability.corpus import write_raw_cache

    write_raw_cache(tmp_path / "cache", num_videos=8, steps=6, dim=16, nan_video=5)
    with pytest.raises(TrainingInputError, match="video Ollie/clip5.mp4 hold NaN"):
        _run(tmp_path, None, features_dir=tmp_path / "cache", num_classes=2)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_truncated_npz_is_named(tmp_path, features_npz):
    data = features_npz.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(TrainingInputError, match="truncated.npz.*cannot be read"):
        _run(tmp_path, truncated)


def test_the_automatic_batch_leaves_four_steps_an_epoch():
    from reslstm_tf.training.options import auto_batch_size

    def reference(n, replicas=1):  # the largest power of two <= 32 with n // b >= 4
        fits = [b for b in (1, 2, 4, 8, 16, 32) if n // b >= 4] or [1]
        return max(replicas, max(fits) // replicas * replicas)

    for n in (1, 3, 4, 7, 8, 10, 15, 16, 64, 120, 127, 128, 9537):
        for replicas in (1, 2, 4):
            assert auto_batch_size(n, replicas) == reference(n, replicas), (n, replicas)
    assert auto_batch_size(10) == 2 and auto_batch_size(120) == 16 and auto_batch_size(128) == 32


@pytest.mark.slow
def test_a_default_run_on_ten_clips_fits_its_batch_and_keeps_one_copy_of_its_weights(tmp_path):
    # The README's small folder: 10 clips of I3D-sized features, reslstm-train's defaults
    # (res3, 1024-d features, batch None) for one epoch.
    x, y = separable_features(num_videos=10, dim=1024, steps=16)
    npz = tmp_path / "ten.npz"
    write_npz_features(npz, x, y, class_names=[f"class_{i}" for i in range(NUM_CLASSES)])
    result = run_training(model_dir=tmp_path / "run", features_npz=npz, epochs=1, progress=False)
    run = RunDir(tmp_path / "run")
    recorded = json.loads(run.config_file.read_text())
    assert recorded["batch_size"] is None and recorded["batch_size_used"] == 2
    assert result.history[0]["steps"] == 5 == recorded["steps_per_epoch"]
    result.model.save_weights(tmp_path / "weights.weights.h5")
    weights = (tmp_path / "weights.weights.h5").stat().st_size
    assert weights > 50 << 20  # res3 at 1024 units: ~100 MB, so the bound below is tight
    size = _folder_bytes(run.path)
    print(f"run folder {size / 2**20:.1f} MiB, weights {weights / 2**20:.1f} MiB")
    assert size <= 1.2 * weights, (size, weights)
