"""Fine-tuning end to end: learns, two replicas equal one device, exact resume, flow cached once."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from reslstm_tf.data import datasets
from reslstm_tf.data import flow_cache as flow_cache_lib
from reslstm_tf.training import finetune as finetune_lib
from reslstm_tf.training.finetune import (
    FinetuneError,
    evaluate_finetuned,
    finetune,
    load_videos,
)
from tests.training.finetune_helpers import CLASSES, SMALL, write_dataset
from tests.training.helpers import cli_env, max_weight_diff


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("finetune") / "videos", per_class=3)


def _config(video_dir, **overrides):
    values = dict(SMALL, data_dir=str(video_dir), epochs=1, batch_size=2, optimizer="adam")
    values.update(overrides)
    return finetune_lib.from_flat(values)


def _replace(config, **changes):
    """A copy of `config` with flat settings changed (clip and training fields too)."""
    return finetune_lib.from_flat({**finetune_lib.to_flat(config), **changes})


def _run_python(code, timeout=600, **env):
    from tests.conftest import PROJECT_ROOT

    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result


@pytest.mark.slow
def test_fine_tuning_learns_a_separable_toy_task(video_dir):
    config = _config(video_dir, epochs=8, learning_rate=3e-3)
    result = finetune(config)
    losses = [entry["loss"] for entry in result.train.history]
    assert losses[-1] < losses[0] - 0.3, losses
    scored = evaluate_finetuned(config, result.classifier, load_videos(config))
    assert scored["top1"] == 1.0
    assert [p["video"] for p in scored["predictions"]][:2] == [
        "Bright/Bright0.avi",
        "Bright/Bright1.avi",
    ]
    # A list of Dark videos only numbers Dark 0 itself; the run knows it as 1, by name.
    everything = load_videos(config)
    dark = [item for item in everything.items if item.class_name == "Dark"]
    dark_only = datasets.VideoList(
        [datasets.VideoItem(item.path, 0, "Dark") for item in dark], ["Dark"]
    )
    scored = evaluate_finetuned(config, result.classifier, dark_only, classes=CLASSES)
    assert [p["label"] for p in scored["predictions"]] == [1] * len(dark)
    assert scored["top1"] == 1.0
    with pytest.raises(FinetuneError, match=r"not trained on: \['Zebra'\]"):
        evaluate_finetuned(
            config,
            result.classifier,
            datasets.VideoList([datasets.VideoItem(dark[0].path, 0, "Zebra")], ["Zebra"]),
            classes=CLASSES,
        )
    # The trunk below trainable_from did not move; a later block did.
    backbone = result.classifier.get_layer("segment_encoder").backbone
    keras.utils.set_random_seed(config.train.seed)
    fresh = finetune_lib.build_classifier(config, 2).get_layer("segment_encoder").backbone
    for name, moved in (
        ("Conv3d_1a_7x7.conv", False),
        ("Mixed_5c.Branch_0.Conv3d_0a_1x1.conv", True),
    ):
        diff = np.max(np.abs(backbone.get_layer(name).kernel - fresh.get_layer(name).kernel))
        assert (diff > 0) == moved, (name, diff)


# Two logical CPU devices must exist before TensorFlow initialises its devices: a fresh process.
_TWO_REPLICAS = """
import dataclasses, json, sys
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from reslstm_tf.training.finetune import from_flat, finetune, build_classifier
import keras

