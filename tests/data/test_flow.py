"""Optical flow against a known motion: a smooth random texture translated by (dx, dy)."""

import cv2
import numpy as np
import pytest

from reslstm_tf.data import flow


def translated_texture(dx, dy, size=64, seed=0):
    """Returns (prev, next) grayscale frames where the content moves by (dx, dy) pixels."""
    rng = np.random.default_rng(seed)
    texture = (rng.random((size, size)) * 255).astype(np.uint8)
    texture = cv2.GaussianBlur(texture, (0, 0), 1.5)
    texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX)
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(texture, shift, (size, size), borderMode=cv2.BORDER_REFLECT)
    return texture, moved


@pytest.mark.parametrize("method", ["tvl1", "farneback"])
@pytest.mark.parametrize("dx, dy", [(2.0, -1.0), (-1.5, 0.5)])
def test_recovers_known_translation(method, dx, dy):
    prev, nxt = translated_texture(dx, dy)
    field = flow.compute_flow(prev, nxt, method)
    assert field.shape == (64, 64, 2) and field.dtype == np.float32
    interior = field[12:-12, 12:-12].reshape(-1, 2)
    np.testing.assert_allclose(np.median(interior, axis=0), [dx, dy], atol=0.1)
    assert np.mean(np.linalg.norm(interior - [dx, dy], axis=1) < 0.5) > 0.9


def test_scale_flow_clips_and_scales():
    raw = np.array([-40.0, -20.0, -5.0, 0.0, 10.0, 25.0], np.float32)
    np.testing.assert_allclose(flow.scale_flow(raw), [-1, -1, -0.25, 0, 0.5, 1])
    np.testing.assert_allclose(flow.scale_flow(raw, bound=10), [-1, -1, -0.5, 0, 1, 1])
    with pytest.raises(ValueError, match="bound"):
        flow.scale_flow(raw, bound=0)


@pytest.mark.parametrize("method", ["tvl1", "farneback"])
def test_flow_stack_shapes_and_pad_last(method):
    prev, nxt = translated_texture(1.0, 0.0, size=32)
    _, third = translated_texture(2.0, 0.0, size=32)
    rgb = np.repeat(np.stack([prev, nxt, third])[..., None], 3, axis=-1)
    fields = flow.flow_stack(rgb, method)
    assert fields.shape == (2, 32, 32, 2)
    assert fields.min() >= -1 and fields.max() <= 1
    np.testing.assert_allclose(np.median(fields[:, 8:-8, 8:-8, 0], axis=(1, 2)), 1 / 20, atol=0.01)
    padded = flow.flow_stack(rgb, method, pad_last=True)
    assert padded.shape == (3, 32, 32, 2)
    np.testing.assert_array_equal(padded[2], padded[1])
    np.testing.assert_array_equal(padded[:2], fields)
    segments = flow.segment_flow(np.stack([rgb, rgb[::-1]]), method)
    assert segments.shape == (2, 2, 32, 32, 2)
    np.testing.assert_allclose(segments[0], fields)


def test_bad_arguments():
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="method must be one of 'tvl1', 'farneback'"):
        flow.flow_stack(frames, "lk")
    with pytest.raises(ValueError, match="at least 2 frames"):
        flow.flow_stack(frames[:1], "farneback")
    with pytest.raises(ValueError, match="uint8"):
        flow.to_gray(frames.astype(np.float32))
