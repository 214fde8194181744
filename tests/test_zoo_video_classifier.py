"""Fine-tuned video classifiers in the zoo: int8 deltas over a base I3D, a verified round trip,
shared and removed files, tampering, and videos classified as fine-tuning evaluates them.

The classifiers are tiny (2 segments of 8 frames of 32x32 pixels, a res2 head of 8 units)
on a lab's own random I3D published as a backbone entry, except one test on the real
Kinetics-400 base.
"""

import dataclasses
import re
import shutil

import keras
import numpy as np
import pytest

from reslstm_tf import files, zoo
from reslstm_tf.backbones.extractor import feature_model
from reslstm_tf.backbones.i3d import I3D
from reslstm_tf.clip_spec import ClipSpec, field_names
from reslstm_tf.data.clips import VideoClips
from reslstm_tf.predict import VideoPredictor, load_classifier, predict_video, sample_video_path
from reslstm_tf.video_classifier import build_video_classifier
from tests import numpy_reference as ref

ARCH = {
    "kind": "video_classifier",
    "modality": "rgb",
    "backbone": "i3d",
    "preset": "res2",
    "units": 8,
    "num_segments": 2,
    "segment_len": 8,
    "frame_size": 32,
    "trainable_from": "Mixed_5b",
}
BASE_ENTRY = {
    "description": "a lab's random I3D",
    "dataset": {"name": "lab", "classes": "lab_classes.txt", "num_classes": 400},
    "architecture": {"kind": "backbone", "backbone": "i3d", "endpoint": "Logits"},
}


def _entry(**arch):
    return {
        "description": "tiny fine-tuned classifier",
        "dataset": {"name": "lab", "classes": "lab_classes.txt", "num_classes": 3},
        "architecture": {**ARCH, **arch},
        "metrics": [{"top1": 0.5, "command": "pytest"}],
        "license": "test",
    }


def _classifier(weights, modality="rgb", **head):
    return build_video_classifier(
        3, modality, preset="res2", units=8, num_segments=2, segment_len=8, frame_size=32,
        backbone_weights=weights, trainable_from="Mixed_5b", **head,
    )  # fmt: skip


def _clips(modality, seed=0):
    rng = np.random.default_rng(seed)
    channels = {"rgb": 3, "flow": 2}
    clip = {
        s: rng.uniform(-1, 1, (3, 2, 8, 32, 32, c)).astype("float32") for s, c in channels.items()
    }
    return clip if modality == "two_stream" else clip[modality]


def _train_step(model, clips):
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(clips, np.array([0, 1, 2]), epochs=1, batch_size=3, verbose=0)
    return model


def _logits(model, clips):
    return keras.ops.convert_to_numpy(model(clips, training=False))


@dataclasses.dataclass
class Lab:
    manifest: object
    base: str  # the base I3D's verified weights file


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A lab manifest read through $RESLSTM_ZOO_MANIFEST with a random I3D entry, lab_i3d."""
    root = tmp_path_factory.mktemp("lab")
    manifest = root / "zoo" / "manifest.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(zoo.MIRROR_ENV, raising=False)
        patch.setenv(zoo.MANIFEST_ENV, str(manifest))
        keras.utils.set_random_seed(0)
        zoo.publish(I3D(final_endpoint="Logits", weights=None), "lab_i3d", BASE_ENTRY, manifest)
        (manifest.parent / "lab_classes.txt").write_text("a\nb\nc\n")
        yield Lab(manifest, zoo.base_weights("lab_i3d"))


@pytest.fixture(scope="module")
def rgb(lab):
    """A tiny RGB classifier after one step, published as lab_clf (float16 head)."""
    keras.utils.set_random_seed(1)
    model = _classifier(lab.base)
    clips = _clips("rgb")
    base_logits = _logits(model, clips)
    backbone_before = model.get_layer("segment_encoder").backbone.get_weights()
    _train_step(model, clips)
    zoo.publish_video_classifier(
        model, "lab_clf", _entry(), base="lab_i3d", manifest_path=lab.manifest
    )
    return model, clips, base_logits, backbone_before


def _copy_zoo(lab, tmp_path, monkeypatch):
    """A copy of the lab zoo in tmp_path (read instead of it), to damage or republish."""
    folder = tmp_path / "zoo"
    shutil.copytree(lab.manifest.parent, folder)
    monkeypatch.setenv(zoo.MANIFEST_ENV, str(folder / "manifest.json"))
    return folder


def _numpy_dequantised(difference):
    """The delta format's definition in numpy: int8 per output channel, scale max|d| / 127."""
    d = difference.astype(np.float64)
    scale = (np.abs(d.reshape(-1, d.shape[-1])).max(axis=0) / 127).astype(np.float32)
    q = np.clip(np.rint(d / np.where(scale > 0, scale, 1).astype(np.float64)), -127, 127)
    return (q * scale).astype(np.float32)


