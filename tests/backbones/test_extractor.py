"""SegmentFeatureExtractor: batching, XLA, segment splitting and input validation."""

import numpy as np
import pytest

from reslstm_tf.backbones import extractor as features_lib
from reslstm_tf.backbones.extractor import SegmentFeatureExtractor
from reslstm_tf.extract import segment_features


@pytest.fixture(scope="module")
def i3d_random():
    """An XLA-compiled extractor around a random I3D (batch size 4)."""
    return SegmentFeatureExtractor("i3d", "rgb", weights=None, batch_size=4, jit_compile=True)


def _segments(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32")


def test_attributes():
    rgb = SegmentFeatureExtractor("i3d", "rgb", weights=None, jit_compile=False)
    assert (rgb.feature_dim, rgb.segment_len, rgb.frame_size, rgb.channels) == (1024, 16, 224, 3)
    flow = SegmentFeatureExtractor("i3d", "flow", weights=None, jit_compile=False)
    assert flow.channels == 2 and flow.model.input_shape[-1] == 2
    c3d = SegmentFeatureExtractor("c3d", "rgb", weights=None, jit_compile=False)
    assert (c3d.feature_dim, c3d.segment_len, c3d.frame_size, c3d.channels) == (4096, 16, 112, 3)


@pytest.mark.slow
def test_batched_xla_matches_one_by_one(i3d_random):
    x = _segments((5, 8, 32, 32, 3))  # 5 segments: one full batch of 4 and a padded one
    out = i3d_random(x)
    assert out.shape == (5, 1024) and out.dtype == np.float32
    for i in range(5):
        single = np.asarray(i3d_random.model(x[i : i + 1], training=False))[0]
        np.testing.assert_allclose(out[i], single, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_list_of_segments_with_different_lengths(i3d_random):
    a, b, c = (
        _segments((8, 32, 32, 3), 1),
        _segments((4, 32, 32, 3), 2),
        _segments((8, 32, 32, 3), 3),
    )
    out = i3d_random([a, b, c])
    assert out.shape == (3, 1024)
    for i, seg in enumerate((a, b, c)):
        single = np.asarray(i3d_random.model(seg[None], training=False))[0]
        np.testing.assert_allclose(out[i], single, rtol=1e-4, atol=1e-5)


def test_segment_features_equal_manual_segments(i3d_random):
    frames = _segments((20, 32, 32, 3), 4)
    extractor = SegmentFeatureExtractor(
        "i3d", "rgb", weights=None, batch_size=4, jit_compile=False, segment_len=6
    )
    extractor.model.set_weights(i3d_random.model.get_weights())
    out = segment_features(extractor, frames, 3, short="overlap")
    # parts [0, 6), [6, 13), [13, 20): centres 3, 9.5, 16.5 -> starts 0, 6, 13.
    manual = np.stack([frames[0:6], frames[6:12], frames[13:19]])
    np.testing.assert_allclose(out, np.asarray(i3d_random.model(manual)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "bad,needle",
    [
        (np.zeros((2, 8, 32, 32, 2), "float32"), "3 channels"),
        (np.zeros((0, 8, 32, 32, 3), "float32"), "empty"),
        (np.zeros((2, 0, 32, 32, 3), "float32"), "empty"),
        (np.zeros((8, 32, 32, 3), "float32"), "rank 5"),
        (np.full((1, 2, 8, 8, 3), np.nan, "float32"), "finite"),
        (np.full((1, 2, 8, 8, 3), 255.0, "float32"), r"\[-1, 1\]"),
        ([], "empty"),
        ([np.zeros((2, 8, 8), "float32")], r"segments\[0\] must have rank 4"),
    ],
)
def test_invalid_segments(i3d_random, bad, needle):
    with pytest.raises(ValueError, match=needle) as info:
        i3d_random(bad)
    if isinstance(bad, np.ndarray):
        assert str(bad.shape) in str(info.value) or "values in" in str(info.value)


def test_invalid_frames(i3d_random):
    with pytest.raises(ValueError, match="rank 4"):
        segment_features(i3d_random, np.zeros((4, 8, 8), "float32"), 2, short="loop")
    with pytest.raises(ValueError, match="non-empty clip"):
        segment_features(i3d_random, np.zeros((0, 8, 8, 3), "float32"), 2, short="loop")


def test_c3d_extractor_shapes_and_checks():
    extractor = SegmentFeatureExtractor(
        "c3d", "flow", weights=None, batch_size=2, jit_compile=False
    )
    out = extractor(_segments((1, 16, 112, 112, 2)))
    assert out.shape == (1, 4096)
    with pytest.raises(ValueError, match="16 frames of 112x112"):
        extractor(_segments((1, 8, 112, 112, 2)))


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"backbone": "resnet"}, "backbone"),
        ({"modality": "depth"}, "modality"),
        ({"backbone": "c3d", "weights": "kinetics400"}, "no Kinetics-400 C3D"),
        ({"batch_size": 0, "weights": None}, "batch_size"),
        ({"backbone": "c3d", "weights": None, "segment_len": 8}, "exactly 16"),
        ({"precision": "float16", "weights": None}, "precision"),
    ],
)
def test_invalid_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        SegmentFeatureExtractor(**kwargs)


def test_feature_model_api():
    model = features_lib.feature_model("i3d", "flow", weights=None)
    assert model.output_shape == (None, 1024) and model.input_shape[-1] == 2


@pytest.mark.slow
def test_mixed_bfloat16_features_stay_close_on_a_real_clip(shared_data):
    # The faster bfloat16 path, with the real Kinetics weights on DeepMind's real clip:
    # float32 features out, within a few percent of the float32 model's.
    from tests.backbones.test_i3d_kinetics import read_gif_rgb

    frames = read_gif_rgb(shared_data / "kinetics_i3d" / "v_CricketShot_g04_c01_rgb.gif")
    clip = frames[:64].reshape(4, 16, 224, 224, 3).astype("float32") / 127.5 - 1.0
    fp32 = SegmentFeatureExtractor(jit_compile=False, batch_size=2)(clip)
    bf16 = SegmentFeatureExtractor(jit_compile=False, batch_size=2, precision="mixed_bfloat16")
    assert bf16.model.compute_dtype == "bfloat16"
    out = bf16(clip)
    assert out.dtype == np.float32 and out.shape == (4, 1024)
    error = np.abs(out - fp32).max() / np.abs(fp32).max()
    assert 0 < error < 5e-2, error
    cosine = np.sum(out * fp32, 1) / np.linalg.norm(out, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cosine.min() > 0.999, cosine
