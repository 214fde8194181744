"""The `reslstm-train` and `reslstm-eval` command lines: bad flags fail clearly, a run evaluates."""

import json
import subprocess
import sys

import numpy as np
import pytest

from reslstm_tf import train as train_lib
from tests.train.helpers import DIM, STEPS, TINY_FLAGS, cli_env, run_cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--optimizer=lamb"], "--optimizer=lamb"),
        (["--strategy=tpu"], "--strategy=tpu"),
        (["--features_dir=no/such/features"], "features_dir 'no/such/features'"),
        (["--feature_dim=1024"], "dimension d_f=16 but the model expects 1024"),
        (["--preset=res7"], "preset must be one of"),
    ],
)
def test_train_refuses_bad_flags_before_training(tmp_path, features_npz, flags, message):
    base = [f"--model_dir={tmp_path / 'run'}", *TINY_FLAGS]
    if not any(f.startswith("--features_dir") for f in flags):
        base.append(f"--features_npz={features_npz}")
    result = run_cli(*base, *flags)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_eval_cli_writes_the_metrics_of_a_trained_run(tmp_path, features_npz):
    run_dir = tmp_path / "run"
    trained = train_lib.run_training(
        model_dir=run_dir,
        features_npz=features_npz,
        preset="res2",
        feature_dim=DIM,
        units=16,
        num_steps=STEPS,
        epochs=2,
        batch_size=8,
        progress=False,
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
    data = np.load(features_npz)
    predicted = trained.model.predict(data["features"], verbose=0).argmax(axis=1)
    assert metrics["top1"] == pytest.approx(np.mean(predicted == data["labels"]))
    for name in ("per_class_accuracy.csv", "confusion_matrix.png", "top5_predictions.png"):
        assert (out_dir / name).is_file()
