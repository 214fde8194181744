"""SavedModel export: served with no reslstm_tf code, saved_model_cli, video signature."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from reslstm_tf.clip_spec import ClipSpec
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
        model,
        path,
        CLASSES,
        top_k=3,
        backbone=backbone,
        segment_len=3,
        frame_size=8,
        short_side=8,
        short="overlap",
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
    # Derived by hand: 11 frames hold fewer than 5 windows of 3, so 'overlap' centres the
    # windows on the parts' centres (2k + 1) * 11 // 10 = 1, 3, 5, 7, 9: starts 0, 2, .., 8.
    # The frames are already 8x8 and the short side target is 8: no resize, no crop.
    indices = np.array([[0, 1, 2], [2, 3, 4], [4, 5, 6], [6, 7, 8], [8, 9, 10]])
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


def test_video_to_segments_equals_the_extraction_transform():
    # The expectation is the OpenCV path of extraction (transform_frames, resize to
    # 64 * 256 / 224 = 73, centre crop 64) on the frames sampled by hand: 9 frames, 3 windows
    # of 4 > 9 frames, 'overlap' centres (2k + 1) * 9 // 6 = 1, 4, 7 -> starts 0, 2, 5.
    import tensorflow as tf

    from reslstm_tf.data.video import transform_frames

    rng = np.random.default_rng(5)
    ramp = np.linspace(0, 200, 90)[None, None, :, None]
    frames = np.clip(ramp + rng.integers(0, 50, (2, 9, 60, 90, 3)), 0, 255).astype(np.uint8)
    indices = np.array([[0, 1, 2, 3], [2, 3, 4, 5], [5, 6, 7, 8]])
    got = video_to_segments(tf.constant(frames), 3, 4, 64, short="overlap").numpy()
    assert got.shape == (2, 3, 4, 64, 64, 3)
    for video in range(2):
        picked = frames[video, indices.reshape(-1)]
        expected = transform_frames(picked, short_side=73, crop_size=64).reshape(3, 4, 64, 64, 3)
        np.testing.assert_allclose(got[video], expected, atol=1e-6)  # 60 -> 73: enlarged
    loop = video_to_segments(tf.constant(frames), 3, 4, 64, short="loop").numpy()
    # 'loop' plays the 9 frames in a loop: windows 0-3, 4-7, 8 0 1 2.
    np.testing.assert_allclose(loop[0, 2, 1], got[0, 0, 0], atol=1e-6)


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
    example = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "stream_client.py")
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
def test_streaming_client_reads_a_feature_cache_and_prints_class_names(exported, tmp_path):
    from reslstm_tf.data.feature_cache import FeatureCacheWriter

    model, _, path = exported
    rng = np.random.default_rng(5)
    clips = {f"{name}/{name}0.mp4": rng.random((5, 16)).astype("float32") for name in CLASSES}
    with FeatureCacheWriter(tmp_path / "cache", metadata={"classes": CLASSES}) as writer:
        for label, (video, features) in enumerate(clips.items()):
            writer.add(video, label, features)
    example = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "stream_client.py")
    video = "sit/sit0.mp4"
    result = subprocess.run(
        [
            sys.executable,
            example,
            f"--features_dir={tmp_path / 'cache'}",
            f"--video={video}",
            f"--saved_model={path}",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("segment")]
    final = ref.softmax(keras.ops.convert_to_numpy(model(clips[video][None])))[0]
    top = int(final.argmax())
    assert lines[-1].startswith(f"segment 5: {CLASSES[top]} {final[top]:.2f}"), lines[-1]


@pytest.mark.slow
def test_export_cli_video_signature_runs_the_real_i3d(tmp_path, shared_data):
    """serve_video on the cricket clip equals I3D features then the head, in process."""
    import tensorflow as tf

    from reslstm_tf.data.video import probe, read_frames
    from reslstm_tf.export.saved_model import export_model

    keras.utils.set_random_seed(0)
    model = build_single_stream(2, "res2", feature_dim=1024, units=32, num_steps=4)
    model.save(tmp_path / "head.keras")
    (tmp_path / "classes.txt").write_text("cricket\nother\n")
    path = export_model(
        tmp_path / "head.keras", tmp_path / "saved", tmp_path / "classes.txt", top_k=2
    )
    clip = shared_data / "kinetics_i3d" / "v_CricketShot_g04_c01_rgb.gif"
    frames = read_frames(clip, np.arange(probe(clip).frame_count))[None]
    served = tf.saved_model.load(str(path)).signatures["serve_video"](frames=tf.constant(frames))
    # The expectation: what reslstm-extract caches for the clip with the default spec
    # (4 segments of 16 frames, 224 crops of a 256 short side, 'overlap'), then the head.
    features = _extracted_features(clip, tmp_path / "cache", 4, 16, 224)
    expected = keras.ops.convert_to_numpy(model(features[None]))
    np.testing.assert_allclose(served["logits"].numpy(), expected, atol=1e-4)


def _extracted_features(clip, cache, num_segments, segment_len, frame_size):
    """The (K, 1024) features the extraction library caches for one clip, real I3D weights."""
    from reslstm_tf.backbones.extractor import SegmentFeatureExtractor
    from reslstm_tf.data import feature_cache
    from reslstm_tf.data.datasets import VideoItem
    from reslstm_tf.extract import ExtractConfig, extract

    config = ExtractConfig(
        data_dir=clip.parent,
        out_dir=cache,
        clip=ClipSpec(
            num_segments=num_segments,
            segment_len=segment_len,
            frame_size=frame_size,
            short="overlap",
        ),
    )
    extractor = SegmentFeatureExtractor("i3d", "rgb", jit_compile=False)
    summary = extract(
        config, videos=[VideoItem(clip.name, 0, "x")], extractor=extractor, progress=False
    )
    assert summary["done"] == 1, summary
    (record,) = feature_cache.read_features(cache)
    return record["features"]


@pytest.mark.slow
def test_serve_video_equals_extraction_then_head_on_a_real_clip(tmp_path, shared_data):
    """serve_video's probabilities are those of the cached features through the head."""
    import tensorflow as tf

    from reslstm_tf.backbones.extractor import feature_model
    from reslstm_tf.data.video import probe, read_frames

    # 30 frames hold fewer than 4 windows of 8: the 'overlap' branch of the sampler; the
    # 456x256 frames shrink by exactly 2 to the 128 short side of a 112 crop.
    clip = shared_data / "skateboard" / "Kickflip" / "Kickflip2.mp4"
    keras.utils.set_random_seed(1)
    model = build_single_stream(2, "lstm2", feature_dim=1024, units=32, num_steps=4)
    path = export_saved_model(
        model,
        tmp_path / "saved",
        ["kickflip", "ollie"],
        top_k=2,
        backbone=feature_model("i3d", "rgb"),
        segment_len=8,
        frame_size=112,
        short="overlap",
    )
    frames = read_frames(clip, np.arange(probe(clip).frame_count))[None]
    assert frames.shape[1] < 4 * 8
    served = tf.saved_model.load(str(path)).signatures["serve_video"](frames=tf.constant(frames))
    features = _extracted_features(clip, tmp_path / "cache", 4, 8, 112)
    logits = keras.ops.convert_to_numpy(model(features[None]))
    np.testing.assert_allclose(served["logits"].numpy(), logits, atol=1e-4)
    expected = ref.softmax(logits)
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-4)
    assert 0.01 < expected[0, 0] < 0.99  # a head that is not saturated: the check has teeth


