"""The run folder's layout: every file's name, and reading/writing them without TensorFlow."""

import errno
import json
import subprocess
import sys

import numpy as np
import pytest

from reslstm_tf import runs
from reslstm_tf.runs import EvalDir, RunDir


def test_file_names_are_the_documented_layout(tmp_path):
    run = RunDir(tmp_path)
    names = {
        "config_file": "train_config.json",
        "checkpoint_dir": "checkpoints",
        "summary_dir": "train",
        "history_file": "history.json",
        "model_file": "model.keras",
        "legacy_weights_file": "final.weights.h5",
        "lock_file": ".lock",
    }
    for attribute, name in names.items():
        assert getattr(run, attribute) == tmp_path / name, attribute
    assert run.worker_weights_file("worker", 1) == tmp_path / "workers/worker_1/final.weights.h5"
    assert run.eval_dir("test").path == tmp_path / "eval_test"
    outputs = run.eval_dir("test")
    files = ("metrics.json", "per_class_accuracy.csv", "confusion_matrix.png", "predictions.npz")
    got = (outputs.metrics_file, outputs.per_class_file, outputs.confusion_file)
    assert [p.name for p in got + (outputs.predictions_file,)] == list(files)


def test_config_history_and_metrics_round_trip(tmp_path):
    run = RunDir(tmp_path / "run").create()
    assert run.history() == []
    run.write_config({"model": {"units": 8}, "b": 1})
    run.write_history([{"epoch": 1, "loss": 0.5}])
    assert run.config() == {"b": 1, "model": {"units": 8}}
    assert json.loads(run.config_file.read_text()) == run.config()
    assert run.history() == [{"epoch": 1, "loss": 0.5}]
    for split, top1 in (("test", 0.25), ("valid", 0.75)):
        run.eval_dir(split).create().write_metrics({"top1": top1})
    (run.path / "eval_unfinished").mkdir()  # no metrics.json: not an evaluation
    assert run.metrics() == {"test": {"top1": 0.25}, "valid": {"top1": 0.75}}
    assert sorted(run.eval_dirs()) == ["test", "valid"]


def test_predictions_round_trip(tmp_path):
    outputs = EvalDir(tmp_path).create()
    probs, labels = np.eye(3)[[0, 2, 1]], np.array([0, 1, 1])
    outputs.write_predictions(probs, labels)
    got_probs, got_labels = outputs.predictions()
    np.testing.assert_array_equal(got_probs, probs)
    np.testing.assert_array_equal(got_labels, labels)


def test_missing_weights_are_named(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(FileNotFoundError, match="holds neither model.keras nor a checkpoint"):
        run.load_weights(object())
    with pytest.raises(FileNotFoundError, match="other.weights.h5"):
        run.load_weights(object(), tmp_path / "other.weights.h5")


def test_unwritable_folder_raises(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        RunDir(tmp_path / "file" / "run").create()


def test_importing_runs_does_not_import_tensorflow():
    code = "import sys, reslstm_tf.runs; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert runs.checkpoint_slots(["a", "b"]) == {"v00000": "a", "v00001": "b"}


def test_feature_specs_name_every_differing_field():
    train = {"backbone": "i3d", "weights": "kinetics400", "modality": "rgb", "segment_len": 8}
    spec = runs.feature_spec({**train, "classes": ["a"], "short": None, "sampling": "eval"})
    assert spec == {**train, "precision": "float32"}  # what extraction left at its default
    runs.check_feature_spec(spec, dict(spec), "same")
    other = dict(spec, segment_len=32, precision="mixed_bfloat16", short="pad")
    with pytest.raises(runs.FeatureSpecError) as info:
        runs.check_feature_spec(spec, other, "features_dir 'test'")
    message = str(info.value)
    assert "features_dir 'test'" in message
    assert "segment_len: 8 (training) vs 32" in message
    assert "precision: 'float32' (training) vs 'mixed_bfloat16'" in message
    assert "short" not in message  # recorded by one side only: not compared


def test_config_changes_list_what_alters_the_result():
    old = {
        "model": {"dropout": 0.1, "units": 8},
        "seed": 0,
        "learning_rate": 1e-3,
        "progress": True,
    }
    new = {"model": {"dropout": 0.3, "units": 8}, "seed": 0, "learning_rate": 1e-2}
    new |= {"progress": False, "max_steps": 5, "features_npz": "moved.npz"}
    assert runs.config_changes(old, new) == [
        ("learning_rate", 1e-3, 1e-2),
        ("model.dropout", 0.1, 0.3),
    ]
    assert runs.config_changes(old, old) == []


def test_clear_deletes_the_layouts_files_only(tmp_path):
    run = RunDir(tmp_path).create()
    run.write_config({"a": 1})
    run.checkpoint_dir.mkdir()
    (run.checkpoint_dir / "ckpt-1.index").write_text("")
    run.eval_dir("test").create().write_metrics({"top1": 1.0})
    run.lock_file.write_text("")
    (tmp_path / "notes.txt").write_text("mine")
    assert run.clear() == ["train_config.json", "checkpoints", "eval_test"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "notes.txt"]
    assert run.size_bytes() == 4


def test_free_space_is_checked_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "free_bytes", lambda folder: 1000)
    with pytest.raises(OSError, match="No space left on device: the weights need") as info:
        runs.check_free_space(tmp_path, 2**20, "the weights")
    assert info.value.errno == errno.ENOSPC
    runs.check_free_space(tmp_path, 999, "the weights")