@pytest.mark.slow
def test_publish_then_load_rebuilds_base_plus_delta_plus_head(lab, rgb):
    model, clips, base_logits, _ = rgb
    loaded = zoo.load("lab_clf")
    base = feature_model("i3d", "rgb", lab.base)
    trained_backbone = model.get_layer("segment_encoder").backbone
    expected_variables = {}
    for mine, before in zip(trained_backbone.variables, base.variables):
        after, before = keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(before)
        difference = (after.astype(np.float64) - before).astype(np.float32)
        changed = not np.array_equal(after, before)
        expected_variables[mine.path] = (
            before + _numpy_dequantised(difference) if changed else after
        )
    for variable in loaded.get_layer("segment_encoder").backbone.variables:
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(variable), expected_variables[variable.path]
        )
    for mine, theirs in zip(loaded.get_layer("head").weights, model.get_layer("head").weights):
        half = keras.ops.convert_to_numpy(theirs).astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(mine), half)

    # Against the trained model: the int8 delta moves the logits by at most ~1/254 of what the
    # step moved them (see tests/backbones/test_delta.py), and the float16 head by its
    # relative rounding, 2^-11 per weight, of the logits' size.
    target = _logits(model, clips)
    tolerance = 4 / 254 * np.abs(target - base_logits).max() + 2**-11 * 4 * np.abs(target).max()
    assert np.abs(_logits(loaded, clips) - target).max() <= tolerance
    assert loaded.zoo_entry["name"] == "lab_clf"


def test_entry_records_base_deltas_head_and_clip_spec(lab, rgb):
    model = rgb[0]
    entry = zoo.info("lab_clf")
    assert entry["base"] == "lab_i3d" and set(entry["deltas"]) == {"rgb"}
    delta = entry["deltas"]["rgb"]
    path = lab.manifest.parent / delta["file"]
    # Named after the backbone and the content, not after the first entry (shared by all).
    named = re.fullmatch(r"i3d-rgb-delta-([0-9a-f]{8})\.npz", delta["file"])
    assert named and delta["sha256"].startswith(named.group(1)), delta
    assert delta["sha256"] == files.sha256_of(path)
    assert delta["bytes"] == path.stat().st_size
    # About a byte per fine-tuned weight (Mixed_5b and 5c): a quarter of float32.
    trained = sum(
        int(np.prod(v.shape))
        for v in model.get_layer("segment_encoder").backbone.trainable_variables
    )
    assert trained < delta["bytes"] < 1.01 * trained + (64 << 10)
    assert entry["weights"]["dtype"] == "float16"
    assert entry["weights"]["sha256"] == files.sha256_of(
        lab.manifest.parent / entry["weights"]["file"]
    )
    clip = ClipSpec(num_segments=ARCH["num_segments"], segment_len=ARCH["segment_len"])
    clip = clip.replace(frame_size=ARCH["frame_size"])  # the architecture's clip shape
    assert entry["features"] == {"rgb": clip.to_dict()}  # the whole spec, serialised
    assert clip.short_side == 37 and clip.short == "loop"
    assert entry["architecture"] == ARCH and entry["metrics"][0]["command"] == "pytest"