@pytest.fixture(scope="module")
def two_stream(tmp_path_factory):
    from reslstm_tf.models import build_two_stream

    keras.utils.set_random_seed(2)
    model = build_two_stream(4, "res2", units=8, num_steps=5, rgb_dim=16, flow_dim=16)
    path = tmp_path_factory.mktemp("export") / "two_stream"
    export_saved_model(model, path, CLASSES, top_k=2)
    return model, path


@pytest.mark.slow
def test_two_stream_served_without_reslstm_tf_matches_keras(two_stream, tmp_path):
    model, path = two_stream
    rng = np.random.default_rng(6)
    rgb, flow = (rng.random((3, 5, 16)).astype("float32") for _ in range(2))
    np.save(tmp_path / "rgb.npy", rgb)
    np.save(tmp_path / "flow.npy", flow)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["reslstm_tf"] = None  # importing it now raises ImportError
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({str(path)!r})
        rgb, flow = (np.load({str(tmp_path)!r} + f"/{{n}}.npy") for n in ("rgb", "flow"))
        out = loaded.signatures["serving_default"](
            rgb_features=tf.constant(rgb), flow_features=tf.constant(flow)
        )
        np.save({str(tmp_path)!r} + "/logits.npy", out["logits"].numpy())
        step = loaded.signatures["serve_step"]
        shapes = {{k: v.shape for k, v in step.structured_input_signature[1].items()}}
        states = {{
            name: tf.zeros((3, *shapes[name][1:])) for name in ("rgb_states", "flow_states")
        }}
        for t in range(5):
            out = step(rgb_features=rgb[:, t], flow_features=flow[:, t], **states)
            states = {{name: out[name] for name in states}}
        np.save({str(tmp_path)!r} + "/streamed.npy", out["probabilities"].numpy())
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
    expected = keras.ops.convert_to_numpy(model({"rgb": rgb, "flow": flow}))
    assert np.max(np.abs(np.load(tmp_path / "logits.npy") - expected)) < 1e-5
    streamed = np.load(tmp_path / "streamed.npy")
    assert np.max(np.abs(streamed - ref.softmax(expected))) < 1e-5


