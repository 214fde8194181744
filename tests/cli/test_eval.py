"""`reslstm-eval`: evaluates a trained run and prints and writes its metrics."""

import json
import subprocess
import sys

import numpy as np
import pytest

from reslstm_tf.training import run_training
from tests.training.helpers import TINY_MODEL, cli_env, write_features

pytestmark = pytest.mark.slow


@pytest.fixture
def features_npz(tmp_path):
    """A .npz feature file (48 videos, 4 classes, T=6, d_f=16)."""
    return write_features(tmp_path / "train_features.npz")


def test_eval_cli_writes_the_metrics_of_a_trained_run(tmp_path, features_npz):
    run_dir = tmp_path / "run"
    trained = run_training(
        model_dir=run_dir,
        features_npz=features_npz,
        epochs=2,
        batch_size=8,
        progress=False,
        **TINY_MODEL,
    )
    frames = tmp_path / "frames.npz"
    np.savez(frames, **{"3": np.zeros((4, 16, 16, 3), np.uint8)})
    out_dir = tmp_path / "eval"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "reslstm_tf.cli.eval",
            f"--model_dir={run_dir}",
            f"--features_npz={features_npz}",
            f"--out_dir={out_dir}",
            "--top5_videos=3,5",
            f"--frames_npz={frames}",
            "--noprogress",
        ],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert f"top-1 {metrics['top1']:.4f}" in result.stdout
    assert "top-5" not in result.stdout and "top5" not in metrics  # 4 classes: always 1
    assert f"outputs in {out_dir}: metrics.json" in result.stdout
    data = np.load(features_npz)
    predicted = trained.model.predict(data["features"], verbose=0).argmax(axis=1)
    assert metrics["top1"] == pytest.approx(np.mean(predicted == data["labels"]))
    for name in ("per_class_accuracy.csv", "confusion_matrix.png", "top5_predictions.png"):
        assert (out_dir / name).is_file()


def test_eval_cli_mistakes_are_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "reslstm_tf.cli.eval", f"--model_dir={tmp_path / 'none'}"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        f"reslstm-eval: error: model_dir '{tmp_path / 'none'}' has no train_config.json; "
        "pass the folder of a reslstm-train run"
    ]