@pytest.mark.slow
def test_every_video_classifier_entry_rebuilds_and_names_its_files():
    """Every published "video_classifier" entry of the zoo (the lab's, while they are read)."""
    names = [n for n in zoo.list() if zoo.info(n)["architecture"]["kind"] == "video_classifier"]
    for name in names:
        entry, arch = zoo.info(name), zoo.info(name)["architecture"]
        model = zoo.build(name)
        steps, length, size = arch["num_segments"], arch["segment_len"], arch["frame_size"]
        inputs = model.input if isinstance(model.input, dict) else {"clips": model.input}
        for clips in inputs.values():
            assert tuple(clips.shape[1:5]) == (steps, length, size, size), name
        assert model.output_shape == (None, entry["dataset"]["num_classes"]), name
        assert len(zoo.class_names(name)) == entry["dataset"]["num_classes"], name
        streams = ("rgb", "flow") if arch["modality"] == "two_stream" else (arch["modality"],)
        assert set(entry["deltas"]) == set(streams), name
        assert zoo.info(entry["base"])["architecture"]["kind"] == "backbone", name
        assert {"file", "sha256", "bytes"} <= set(entry["weights"]), name


def test_build_gives_the_untrained_architecture(lab, rgb):
    model = zoo.build("lab_clf")
    assert model.input_shape == (None, 2, 8, 32, 32, 3) and model.output_shape == (None, 3)
    assert model.get_layer("head").get_layer("residual_lstm").units == 8