def test_two_stream_mid_fusion_steps_equal_the_sequence(tmp_path):
    import tensorflow as tf

    from reslstm_tf.models import build_two_stream

    keras.utils.set_random_seed(3)
    model = build_two_stream(3, "res2", fusion="sum", level="mid", units=8, num_steps=4,
                             rgb_dim=8, flow_dim=8)  # fmt: skip
    path = export_saved_model(model, tmp_path / "mid", CLASSES[:3], top_k=3)
    loaded = tf.saved_model.load(str(path))
    rng = np.random.default_rng(7)
    rgb, flow = (rng.random((2, 4, 8)).astype("float32") for _ in range(2))
    full = loaded.signatures["serving_default"](
        rgb_features=tf.constant(rgb), flow_features=tf.constant(flow)
    )
    expected = keras.ops.convert_to_numpy(model({"rgb": rgb, "flow": flow}))
    np.testing.assert_allclose(full["logits"].numpy(), expected, atol=1e-5)
    states = tf.zeros((2, 2, 2, 8))
    for t in range(4):
        out = loaded.signatures["serve_step"](
            rgb_features=rgb[:, t], flow_features=flow[:, t], states=states
        )
        states = out["states"]
    np.testing.assert_allclose(out["probabilities"].numpy(), ref.softmax(expected), atol=1e-5)
    with pytest.raises(ValueError, match="serve_video takes RGB frames"):
        export_saved_model(model, tmp_path / "v", CLASSES[:3], 3, backbone=keras.Sequential())


def _export_cli(model_file, classes, export_dir, fault=None):
    from tests.cli.helpers import run_cli

    env = {"RESLSTM_FAULT": fault} if fault else {}
    return run_cli(
        "export",
        f"--model={model_file}",
        f"--classes={classes}",
        f"--export_dir={export_dir}",
        "--novideo_signature",
        "--overwrite",
        env=env,
    )


