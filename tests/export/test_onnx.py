"""ONNX export: ONNX Runtime's outputs against Keras within 1e-4, for heads and the I3D."""

import numpy as np
import pytest

from reslstm_tf.export import signatures
from reslstm_tf.export.onnx import export_onnx
from reslstm_tf.models import build_single_stream, build_two_stream
from tests.conftest import require

STEPS = 5
TOLERANCE = 1e-4


@pytest.fixture
def ort():
    require("tf2onnx")
    return require("onnxruntime")


def run(ort, path, inputs):
    """Runs an ONNX file in ONNX Runtime; returns {output name: array}."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs)))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["one_stream", "late"])
def test_head_full_and_step_match_keras(kind, ort, tmp_path):
    rng = np.random.default_rng(0)
    if kind == "one_stream":
        model = build_single_stream(4, "res3", feature_dim=24, units=16, num_steps=STEPS)
        inputs = {"features": rng.normal(size=(3, STEPS, 24)).astype("float32")}
        expected = np.asarray(model(inputs["features"]))
    else:
        model = build_two_stream(
            4, "res2", fusion="product", level="late", rgb_dim=24, flow_dim=24, units=16,
            num_steps=STEPS,
        )  # fmt: skip
        inputs = {
            name: rng.normal(size=(3, STEPS, 24)).astype("float32") for name in ("rgb", "flow")
        }
        expected = np.asarray(model(inputs))
    paths = export_onnx(model, tmp_path / "head.onnx", step_path=tmp_path / "step.onnx")
    full = run(ort, paths["model"], inputs)
    np.testing.assert_allclose(full["logits"], expected, atol=TOLERANCE)
    assert sorted(full) == ["logits", "probabilities"]
    states = signatures.initial_states(model, 3)
    for t in range(STEPS):
        step_inputs = {name: x[:, t] for name, x in inputs.items()}
        outputs = run(ort, paths["step"], {**step_inputs, **states})
        states = {name: outputs[f"new_{name}"] for name in states}
    np.testing.assert_allclose(outputs["logits"], expected, atol=TOLERANCE)


def test_refuses_a_step_for_a_backbone_and_existing_files(tmp_path):
    import keras

    inputs = keras.Input((4,))
    backbone = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="tiny")
    with pytest.raises(ValueError, match="step_path is for Res-LSTM heads only"):
        export_onnx(backbone, tmp_path / "a.onnx", step_path=tmp_path / "b.onnx")
    (tmp_path / "a.onnx").write_bytes(b"")
    with pytest.raises(FileExistsError, match="a.onnx"):
        export_onnx(backbone, tmp_path / "a.onnx")


@pytest.mark.slow
def test_i3d_kinetics_matches_keras(ort, tmp_path):
    from reslstm_tf.backbones.extractor import feature_model

    backbone = feature_model("i3d", "rgb")
    segments = np.random.default_rng(0).uniform(-1, 1, (1, 8, 112, 112, 3)).astype("float32")
    expected = np.asarray(backbone(segments))
    path = export_onnx(backbone, tmp_path / "i3d.onnx")["model"]
    session_inputs = {backbone.input.name: segments}
    features = run(ort, path, session_inputs)["features"]
    assert features.shape == (1, 1024)
    np.testing.assert_allclose(features, expected, atol=TOLERANCE)
    assert float(np.abs(expected).max()) > 0.1  # real weights: features far above the tolerance


@pytest.mark.slow
def test_video_classifier_exports_clips_to_logits_with_its_labels(ort, tmp_path):
    import json

    from reslstm_tf import zoo
    from reslstm_tf.export import labels

    model = zoo.load("skateboard_lstm3.i3d112_ft")  # a tag: an alias may move
    paths = export_onnx(model, tmp_path / "model.onnx")
    assert labels.read_labels(tmp_path) == ["Kickflip", "Ollie"]
    session = ort.InferenceSession(str(paths["model"]), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    assert props["model_name"] == "skateboard_lstm3.i3d112_ft"
    assert json.loads(props["clip_spec"])["rgb"]["frame_size"] == 112
    clips = np.random.default_rng(0).uniform(-1, 1, (2, *model.input_shape[1:]))
    outputs = run(ort, paths["model"], {"clips": clips.astype("float32")})
    expected = np.asarray(model(clips.astype("float32"), training=False))
    np.testing.assert_allclose(outputs["logits"], expected, atol=TOLERANCE)
