"""`reslstm-export --format`: one tool writes SavedModel, LiteRT and ONNX from a `.keras` head."""

import subprocess
import sys

import keras
import numpy as np
import pytest

from reslstm_tf.models import build_single_stream
from tests.conftest import require
from tests.export.test_litert import run_full


@pytest.fixture(scope="module")
def head_file(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = build_single_stream(3, "res2", feature_dim=8, units=8, num_steps=4)
    path = tmp_path_factory.mktemp("head") / "head.keras"
    model.save(path)
    return model, path


def _export(path, out_dir, *flags):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "reslstm_tf.cli.export",
            f"--model={path}",
            f"--export_dir={out_dir}",
        ]
        + list(flags),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_litert_and_onnx_from_the_command_line_equal_keras(head_file, tmp_path):
    require("ai_edge_litert")
    ort = require("onnxruntime")
    model, path = head_file
    x = np.random.default_rng(1).random((2, 4, 8)).astype("float32")
    expected = np.asarray(model(x))

    litert = _export(path, tmp_path / "litert", "--format=litert")
    assert litert.returncode == 0, litert.stderr[-3000:]
    assert "model written to" in litert.stdout
    outputs = run_full(tmp_path / "litert" / "model.tflite", {"features": x})
    np.testing.assert_allclose(outputs["logits"], expected, atol=1e-4)

    onnx = _export(path, tmp_path / "onnx", "--format=onnx", "--nostreaming")
    assert onnx.returncode == 0, onnx.stderr[-3000:]
    assert not (tmp_path / "onnx" / "step.onnx").exists()
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    names = [o.name for o in session.get_outputs()]
    logits = session.run(None, {session.get_inputs()[0].name: x})[names.index("logits")]
    np.testing.assert_allclose(logits, expected, atol=1e-4)

    again = _export(path, tmp_path / "onnx", "--format=onnx", "--nostreaming")
    assert again.returncode == 2 and "already exist" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1, again.stderr


@pytest.mark.slow
def test_an_unknown_format_is_refused_in_one_line(head_file, tmp_path):
    result = _export(head_file[1], tmp_path / "x", "--format=torchscript")
    assert result.returncode == 2
    assert "--format=torchscript" in result.stderr and "Traceback" not in result.stderr