@pytest.mark.slow
def test_overwrite_keeps_the_old_version_until_the_new_one_is_in_place(tmp_path):
    import tensorflow as tf

    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    x = np.random.default_rng(8).random((1, 5, 16)).astype("float32")
    models = {}
    for name, seed in (("old", 0), ("new", 1)):
        keras.utils.set_random_seed(seed)
        models[name] = build_single_stream(4, "res2", feature_dim=16, units=8, num_steps=5)
        models[name].save(tmp_path / f"{name}.keras")
    export_dir = tmp_path / "export"

    def serves(name):
        loaded = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
        logits = loaded(features=tf.constant(x))["logits"].numpy()
        return np.max(np.abs(logits - keras.ops.convert_to_numpy(models[name](x)))) < 1e-5

    assert _export_cli(tmp_path / "old.keras", tmp_path / "classes.txt", export_dir).returncode == 0
    assert serves("old")
    killed = _export_cli(
        tmp_path / "new.keras", tmp_path / "classes.txt", export_dir, "export_written"
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert serves("old")  # the new version was complete beside it, never in its place
    killed = _export_cli(
        tmp_path / "new.keras", tmp_path / "classes.txt", export_dir, "export_swapped"
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert serves("new")  # swapped in; only the old version's removal was cut short
    done = _export_cli(tmp_path / "old.keras", tmp_path / "classes.txt", export_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert serves("old") and sorted(p.name for p in tmp_path.iterdir() if "export" in p.name) == [
        "export"
    ]


@pytest.mark.slow
def test_export_cli_names_an_unknown_entry(tmp_path):
    from tests.cli.helpers import run_cli

    result = run_cli("export", "--model=hmdb51_res9", f"--export_dir={tmp_path / 'e'}")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("reslstm-export: error: unknown zoo entry 'hmdb51_res9'"), line
    assert "Traceback" not in result.stderr


# Runs `reslstm-export`; as process "a" it pauses before writing the SavedModel until the file
# `go` exists (the folder checked, the graphs traced).
_EXPORTER = textwrap.dedent(
    """
    import pathlib, sys, time
    from reslstm_tf.cli import export as cli
    from reslstm_tf.export import saved_model
    role, folder = sys.argv[1], pathlib.Path(sys.argv[2])
    if role == "a":
        write_out = saved_model._write_out
        def paused(*args, **kwargs):
            (folder / "a_paused").touch()
            deadline = time.monotonic() + 120
            while not (folder / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            return write_out(*args, **kwargs)
        saved_model._write_out = paused
    sys.argv = ["reslstm-export", *sys.argv[3:]]
    cli.run()
    """
)


def _exporter(role, tmp_path, model_file):
    args = [f"--model={model_file}", f"--classes={tmp_path / 'classes.txt'}"]
    args += [f"--export_dir={tmp_path / 'export'}", "--novideo_signature"]
    command = [sys.executable, "-c", _EXPORTER, role, str(tmp_path), *args]
    return subprocess.Popen(
        command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_two_exports_into_one_new_folder_the_second_is_refused(tmp_path):
    import time

    import tensorflow as tf

    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    x = np.random.default_rng(8).random((1, 5, 16)).astype("float32")
    models = {}
    for name, seed in (("a", 0), ("b", 1)):
        keras.utils.set_random_seed(seed)
        models[name] = build_single_stream(4, "res2", feature_dim=16, units=8, num_steps=5)
        models[name].save(tmp_path / f"{name}.keras")
    first = _exporter("a", tmp_path, tmp_path / "a.keras")
    deadline = time.monotonic() + 300
    while not (tmp_path / "a_paused").exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1]
        time.sleep(0.05)
    second = _exporter("b", tmp_path, tmp_path / "b.keras")
    _, second_err = second.communicate(timeout=300)
    (tmp_path / "go").touch()
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err[-2000:]
    assert second.returncode == 2, second_err[-2000:]
    assert "export directory" in second_err and "already exists" in second_err
    served = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
    logits = served(features=tf.constant(x))["logits"].numpy()
    np.testing.assert_allclose(logits, keras.ops.convert_to_numpy(models["a"](x)), atol=1e-5)


def test_export_reads_a_relative_classes_path_against_the_current_directory(tmp_path, monkeypatch):
    from reslstm_tf.export.saved_model import export_model

    keras.utils.set_random_seed(0)
    build_single_stream(4, "res2", feature_dim=16, units=8, num_steps=5).save(
        tmp_path / "head.keras"
    )
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    monkeypatch.chdir(tmp_path)
    export_model("head.keras", "export", classes="classes.txt", video_signature=False)
    assert (tmp_path / "export" / "saved_model.pb").is_file()
    with pytest.raises(FileNotFoundError, match=f"no file {tmp_path / 'missing.txt'}"):
        export_model("head.keras", "other", classes="missing.txt", video_signature=False)
    assert not (tmp_path / "other").exists()
