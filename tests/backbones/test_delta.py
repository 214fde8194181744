"""Weight deltas: only what fine-tuning changed, int8 within half a scale, refused when damaged."""

import zipfile

import keras
import numpy as np
import pytest

from reslstm_tf.backbones.delta import (
    DeltaFileError,
    apply_delta,
    compute_delta,
    load_delta,
    save_delta,
)
from reslstm_tf.backbones.extractor import feature_model
from reslstm_tf.backbones.i3d import VALID_ENDPOINTS
from reslstm_tf.files import ChecksumError
from reslstm_tf.video_classifier import build_video_classifier

TINY = dict(num_segments=2, segment_len=8, frame_size=32, backbone_weights=None, units=8)
FIRST_TRAINED = "Mixed_5b"


def _half_scale(difference):
    """Numpy reference of the bound: half of max|d| / 127 over each last-axis channel."""
    d = np.asarray(difference, np.float64)
    channels = d.reshape(-1, d.shape[-1]) if d.ndim else d.reshape(1, 1)
    return np.abs(channels).max(axis=0) / 127 / 2


def _values(model):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.variables}


@pytest.fixture(scope="module")
def trained():
    """A tiny classifier before and after one SGD step, with I3D trainable from Mixed_5b."""
    keras.utils.set_random_seed(0)
    model = build_video_classifier(3, "rgb", preset="res2", trainable_from=FIRST_TRAINED, **TINY)
    backbone = model.get_layer("segment_encoder").backbone
    base = feature_model("i3d", "rgb", weights=None)
    base.set_weights(backbone.get_weights())
    before = _values(model)
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    clips = np.random.default_rng(0).uniform(-1, 1, (3, 2, 8, 32, 32, 3)).astype("float32")
    model.fit(clips, np.array([0, 1, 2]), epochs=1, batch_size=3, verbose=0)
    return model, backbone, base, before, clips


@pytest.mark.slow
def test_delta_holds_exactly_the_variables_one_training_step_changed(trained):
    model, backbone, base, before, _ = trained
    after = _values(backbone)
    changed = {path for path, value in after.items() if not np.array_equal(value, before[path])}
    delta = compute_delta(backbone, base)
    # The step changed exactly the trainable variables: Mixed_5b and Mixed_5c's 12 kernels.
    assert set(delta) == changed == {v.path for v in backbone.trainable_variables}
    assert len(delta) == 12
    first = VALID_ENDPOINTS.index(FIRST_TRAINED)
    for path, difference in delta.items():
        assert VALID_ENDPOINTS.index(path.split(".")[0]) >= first, path  # frozen: absent
        assert ".bn/" not in path  # frozen BatchNorm: absent
        assert difference.dtype == np.float32
        np.testing.assert_allclose(difference, after[path] - before[path], rtol=1e-6, atol=1e-9)
    assert "Conv3d_1a_7x7.conv/kernel" not in delta


def test_round_trip_error_is_at_most_half_a_scale(tmp_path):
    rng = np.random.default_rng(1)
    kernel = rng.normal(0, 1e-3, (1, 1, 1, 64, 32)).astype("float32")
    kernel[..., 5] = 0.0  # a channel fine-tuning left alone: restored exactly
    kernel[..., 7] *= 1e4  # a channel with large changes: its own scale
    delta = {
        "a/kernel": kernel,
        "b/bias": rng.normal(0, 1e-2, (16,)).astype("float32"),
        "c/scalar": np.array(0.25, np.float32),
    }
    written = save_delta(tmp_path / "d.npz", delta)
    assert written == (tmp_path / "d.npz").stat().st_size
    # int8: about a byte a weight, a quarter of float32.
    assert written < kernel.size + 4 * 64 * 64 + 4096
    loaded = load_delta(tmp_path / "d.npz")
    assert list(loaded) == list(delta)
    for path, difference in delta.items():
        assert loaded[path].shape == difference.shape and loaded[path].dtype == np.float32
        bound = _half_scale(difference) * (1 + 2e-5)
        error = np.abs(loaded[path].astype(np.float64) - difference)
        assert np.all(error <= bound + 1e-12), path
    assert np.all(loaded["a/kernel"][..., 5] == 0.0)
    assert np.abs(loaded["a/kernel"] - kernel).max() > 0  # quantised: the bound is not vacuous


def test_equal_deltas_give_equal_bytes(tmp_path):
    delta = {"x/kernel": np.random.default_rng(2).normal(size=(3, 4)).astype("float32")}
    save_delta(tmp_path / "one.npz", delta)
    save_delta(tmp_path / "two.npz", delta)
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    with np.load(tmp_path / "one.npz", allow_pickle=False) as archive:  # a plain .npz
        assert archive["q0"].dtype == np.int8 and archive["scale0"].shape == (4,)


