"""LiteRT export: the interpreter's outputs against Keras, on random heads and the real one.

Float32 flatbuffers must match Keras within 1e-4 (full sequence, and the streaming step
after T steps); quantised ones must rank the real skateboard clips as float32 does.
"""

import numpy as np
import pytest

from reslstm_tf.export import signatures
from reslstm_tf.export.litert import export_litert, interpreter
from reslstm_tf.models import build_single_stream, build_two_stream
from tests.conftest import require

STEPS = 5
TOLERANCE = 1e-4


@pytest.fixture(autouse=True)
def _litert_runtime():
    require("ai_edge_litert")


def run_full(path, inputs):
    """Runs model.tflite on a dict of full sequences; returns its outputs."""
    return interpreter(path).get_signature_runner()(**inputs)


def run_steps(path, model, inputs):
    """Feeds the sequences one step at a time through step.tflite; returns the last outputs."""
    runner = interpreter(path).get_signature_runner()
    batch, steps = next(iter(inputs.values())).shape[:2]
    states = signatures.initial_states(model, batch)
    for t in range(steps):
        outputs = runner(**{name: x[:, t] for name, x in inputs.items()}, **states)
        states = {name: outputs[name] for name in states}
    return outputs


def keras_logits(model, inputs):
    return np.asarray(model(inputs if len(inputs) > 1 else inputs["features"]))


def random_head(kind):
    if kind == "one_stream":
        return build_single_stream(4, "res3", feature_dim=24, units=16, num_steps=STEPS)
    fusion = "concat" if kind == "mid" else "weighted"
    flow_dim = 12 if kind == "mid" else 24
    return build_two_stream(
        4, "res2", fusion=fusion, level=kind, rgb_dim=24, flow_dim=flow_dim, units=16,
        num_steps=STEPS,
    )  # fmt: skip


def random_inputs(model, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    specs = signatures.classify_function(model).input_signature
    return {s.name: rng.normal(size=(batch, *s.shape[1:])).astype("float32") for s in specs}


def assert_step_signature(path, kind):
    """The step's input and output names and the states' shape, as documented."""
    runner = interpreter(path).get_signature_runner()
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    states = ["rgb_states", "flow_states"] if kind == "late" else ["states"]
    features = ["features"] if kind == "one_stream" else ["rgb", "flow"]
    assert sorted(inputs) == sorted(features + states)
    assert sorted(outputs) == sorted(["logits", "probabilities"] + states)
    layers = 3 if kind == "one_stream" else 2
    for name in states:
        assert list(inputs[name]["shape_signature"]) == [-1, layers, 2, 16]
        assert list(outputs[name]["shape_signature"]) == [-1, layers, 2, 16]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["one_stream", "mid", "late"])
def test_float32_full_and_step_match_keras(kind, tmp_path):
    model = random_head(kind)
    paths = export_litert(model, tmp_path)
    names = ["metadata.json", "model.tflite", "step.tflite"]  # with the spec beside the model
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    inputs = random_inputs(model)
    expected = keras_logits(model, inputs)
    full = run_full(paths["model"], inputs)
    np.testing.assert_allclose(full["logits"], expected, atol=TOLERANCE)
    probabilities = np.exp(expected) / np.exp(expected).sum(-1, keepdims=True)
    np.testing.assert_allclose(full["probabilities"], probabilities, atol=TOLERANCE)
    step = run_steps(paths["step"], model, inputs)
    np.testing.assert_allclose(step["logits"], expected, atol=TOLERANCE)
    assert_step_signature(paths["step"], kind)
    if kind == "one_stream":  # Padded videos: trailing all-zero steps are masked.
        inputs["features"][0, -2:] = 0.0
        full = run_full(paths["model"], inputs)
        np.testing.assert_allclose(full["logits"], keras_logits(model, inputs), atol=TOLERANCE)


def test_refuses_bad_arguments(tmp_path):
    model = random_head("one_stream")
    with pytest.raises(
        ValueError, match="quantization must be one of.*Received: quantization='int4'"
    ):
        export_litert(model, tmp_path, quantization="int4")
    (tmp_path / "model.tflite").write_bytes(b"")
    with pytest.raises(FileExistsError, match="model.tflite"):
        export_litert(model, tmp_path, streaming=False)
    variable = build_single_stream(4, "res2", feature_dim=8, units=8, num_steps=None)
    with pytest.raises(ValueError, match="fixed number of steps T"):
        export_litert(variable, tmp_path / "other")


