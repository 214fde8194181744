"""Exports carry their meaning: labels.txt, metadata.json and ONNX metadata_props."""

import json

import numpy as np
import pytest

from reslstm_tf import zoo
from reslstm_tf.export import labels
from reslstm_tf.models import build_single_stream
from tests.conftest import require

FROZEN = "skateboard_lstm3.i3d224_frozen"


@pytest.fixture(scope="module")
def frozen_head():
    return zoo.load("skateboard_frozen_lstm3")


def test_metadata_of_a_zoo_model_names_its_tag_classes_and_clip_spec(frozen_head):
    metadata = labels.export_metadata(frozen_head)
    assert metadata["model_name"] == metadata["zoo_entry"] == FROZEN
    assert metadata["class_names"] == ["Kickflip", "Ollie"]
    spec = metadata["clip_spec"]["rgb"]
    assert (spec["num_segments"], spec["segment_len"], spec["frame_size"]) == (16, 16, 224)
    assert spec["feature_dim"] == 1024 and spec["backbone"] == "i3d"
    assert metadata["sha256"] == zoo.info(FROZEN)["weights"]["sha256"]
    props = labels.onnx_props(metadata)
    assert json.loads(props["class_names"]) == ["Kickflip", "Ollie"]
    assert props["model_name"] == FROZEN


def test_labels_and_metadata_files(frozen_head, tmp_path):
    paths = labels.write_beside(tmp_path, labels.export_metadata(frozen_head))
    assert labels.read_labels(tmp_path) == ["Kickflip", "Ollie"]
    assert paths["labels"].read_text() == "Kickflip\nOllie\n"
    assert json.loads(paths["metadata"].read_text())["model_name"] == FROZEN


def test_a_model_without_classes_gets_metadata_but_no_labels(tmp_path):
    model = build_single_stream(3, "res2", feature_dim=8, units=8, num_steps=4, name="mine")
    metadata = labels.export_metadata(model)
    assert metadata["class_names"] is None and metadata["model_name"] == "mine"
    assert set(labels.write_beside(tmp_path, metadata)) == {"metadata"}
    given = labels.export_metadata(model, classes=["a", "b", "c"])
    assert given["class_names"] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="2 class names for a model of 3 logits"):
        labels.check_classes(labels.export_metadata(model, ["a", "b"]), 3)


@pytest.mark.slow
def test_litert_export_writes_labels_beside_the_flatbuffer(frozen_head, tmp_path):
    require("ai_edge_litert")
    from reslstm_tf.export.litert import export_litert

    paths = export_litert(frozen_head, tmp_path, streaming=False)
    assert sorted(paths) == ["labels", "metadata", "model"]
    assert labels.read_labels(tmp_path) == ["Kickflip", "Ollie"]
    metadata = json.loads(paths["metadata"].read_text())
    assert metadata["signatures"]["inputs"]["model"] == {"features": [None, 16, 1024]}


@pytest.mark.slow
def test_onnx_export_carries_metadata_props(frozen_head, tmp_path):
    require("tf2onnx")
    ort = require("onnxruntime")
    from reslstm_tf.export.onnx import export_onnx

    paths = export_onnx(frozen_head, tmp_path / "model.onnx", step_path=tmp_path / "step.onnx")
    assert labels.read_labels(tmp_path) == ["Kickflip", "Ollie"]
    for key in ("model", "step"):
        session = ort.InferenceSession(str(paths[key]), providers=["CPUExecutionProvider"])
        props = session.get_modelmeta().custom_metadata_map
        assert props["model_name"] == FROZEN
        assert json.loads(props["class_names"]) == ["Kickflip", "Ollie"]
        assert json.loads(props["clip_spec"])["rgb"]["frame_size"] == 224
    x = np.random.default_rng(0).normal(size=(2, 16, 1024)).astype("float32")
    session = ort.InferenceSession(str(paths["model"]), providers=["CPUExecutionProvider"])
    (logits, _) = session.run(["logits", "probabilities"], {"features": x})
    np.testing.assert_allclose(logits, np.asarray(frozen_head(x)), atol=1e-4)