@pytest.mark.slow
def test_save_load_apply_reconstructs_the_trained_weights_and_logits(trained, tmp_path):
    model, backbone, base, before, clips = trained
    save_delta(tmp_path / "rgb.npz", compute_delta(backbone, base))
    delta = load_delta(tmp_path / "rgb.npz")
    restored = build_video_classifier(3, "rgb", preset="res2", trainable_from=FIRST_TRAINED, **TINY)
    restored_backbone = restored.get_layer("segment_encoder").backbone
    restored_backbone.set_weights(base.get_weights())  # the backbone before training
    restored.get_layer("head").set_weights(model.get_layer("head").get_weights())
    unchanged = keras.ops.convert_to_numpy(restored(clips))
    apply_delta(restored_backbone, delta)

    after = _values(backbone)
    for variable in restored_backbone.variables:
        expected = after[variable.path]
        value = keras.ops.convert_to_numpy(variable)
        if variable.path not in delta:
            np.testing.assert_array_equal(value, expected)
            continue
        bound = _half_scale(expected.astype(np.float64) - before[variable.path]) * (1 + 2e-5)
        rounding = np.abs(expected) * 2e-7  # float32 rounding of base + q * scale
        assert np.all(np.abs(value - expected) <= bound + rounding), variable.path

    # Each weight is off by at most 1/254 of the largest change the step made in its channel,
    # so to first order the logits are off by at most ~1/254 of what the step moved them; 4/254
    # leaves room for the ReLUs and for the step's own contributions partly cancelling
    # (measured: 3.8e-7 against a move of 1.1e-2, 3.5e-5 of it).
    target = keras.ops.convert_to_numpy(model(clips))
    moved = np.abs(target - unchanged).max()
    assert moved > 1e-4  # the step changed the logits: the comparison has teeth
    reconstructed = keras.ops.convert_to_numpy(restored(clips))
    assert np.abs(reconstructed - target).max() <= 4 / 254 * moved + 1e-6


@pytest.mark.slow
def test_apply_refuses_unknown_paths_and_shapes_and_changes_nothing(trained):
    _, backbone, base, _, _ = trained
    delta = compute_delta(backbone, base)
    original = _values(base)
    with pytest.raises(ValueError, match=r"1 variable\(s\) model .* does not have: 'nope/kernel'"):
        apply_delta(base, {**delta, "nope/kernel": np.zeros(3, np.float32)})
    path = next(iter(delta))
    with pytest.raises(ValueError, match=rf"variable '{path}' of model .* has shape"):
        apply_delta(base, {**delta, path: np.zeros((2, 2), np.float32)})
    for path, value in _values(base).items():
        np.testing.assert_array_equal(value, original[path])


@pytest.mark.slow
def test_compute_refuses_other_architectures_naming_the_variable(trained):
    _, backbone, _, _, _ = trained
    flow = feature_model("i3d", "flow", weights=None)
    with pytest.raises(
        ValueError, match=r"'Conv3d_1a_7x7.conv/kernel' has shape \(7, 7, 7, 3, 64\)"
    ):
        compute_delta(backbone, flow)
    head = build_video_classifier(3, "rgb", preset="res2", **TINY).get_layer("head")
    with pytest.raises(ValueError, match=r"has variable 'Conv3d_1a_7x7.conv/kernel', base model"):
        compute_delta(backbone, head)


def test_damaged_files_are_refused_naming_the_file(tmp_path):
    delta = {"x/kernel": np.random.default_rng(3).normal(size=(64, 32)).astype("float32")}
    good = tmp_path / "good.npz"
    save_delta(good, delta)
    data = good.read_bytes()

    flipped = tmp_path / "flipped.npz"
    offset = data.index(b"\x93NUMPY", data.index(b"q0.npy")) + 200  # inside q0's int8 values
    flipped.write_bytes(data[:offset] + bytes([data[offset] ^ 0x55]) + data[offset + 1 :])
    with pytest.raises(DeltaFileError, match=rf"delta file {flipped} is corrupt or altered.*CRC"):
        load_delta(flipped)

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DeltaFileError, match=rf"delta file {truncated} is not an .npz archive"):
        load_delta(truncated)

    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, format=np.array(["x"], dtype=object), paths=np.array(["x/kernel"]))
    with pytest.raises(DeltaFileError, match=rf"delta file {pickled} is corrupt.*pickle"):
        load_delta(pickled)

    wrong = tmp_path / "wrong.npz"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(wrong, "w") as target:
        for member in source.namelist():
            if member != "scale0.npy":
                target.writestr(member, source.read(member))
    with pytest.raises(DeltaFileError, match=rf"delta file {wrong} has missing.*'scale0'"):
        load_delta(wrong)

    with pytest.raises(ChecksumError, match=rf"sha256 mismatch for {good}"):
        load_delta(good, sha256="0" * 64)
    with pytest.raises(FileNotFoundError, match=rf"delta file {tmp_path / 'missing.npz'}"):
        load_delta(tmp_path / "missing.npz")