@pytest.fixture(scope="module")
def skateboard_features(shared_data):
    """I3D features (n, 16, 1024) of two real clips per class, extracted as for the zoo head."""
    from reslstm_tf import zoo
    from reslstm_tf.backbones.extractor import feature_model
    from reslstm_tf.data.pipeline import load_clip

    spec = zoo.info("skateboard_frozen_lstm3")["features"]["rgb"]
    folder = shared_data / "skateboard"
    lines = (folder / "trainlist.txt").read_text().split()
    clips = [line for line in lines if line.startswith("Kickflip/")][:2]
    clips += [line for line in lines if line.startswith("Ollie/")][:2]
    backbone = feature_model(spec["backbone"], "rgb")
    features = []
    for clip in clips:
        segments, _ = load_clip(
            folder / clip,
            spec["num_segments"],
            spec["segment_len"],
            frame_size=spec["frame_size"],
            short_side=spec["resize_short_side"],
            short=spec["short"],
        )
        features.append(np.asarray(backbone(segments)))
    return np.stack(features).astype("float32")


@pytest.mark.slow
def test_zoo_head_float32_and_quantised(skateboard_features, tmp_path):
    from reslstm_tf import zoo

    model = zoo.load("skateboard_frozen_lstm3")
    inputs = {"features": skateboard_features}
    expected = keras_logits(model, inputs)
    sizes, top1 = {}, {}
    for quantization in ("none", "float16", "dynamic_int8"):
        paths = export_litert(
            model, tmp_path / quantization, quantization, streaming=quantization == "none"
        )
        sizes[quantization] = paths["model"].stat().st_size
        logits = run_full(paths["model"], inputs)["logits"]
        top1[quantization] = np.argmax(logits, axis=-1)
        if quantization == "none":
            np.testing.assert_allclose(logits, expected, atol=TOLERANCE)
            step = run_steps(paths["step"], model, inputs)
            np.testing.assert_allclose(step["logits"], expected, atol=TOLERANCE)
        else:
            np.testing.assert_allclose(logits, expected, atol=0.1)
    np.testing.assert_array_equal(top1["none"], np.argmax(expected, axis=-1))
    np.testing.assert_array_equal(top1["float16"], top1["none"])
    np.testing.assert_array_equal(top1["dynamic_int8"], top1["none"])
    assert sizes["float16"] < 0.6 * sizes["none"]
    assert sizes["dynamic_int8"] < 0.35 * sizes["none"]


def test_3d_pools_traced_as_2d_pools_give_the_same_values():
    import keras

    inputs = keras.Input((5, 9, 9, 3))
    x = keras.layers.MaxPooling3D((3, 3, 3), strides=(2, 2, 2), padding="same")(inputs)
    x = keras.layers.MaxPooling3D((1, 3, 3), strides=(1, 2, 2), padding="same")(x)
    x = keras.layers.AveragePooling3D((2, 2, 2), strides=(1, 1, 1), padding="valid")(x)
    model = keras.Model(inputs, x)
    clips = np.random.default_rng(0).normal(size=(2, 5, 9, 9, 3)).astype("float32")
    expected = np.asarray(model(clips))
    with signatures.pooling_as_2d(model):
        np.testing.assert_allclose(np.asarray(model(clips)), expected, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(model(clips)), expected)  # restored


@pytest.mark.slow
def test_video_classifier_exports_clips_to_logits(tmp_path):
    """A fine-tuned zoo entry (clips in) exports whole, its I3D pools as builtin 2D pools."""
    from reslstm_tf import zoo
    from reslstm_tf.export import labels

    model = zoo.load("skateboard_lstm3.i3d112_ft")
    paths = export_litert(model, tmp_path)
    assert sorted(paths) == ["labels", "metadata", "model"]  # no streaming step
    assert labels.read_labels(tmp_path) == ["Kickflip", "Ollie"]
    clips = np.random.default_rng(0).uniform(-1, 1, (2, *model.input_shape[1:]))
    clips = clips.astype("float32")
    logits = run_full(paths["model"], {"clips": clips})["logits"]
    np.testing.assert_allclose(logits, np.asarray(model(clips, training=False)), atol=TOLERANCE)