def test_tampered_or_truncated_delta_is_refused_naming_it_before_anything_is_built(
    lab, rgb, tmp_path, monkeypatch
):
    folder = _copy_zoo(lab, tmp_path, monkeypatch)
    delta = folder / zoo.info("lab_clf")["deltas"]["rgb"]["file"]
    built = []
    monkeypatch.setattr(zoo.video, "build_classifier", lambda *args: built.append(args))
    data = delta.read_bytes()
    delta.write_bytes(data[:1000] + bytes([data[1000] ^ 1]) + data[1001:])
    with pytest.raises(files.ChecksumError, match=rf"sha256 mismatch for {re.escape(str(delta))}"):
        zoo.load("lab_clf")
    delta.write_bytes(data[: len(data) // 2])
    with pytest.raises(files.ChecksumError, match=rf"sha256 mismatch for {re.escape(str(delta))}"):
        zoo.load("lab_clf")
    assert built == []


@pytest.mark.slow
def test_identical_deltas_share_a_file_and_replaced_ones_are_deleted(
    lab, rgb, tmp_path, monkeypatch
):
    model = rgb[0]
    folder = _copy_zoo(lab, tmp_path, monkeypatch)
    manifest = folder / "manifest.json"
    first = zoo.info("lab_clf")["deltas"]["rgb"]["file"]
    # A second head on the same fine-tuned I3D: its delta is the same bytes, one file.
    shared = zoo.publish_video_classifier(
        model, "lab_clf_b", _entry(), base="lab_i3d", manifest_path=manifest
    )
    assert shared["deltas"]["rgb"]["file"] == first
    assert len(list(folder.glob("*.npz"))) == 1

    changed = _classifier(lab.base)
    changed.set_weights(model.get_weights())
    kernel = (
        changed.get_layer("segment_encoder")
        .backbone.get_layer("Mixed_5c.Branch_0.Conv3d_0a_1x1.conv")
        .kernel
    )
    kernel.assign(kernel + 1e-3)
    second = zoo.publish_video_classifier(
        changed, "lab_clf", _entry(), base="lab_i3d", manifest_path=manifest
    )
    assert second["deltas"]["rgb"]["file"] != first
    assert (folder / first).is_file()  # lab_clf_b still uses it
    zoo.publish_video_classifier(
        changed, "lab_clf_b", _entry(), base="lab_i3d", manifest_path=manifest
    )
    assert sorted(p.name for p in folder.glob("*.npz")) == [second["deltas"]["rgb"]["file"]]
    heads = {zoo.info(n)["weights"]["file"] for n in ("lab_clf", "lab_clf_b", "lab_i3d")}
    assert sorted(p.name for p in folder.glob("*.h5")) == sorted(heads)
    clips = rgb[1]
    np.testing.assert_allclose(
        _logits(zoo.load("lab_clf_b"), clips), _logits(changed, clips), atol=1e-3
    )


@pytest.mark.slow
def test_publish_killed_before_the_manifest_leaves_the_old_entry(lab, rgb, tmp_path, monkeypatch):
    model, clips = rgb[0], rgb[1]
    folder = _copy_zoo(lab, tmp_path, monkeypatch)
    before = sorted(p.name for p in folder.iterdir())
    old = _logits(zoo.load("lab_clf"), clips)
    changed = _classifier(lab.base)
    changed.set_weights(model.get_weights())
    kernel = (
        changed.get_layer("segment_encoder")
        .backbone.get_layer("Mixed_5b.Branch_3.Conv3d_0b_1x1.conv")
        .kernel
    )
    kernel.assign(kernel * 1.5)

    class Killed(BaseException):
        pass

    def die(point):
        if point == "publish_weights_written":
            raise Killed(point)

    monkeypatch.setattr(zoo.publishing, "fault_point", die)
    with pytest.raises(Killed):
        zoo.publish_video_classifier(
            changed, "lab_clf", _entry(), base="lab_i3d", manifest_path=folder / "manifest.json"
        )
    np.testing.assert_array_equal(_logits(zoo.load("lab_clf"), clips), old)  # old files intact
    monkeypatch.setattr(zoo.publishing, "fault_point", lambda point: None)
    kernel.assign(kernel * 1.2)  # retrained: the killed run's delta is referenced by no entry
    entry = zoo.publish_video_classifier(
        changed, "lab_clf", _entry(), base="lab_i3d", manifest_path=folder / "manifest.json"
    )
    new_files = {entry["weights"]["file"], entry["deltas"]["rgb"]["file"]}
    kept = {"manifest.json", "lab_classes.txt", zoo.info("lab_i3d")["weights"]["file"]}
    # the old files and the killed run's delta deleted
    assert {p.name for p in folder.iterdir()} == kept | new_files
    assert set(before) - kept - new_files  # there were old files to delete
    np.testing.assert_allclose(
        _logits(zoo.load("lab_clf"), clips), _logits(changed, clips), atol=1e-3
    )


@pytest.mark.slow
def test_publish_refuses_an_entry_that_does_not_rebuild_the_classifier(lab, rgb, tmp_path):
    model = rgb[0]
    manifest = tmp_path / "manifest.json"
    with pytest.raises(
        ValueError, match=r"describes a head whose weight 0 .* has shape \(1024, 64\)"
    ):
        zoo.publish_video_classifier(model, "lab_x", _entry(units=16), "lab_i3d", manifest)
    with pytest.raises(
        ValueError, match=r"describes a classifier of input \(None, 2, 8, 64, 64, 3\)"
    ):
        zoo.publish_video_classifier(model, "lab_x", _entry(frame_size=64), "lab_i3d", manifest)
    with pytest.raises(ValueError, match=r"kind'\] must be 'video_classifier'"):
        zoo.publish_video_classifier(
            model, "lab_x", _entry(kind="single_stream"), "lab_i3d", manifest
        )
    with pytest.raises(
        ValueError, match=r"a base must be a backbone entry .* 'lab_clf' is a 'video_classifier'"
    ):
        zoo.publish_video_classifier(model, "lab_x", _entry(), "lab_clf", manifest)
    # Trained from the lab's I3D, so its frozen layers are not Kinetics-400's.
    with pytest.raises(ValueError, match=r"differs from base 'kinetics400_i3d' in 'Conv3d_1a_7x7"):
        zoo.publish_video_classifier(model, "lab_x", _entry(), "kinetics400_i3d", manifest)
    assert not manifest.exists() and list(tmp_path.iterdir()) == []


def _eval_clips(modality, flow_method="tvl1"):
    """The sample clip as fine-tuning's evaluation reads it (data.clips, eval mode)."""
    video = sample_video_path()
    clips = VideoClips(
        [(video.name, 0)], video.parent, modality=modality, num_segments=2, segment_len=8,
        frame_size=32, flow_method=flow_method, short="loop",
    ).load(0, mode="eval")  # fmt: skip
    return {"rgb": clips[0], "flow": clips[1]} if modality == "two_stream" else clips[0]


def test_predict_video_equals_the_classifier_on_the_clip_fine_tuning_evaluates(lab, rgb):
    classifier = load_classifier("lab_clf")
    assert classifier.end_to_end and not classifier.takes_frames and not classifier.two_stream
    assert classifier.class_names == ["a", "b", "c"] and classifier.flow_spec is None
    prediction = predict_video(classifier, sample_video_path(), top_k=3)
    expected = ref.softmax(_logits(classifier.model, _eval_clips("rgb")[None]))[0]
    np.testing.assert_allclose(prediction.probabilities, expected, atol=1e-5)
    assert [name for name, _ in prediction.top_k] == [
        ["a", "b", "c"][i] for i in np.argsort(-expected)
    ]
    # Per segment: the head after the first segment, then after both (the whole video).
    assert len(prediction.segments) == 2 and prediction.thumbnails.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(
        [p for _, p in prediction.segments[-1]], [p for _, p in prediction.top_k], atol=1e-5
    )
    assert prediction.frame_indices.shape == (2, 8)


def test_the_clip_shape_of_a_video_classifier_cannot_change(lab, rgb):
    model = zoo.load("lab_clf")
    with pytest.raises(ValueError, match=r"takes clips of 2 segments of 8 frames of 32x32 pixels"):
        load_classifier(model, spec={"frame_size": 64})
    with pytest.raises(ValueError, match=r"exactly 2 segments. Received: num_segments=4"):
        VideoPredictor(load_classifier(model), num_segments=4)


@pytest.mark.slow
def test_two_stream_round_trip_and_prediction_with_the_entry_s_flow_method(lab):
    keras.utils.set_random_seed(2)
    model = _classifier(lab.base, "two_stream", fusion="product", level="late")
    clips = _clips("two_stream")
    _train_step(model, clips)
    entry = _entry(modality="two_stream", fusion="product", level="late")
    entry["features"] = {"flow": {"flow_method": "farneback"}}
    published = zoo.publish_video_classifier(
        model, "lab_two", entry, "lab_i3d", lab.manifest, dtype="float32"
    )
    assert set(published["deltas"]) == {"rgb", "flow"}
    flow_spec = ClipSpec.from_dict(published["features"]["flow"])  # a whole serialised spec
    assert set(published["features"]["flow"]) == set(field_names())
    assert (flow_spec.modality, flow_spec.flow_method, flow_spec.short) == (
        "flow",
        "farneback",
        "loop",
    )
    assert flow_spec.short_side == 37  # 32 * 256 / 224, as fine-tuning resized
    classifier = load_classifier("lab_two")
    # float32 head: only the int8 deltas differ (far below this tolerance; see test_delta.py).
    np.testing.assert_allclose(_logits(classifier.model, clips), _logits(model, clips), atol=1e-3)
    assert classifier.two_stream and classifier.flow_spec["flow_method"] == "farneback"
    prediction = predict_video(classifier, sample_video_path(), top_k=3)
    inputs = {s: c[None] for s, c in _eval_clips("two_stream", "farneback").items()}
    expected = ref.softmax(_logits(classifier.model, inputs))[0]
    np.testing.assert_allclose(prediction.probabilities, expected, atol=1e-5)


@pytest.mark.slow
def test_round_trip_over_the_real_kinetics400_base(tmp_path, monkeypatch):
    manifest = tmp_path / "zoo" / "manifest.json"
    monkeypatch.setenv(zoo.MANIFEST_ENV, str(manifest))
    manifest.parent.mkdir()
    manifest.write_text('{"format_version": 1, "entries": {}}')
    (manifest.parent / "lab_classes.txt").write_text("a\nb\nc\n")
    keras.utils.set_random_seed(3)
    model = _classifier("kinetics400")
    clips = _clips("rgb")
    base_logits = _logits(model, clips)
    _train_step(model, clips)
    entry = zoo.publish_video_classifier(model, "lab_k400", _entry(), manifest_path=manifest)
    assert entry["base"] == "kinetics400_i3d"
    written = {entry["weights"]["file"], entry["deltas"]["rgb"]["file"]}
    assert {p.name for p in manifest.parent.iterdir()} == {
        "manifest.json",
        "lab_classes.txt",
    } | written
    loaded = zoo.load("lab_k400")
    kinetics = feature_model("i3d", "rgb", "kinetics400").get_layer("Conv3d_1a_7x7.conv").kernel
    stem = loaded.get_layer("segment_encoder").backbone.get_layer("Conv3d_1a_7x7.conv").kernel
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(stem), keras.ops.convert_to_numpy(kinetics)
    )
    target = _logits(model, clips)
    tolerance = 4 / 254 * np.abs(target - base_logits).max() + 2**-11 * 4 * np.abs(target).max()
    assert np.abs(_logits(loaded, clips) - target).max() <= tolerance
