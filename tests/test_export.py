"""SavedModel export: served with no reslstm_tf code, saved_model_cli, video signature."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from reslstm_tf.export.saved_model import export_saved_model, video_to_segments
from reslstm_tf.models import build_single_stream
from tests import numpy_reference as ref

CLASSES = ["jump", "run", "sit", "wave"]


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = build_single_stream(4, "res2", feature_dim=16, units=16, num_steps=5)
    backbone = keras.Sequential(
        [keras.Input((3, 8, 8, 3)), keras.layers.GlobalAveragePooling3D(), keras.layers.Dense(16)]
    )
    path = tmp_path_factory.mktemp("export") / "model"
    export_saved_model(
        model, path, CLASSES, top_k=3, backbone=backbone, segment_len=3, frame_size=8
    )
    return model, backbone, path


@pytest.mark.slow
def test_served_without_reslstm_tf_matches_keras(exported, tmp_path):
    model, _, path = exported
    rng = np.random.default_rng(1)
    for batch in (1, 7):
        x = rng.random((batch, 5, 16)).astype("float32")
        np.save(tmp_path / f"x{batch}.npy", x)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["reslstm_tf"] = None  # importing it now raises ImportError
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({str(path)!r})
        serve = loaded.signatures["serving_default"]
        for batch in (1, 7):
            x = np.load({str(tmp_path)!r} + f"/x{{batch}}.npy")
            out = serve(features=tf.constant(x))
            np.save({str(tmp_path)!r} + f"/logits{{batch}}.npy", out["logits"].numpy())
            names = [n.decode() for n in out["top_k_classes"].numpy()[0]]
            print(batch, names)
            states = tf.zeros((batch, 2, 2, 16))
            for t in range(5):
                step = loaded.signatures["serve_step"](features=x[:, t], states=states)
                states = step["states"]
            np.save({str(tmp_path)!r} + f"/streamed{{batch}}.npy", step["probabilities"].numpy())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for batch in (1, 7):
        x = np.load(tmp_path / f"x{batch}.npy")
        served = np.load(tmp_path / f"logits{batch}.npy")
        expected = keras.ops.convert_to_numpy(model(x))
        assert np.max(np.abs(served - expected)) < 1e-5
        streamed = np.load(tmp_path / f"streamed{batch}.npy")
        assert np.max(np.abs(streamed - ref.softmax(expected))) < 1e-5
    top1 = CLASSES[int(keras.ops.convert_to_numpy(model(np.load(tmp_path / "x1.npy"))).argmax())]
    assert result.stdout.split("\n")[0].startswith(f"1 ['{top1}'")


@pytest.mark.slow
def test_saved_model_cli_show_and_run(exported, tmp_path):
    model, _, path = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run(
        [cli, "show", "--dir", str(path), "--all"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "signature_def['serving_default']" in shown.stdout
    assert "signature_def['serve_video']" in shown.stdout
    assert "outputs['top_k_classes']" in shown.stdout
    x = np.random.default_rng(2).random((2, 5, 16)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run(
        [
            cli,
            "run",
            "--dir",
            str(path),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"features={tmp_path / 'x.npy'}",
            "--outdir",
            str(tmp_path / "out"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    served = np.load(tmp_path / "out" / "logits.npy")
    assert np.max(np.abs(served - keras.ops.convert_to_numpy(model(x)))) < 1e-5


def test_video_signature_equals_backbone_then_head(exported):
    import tensorflow as tf

    model, backbone, path = exported
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, size=(2, 11, 8, 8, 3), dtype=np.uint8)
    served = tf.saved_model.load(str(path)).signatures["serve_video"](frames=tf.constant(frames))
    # Independent reference: frames already 8x8, so no resize; evenly spaced starts.
    starts = np.round(np.linspace(0, 11 - 3, 5)).astype(int)
    indices = np.minimum(starts[:, None] + np.arange(3)[None, :], 10)
    segments = frames[:, indices].astype("float32") / 127.5 - 1.0
    feats = keras.ops.convert_to_numpy(backbone(segments.reshape(-1, 3, 8, 8, 3)))
    expected = keras.ops.convert_to_numpy(model(feats.reshape(2, 5, 16)))
    np.testing.assert_allclose(served["logits"].numpy(), expected, atol=1e-5)


def test_video_to_segments_resizes_short_side_and_crops_centre():
    import tensorflow as tf

    frames = np.zeros((1, 4, 20, 40, 3), np.uint8)
    frames[:, :, :, 6:34] = 255  # A white centre band a little wider than the crop.
    segments = video_to_segments(tf.constant(frames), 2, 2, 10).numpy()
    assert segments.shape == (1, 2, 2, 10, 10, 3)
    assert segments.min() > 0.99  # The crop is all white: centred.
    assert video_to_segments(tf.constant(frames[..., ::-1, :]), 2, 2, 10).numpy().min() > 0.99


def test_export_refuses_existing_dir_and_bad_arguments(exported, tmp_path):
    model, _, path = exported
    with pytest.raises(FileExistsError, match="already exists"):
        export_saved_model(model, path, CLASSES)
    with pytest.raises(ValueError, match="class_names has 2 names but the model has 4 outputs"):
        export_saved_model(model, tmp_path / "m", CLASSES[:2])


@pytest.mark.slow
def test_streaming_client_example_keeps_states(exported, tmp_path):
    model, _, path = exported
    features = np.random.default_rng(4).random((5, 16)).astype("float32")
    np.save(tmp_path / "f.npy", features)
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "stream_client.py")
    result = subprocess.run(
        [
            sys.executable,
            example,
            "--features",
            str(tmp_path / "f.npy"),
            "--saved_model",
            str(path),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("segment")]
    assert len(lines) == 5
    final = ref.softmax(keras.ops.convert_to_numpy(model(features[None])))[0]
    top = int(final.argmax())
    assert lines[-1].startswith(f"segment 5: {top} {final[top]:.2f}")


@pytest.mark.slow
def test_export_cli_video_signature_runs_the_real_i3d(tmp_path, shared_data):
    """serve_video on the cricket clip equals I3D features then the head, in process."""
    import tensorflow as tf

    from reslstm_tf.backbones.extractor import SegmentFeatureExtractor
    from reslstm_tf.cli.export import export
    from reslstm_tf.data.video import probe, read_frames

    keras.utils.set_random_seed(0)
    model = build_single_stream(2, "res2", feature_dim=1024, units=32, num_steps=4)
    model.save(tmp_path / "head.keras")
    (tmp_path / "classes.txt").write_text("cricket\nother\n")
    path = export(tmp_path / "head.keras", tmp_path / "saved", tmp_path / "classes.txt", top_k=2)
    clip = shared_data / "kinetics_i3d" / "v_CricketShot_g04_c01_rgb.gif"
    frames = read_frames(clip, np.arange(probe(clip).frame_count))[None]
    served = tf.saved_model.load(str(path)).signatures["serve_video"](frames=tf.constant(frames))
    segments = video_to_segments(tf.constant(frames), 4, 16, 224).numpy()[0]
    features = SegmentFeatureExtractor("i3d", "rgb", jit_compile=False)(segments)
    expected = keras.ops.convert_to_numpy(model(features[None]))
    np.testing.assert_allclose(served["logits"].numpy(), expected, atol=1e-4)