config = from_flat(json.loads(sys.argv[1]))
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
one = finetune(config)
two = finetune(config, strategy=mirrored)
keras.utils.set_random_seed(config.train.seed)
start = build_classifier(config, 2).get_weights()
diff = lambda a, b: max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
print(json.dumps({
    "replicas": mirrored.num_replicas_in_sync,
    "diff": diff(one.classifier.get_weights(), two.classifier.get_weights()),
    "moved": diff(one.classifier.get_weights(), start),
    "loss": [one.train.history[-1]["loss"], two.train.history[-1]["loss"]],
}))
"""


@pytest.mark.slow
def test_two_replicas_take_the_one_device_step(video_dir):
    config = _config(video_dir, batch_size=6, learning_rate=1e-2)  # one step of 6 clips
    code = _TWO_REPLICAS.replace("json.loads(sys.argv[1])", repr(finetune_lib.to_flat(config)))
    result = _run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert out["moved"] > 1e-4  # the step changed the weights ...
    assert out["diff"] < 1e-5  # ... and each replica's half of the batch summed to one device's
    assert out["loss"][1] == pytest.approx(out["loss"][0], rel=1e-5)


_RUN = """
from reslstm_tf.training.finetune import from_flat, finetune
finetune(from_flat(CONFIG))
"""


@pytest.mark.slow
def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(video_dir, tmp_path):
    config = _config(video_dir, epochs=2, checkpoint_every_steps=1, learning_rate=1e-2)
    whole = _replace(config, model_dir=str(tmp_path / "whole"))
    finetune(whole)
    killed = _replace(config, model_dir=str(tmp_path / "killed"))
    code = _RUN.replace("CONFIG", repr(finetune_lib.to_flat(killed)))
    first = _run_python(code, RESLSTM_FAULT="train_step:5")  # epoch 2, step 2 of 3
    assert first.returncode == -9, first.stderr[-2000:]
    assert not (tmp_path / "killed" / "model.keras").exists()
    resumed = finetune(killed)
    assert resumed.train.resumed_from.endswith("ckpt-4")
    assert resumed.train.global_step == 6
    diff = max_weight_diff(tmp_path / "whole/model.keras", tmp_path / "killed/model.keras")
    assert diff < 1e-6
    # A run folder is scored by rebuilding its model and loading the final weights.
    reloaded = evaluate_finetuned(killed, videos=load_videos(killed))
    in_memory = evaluate_finetuned(killed, resumed.classifier, load_videos(killed))
    np.testing.assert_allclose(
        [p["probabilities"] for p in reloaded["predictions"]],
        [p["probabilities"] for p in in_memory["predictions"]],
        atol=1e-6,
    )
    assert (tmp_path / "killed" / "eval_test" / "metrics.json").is_file()


@pytest.mark.slow
def test_flow_is_computed_once_per_video_and_never_in_training(video_dir, tmp_path, monkeypatch):
    calls = {"video_flow": 0, "compute_flow": 0}
    real_video_flow = flow_cache_lib.video_flow

    def counting_video_flow(*args, **kwargs):
        calls["video_flow"] += 1
        return real_video_flow(*args, **kwargs)

    def no_flow_in_training(*args, **kwargs):
        calls["compute_flow"] += 1
        raise AssertionError("flow computed while training")

    monkeypatch.setattr(flow_cache_lib, "video_flow", counting_video_flow)
    config = _config(
        video_dir,
        modality="flow",
        flow_cache_dir=str(tmp_path / "flow"),
        flow_short_side=40,
        epochs=2,
    )
    result = finetune(config)
    assert calls["video_flow"] == 6 and len(result.train.history) == 2
    files = sorted((tmp_path / "flow").rglob("*.flow.npz"))
    stamps = [f.stat().st_mtime_ns for f in files]
    monkeypatch.setattr("reslstm_tf.data.flow.compute_flow", no_flow_in_training)
    finetune(_replace(config, seed=1))
    assert calls == {"video_flow": 6, "compute_flow": 0}
    assert [f.stat().st_mtime_ns for f in files] == stamps


@pytest.mark.slow
def test_trunk_cached_step_equals_the_full_model_step(video_dir):
    # 64 px: the trunk output is 1 x 2 x 2 x 832 per segment, not a vector.
    config = _config(
        video_dir, trainable_from="Mixed_5b", max_steps=2, learning_rate=1e-2, frame_size=64
    )
    full = finetune(config).classifier
    upper = finetune(_replace(config, trunk_cache=True)).classifier
    backbone = full.get_layer("segment_encoder").backbone
    upper_backbone = upper.get_layer("segment_encoder").backbone
    compared = 0
    for layer in (layer for layer in upper_backbone.layers if layer.weights):
        for ours, theirs in zip(layer.weights, backbone.get_layer(layer.name).weights):
            np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-5)
            compared += 1
    for ours, theirs in zip(upper.get_layer("head").weights, full.get_layer("head").weights):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-5)
    assert compared > 20
    keras.utils.set_random_seed(config.train.seed)
    start = finetune_lib.build_classifier(config, 2).get_layer("head").get_weights()
    moved = max(np.max(np.abs(a - b)) for a, b in zip(start, full.get_layer("head").get_weights()))
    assert moved > 1e-4


def test_trunk_cache_refuses_a_trunk_that_is_not_fixed(video_dir):
    with pytest.raises(FinetuneError, match="frozen_batchnorm=True"):
        finetune(_config(video_dir, trunk_cache=True, frozen_batchnorm=False))
    with pytest.raises(FinetuneError, match="trainable_from must be one of"):
        finetune(_config(video_dir, trainable_from="Mixed_9z"))


@pytest.mark.slow
def test_real_skateboard_clips_fine_tune_and_score(shared_data, tmp_path):
    split = tmp_path / "few.txt"
    split.write_text("Kickflip/Kickflip11.mp4\nOllie/Ollie14.mp4\nOllie/Ollie92.mp4\n")
    config = _config(
        shared_data / "skateboard",
        split_file=str(split),
        epochs=1,
        batch_size=3,
        eval_split_file=str(split),
    )
    result = finetune(config)
    assert result.classes == ["Kickflip", "Ollie"]
    assert np.isfinite(result.train.history[0]["loss"])
    assert result.evaluation["num_videos"] == 3
    assert all(abs(sum(p["probabilities"]) - 1) < 1e-5 for p in result.evaluation["predictions"])


@pytest.mark.slow
def test_the_command_line_maps_its_flags_onto_finetune(video_dir, tmp_path):
    from tests.conftest import PROJECT_ROOT

    split = tmp_path / "eval.txt"
    split.write_text("Bright/Bright0.avi\nDark/Dark0.avi\n")
    flags = [
        f"--data_dir={video_dir}", f"--model_dir={tmp_path / 'run'}", f"--eval_split_file={split}",
        "--num_segments=2", "--segment_len=8", "--frame_size=32", "--backbone_weights=none",
        "--trainable_from=all", "--preset=res2", "--units=8", "--epochs=1", "--batch_size=3",
        "--noprogress",
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "reslstm_tf.cli.finetune", *flags],
        cwd=PROJECT_ROOT, env=cli_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 1: loss" in result.stdout and "on 2 videos" in result.stdout
    recorded = json.loads((tmp_path / "run" / "train_config.json").read_text())["finetune"]
    assert recorded["trainable_from"] is None and recorded["backbone_weights"] is None
    assert recorded["head"] == {"units": 8}
    command = [sys.executable, "-m", "reslstm_tf.cli.finetune", f"--data_dir={video_dir}"]
    bad = subprocess.run(
        [*command, "--modality=rgbd"],
        cwd=PROJECT_ROOT, env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "modality must be one of" in bad.stderr


@pytest.mark.slow
def test_trunk_views_on_disk_are_computed_once_and_train_the_same(video_dir, tmp_path):
    views_dir = tmp_path / "views"
    config = _config(
        video_dir, trainable_from="Mixed_5b", max_steps=2, learning_rate=1e-2, frame_size=64,
        trunk_cache=True, trunk_views=2,
    )  # fmt: skip
    in_memory = finetune(config).classifier
    on_disk = finetune(_replace(config, trunk_cache_dir=str(views_dir))).classifier
    for ours, theirs in zip(on_disk.weights, in_memory.weights):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-6)
    files = sorted(p.name for p in views_dir.glob("*.npy"))
    assert files == ["eval.npy", "view0.npy", "view1.npy"]
    stamps = [p.stat().st_mtime_ns for p in views_dir.glob("*.npy")]
    again = finetune(_replace(config, trunk_cache_dir=str(views_dir), max_steps=1))
    assert [p.stat().st_mtime_ns for p in views_dir.glob("*.npy")] == stamps
    assert again.classifier is not None
    with pytest.raises(ValueError, match="different: frame_size"):
        finetune(_replace(config, trunk_cache_dir=str(views_dir), frame_size=32))
    with pytest.raises(ValueError, match="different: views_seed"):
        finetune(_replace(config, trunk_cache_dir=str(views_dir), seed=1))


@pytest.mark.slow
def test_two_streams_fine_tune_end_to_end_with_late_product_fusion(video_dir, tmp_path):
    """The paper's best model as one Keras model: RGB and flow I3D, late fusion by product."""
    config = _config(
        video_dir, modality="two_stream", level="late", fusion="product", epochs=6,
        learning_rate=3e-3, flow_cache_dir=str(tmp_path / "flow"), eval_split_file="",
    )  # fmt: skip
    result = finetune(config)
    classifier = result.classifier
    assert {"rgb_encoder", "flow_encoder"} <= {layer.name for layer in classifier.layers}
    losses = [entry["loss"] for entry in result.train.history]
    assert losses[-1] < 0.7 * losses[0]
    scored = evaluate_finetuned(config, classifier, load_videos(config), classes=CLASSES)
    assert scored["top1"] >= 5 / 6
    # Late product fusion: the fused logits rank classes as the product of the two streams'.
    head = classifier.get_layer("head")
    rgb_logits = head.get_layer("rgb_logits").output
    flow_logits = head.get_layer("flow_logits").output
    probe = keras.Model(head.input, [rgb_logits, flow_logits, head.output])
    features = np.random.default_rng(0).normal(size=(3, 2, 1024)).astype("float32")
    rgb, flow, fused = (np.asarray(x) for x in probe({"rgb": features, "flow": features}))
    softmax = lambda z: np.exp(z - z.max(-1, keepdims=True)) / np.exp(  # noqa: E731
        z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)  # fmt: skip
    product = softmax(rgb) * softmax(flow)
    np.testing.assert_allclose(softmax(fused), product / product.sum(-1, keepdims=True), atol=1e-5)
