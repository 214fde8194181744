"""Tests of the OpenCV video reader against plain sequential cv2 decoding and known inputs."""

import struct

import cv2
import numpy as np
import pytest

from reslstm_tf.data import video
from reslstm_tf.data.video import VideoReadError, VideoTooShortError


def write_video(path, frames, fps=10, fourcc="mp4v"):
    """Writes RGB uint8 frames (N, H, W, 3) with cv2.VideoWriter."""
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path


def numbered_frames(count, height=48, width=64):
    """Frames whose brightness encodes their index (robust to lossy coding)."""
    levels = (np.arange(count) * 200 // max(count - 1, 1) + 20).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()


def decode_all(path):
    """The independent reference: every frame via cv2.VideoCapture.read(), as RGB."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    capture.release()
    return np.stack(frames)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 30-frame 64x48 MJPG clip."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    return write_video(path, numbered_frames(30), fourcc="MJPG")


def test_probe_synthetic(clip):
    info = video.probe(clip)
    assert (info.frame_count, info.width, info.height) == (30, 64, 48)
    assert info.fps == pytest.approx(10.0)
    assert info.duration == pytest.approx(3.0)
    assert info.rotation == 0 and not info.is_portrait
    assert video.count_frames(clip) == 30


def test_read_frames_matches_sequential_decode(clip):
    reference = decode_all(clip)
    indices = np.array([7, 0, 7, 29, 3])
    frames = video.read_frames(clip, indices)
    assert frames.dtype == np.uint8 and frames.shape == (5, 48, 64, 3)
    np.testing.assert_array_equal(frames, reference[indices])


def test_read_frames_seeking_matches_grabbing(clip):
    reference = decode_all(clip)
    indices = np.array([[0, 1], [20, 28]])
    seek = video.read_frames(clip, indices, seek_threshold=2)
    np.testing.assert_array_equal(seek, reference[indices.reshape(-1)])


def test_read_frames_past_the_end(clip):
    reference = decode_all(clip)
    with pytest.raises(VideoTooShortError) as err:
        video.read_frames(clip, [5, 40])
    assert err.value.decoded_frames == 30 and "clip.avi" in str(err.value)
    looped = video.read_frames(clip, [5, 40, 31], on_missing="loop")
    np.testing.assert_array_equal(looped, reference[[5, 10, 1]])
    last = video.read_frames(clip, [2, 40], on_missing="last")
    np.testing.assert_array_equal(last, reference[[2, 29]])


def test_transforms_against_numpy():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 60, 80, 3), dtype=np.uint8)
    resized = video.resize_short_side(frames, 30)
    assert resized.shape == (2, 30, 40, 3)
    portrait = video.resize_short_side(frames.transpose(0, 2, 1, 3), 30)
    assert portrait.shape == (2, 40, 30, 3)
    centre = video.crop(frames, 40)
    np.testing.assert_array_equal(centre, frames[:, 10:50, 20:60])
    a = video.crop(frames, 40, "random", rng=3)
    b = video.crop(frames, 40, "random", rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    top, left = video.crop_offsets(60, 80, 40, "random", rng=3)
    np.testing.assert_array_equal(a, frames[:, top : top + 40, left : left + 40])
    scaled = video.to_float(np.array([0, 255, 128], np.uint8))
    np.testing.assert_allclose(scaled, [-1.0, 1.0, 128 / 127.5 - 1], atol=1e-6)
    out = video.transform_frames(frames, short_side=30, crop_size=30)
    assert out.dtype == np.float32 and out.shape == (2, 30, 30, 3)
    assert out.min() >= -1 and out.max() <= 1
    with pytest.raises(ValueError, match="Received: mode='middle'"):
        video.crop(frames, 10, "middle")
    with pytest.raises(ValueError, match="does not fit"):
        video.crop(frames, 70)


def _rotate_mp4(src, dst, degrees):
    """Sets the display matrix of the first tkhd box of an mp4 (independent of OpenCV)."""
    data = bytearray(src.read_bytes())
    pos = data.find(b"tkhd")
    version = data[pos + 4]
    base = pos + 8 + (20 if version == 0 else 32) + 8 + 8
    one, w = 65536, 1 << 30
    matrices = {
        90: (0, one, 0, -one, 0, 0, 0, 0, w),
        180: (-one, 0, 0, 0, -one, 0, 0, 0, w),
        270: (0, -one, 0, one, 0, 0, 0, 0, w),
    }
    data[base : base + 36] = struct.pack(">9i", *matrices[degrees])
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_metadata_is_applied(tmp_path, degrees):
    frames = np.zeros((4, 48, 64, 3), np.uint8)
    frames[:, :16, :16] = 255  # a white block in the top-left corner
    plain = write_video(tmp_path / "plain.mp4", frames)
    rotated = _rotate_mp4(plain, tmp_path / f"rot{degrees}.mp4", degrees)
    info = video.probe(rotated)
    assert info.rotation == degrees
    assert info.auto_rotated
    assert info.is_portrait == (degrees != 180)
    # The header-only probe reports the same display-oriented size without decoding.
    assert video.probe(rotated, decode_first=False) == info
    got = video.read_frames(rotated, [0, 3])
    # display rotation is clockwise: np.rot90 with negative k
    expected = np.rot90(decode_all(plain)[[0, 3]], k=-degrees // 90, axes=(1, 2))
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 3


def test_bad_inputs_raise_clear_errors(tmp_path, clip):
    cases = {
        "missing.mp4": None,
        "empty.mp4": b"",
        "text.mp4": b"this is not a video\n" * 50,
        "truncated.avi": clip.read_bytes()[:200],
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        for call in (video.probe, lambda p: video.read_frames(p, [0])):
            with pytest.raises(VideoReadError) as err:
                call(path)
            assert name in str(err.value), name
            assert isinstance(err.value, ValueError)
    assert "does not exist" in str(pytest.raises(VideoReadError, video.probe, tmp_path / "x.mp4"))
    with pytest.raises(VideoReadError, match="empty"):
        video.probe(tmp_path / "empty.mp4")
    with pytest.raises(ValueError, match="on_missing must be one of"):
        video.read_frames(clip, [0], on_missing="skip")
    with pytest.raises(ValueError, match=">= 0"):
        video.read_frames(clip, [-1])


def test_truncated_file_reads_what_is_there(tmp_path, clip):
    data = clip.read_bytes()
    path = tmp_path / "half.avi"
    path.write_bytes(data[: len(data) // 2])
    frames = video.read_frames(path, [0, 1000], on_missing="last")
    assert frames.shape == (2, 48, 64, 3)
    with pytest.raises(VideoTooShortError) as err:
        video.read_frames(path, [1000])
    assert 0 < err.value.decoded_frames < 30


@pytest.mark.slow
@pytest.mark.parametrize("name", ["originals/Kickflip39.mov", "originals/Ollie6.mov"])
def test_real_originals(shared_data, name):
    path = shared_data / "skateboard" / name
    announced = video.probe(path)
    exact = video.probe(path, count_frames=True)
    reference = decode_all(path)
    assert exact.frame_count == len(reference)
    assert (announced.width, announced.height) == reference.shape[2:0:-1]
    assert announced.rotation == 0 and exact.codec in ("hevc", "h264", "avc1", "hvc1")
    # the containers over-announce their frame count (variable timing / edit lists)
    assert announced.frame_count >= exact.frame_count
    indices = np.linspace(0, exact.frame_count - 1, 6).astype(int)
    np.testing.assert_array_equal(video.read_frames(path, indices), reference[indices])
    beyond = video.read_frames(path, [announced.frame_count - 1], on_missing="loop")
    wrapped = (announced.frame_count - 1) % len(reference)
    np.testing.assert_array_equal(beyond[0], reference[wrapped])


def test_header_probe_equals_decoding_probe_on_real_clips(shared_data):
    # load_clip trusts the header-only probe: it must agree with the decoded frame's size.
    paths = sorted((shared_data / "skateboard").glob("*/*.mp4"))[::10]
    paths += sorted((shared_data / "skateboard" / "originals").glob("*.mov"))
    assert len(paths) >= 16
    for path in paths:
        assert video.probe(path, decode_first=False) == video.probe(path), path


def test_real_portrait_clip(shared_data):
    lines = (shared_data / "skateboard" / "trainlist.txt").read_text().split()
    portrait = None
    for rel in lines[:60]:
        info = video.probe(shared_data / "skateboard" / rel)
        if info.is_portrait:
            portrait = shared_data / "skateboard" / rel
            break
    assert portrait is not None, "the skateboard set has portrait clips"
    reference = decode_all(portrait)
    frames = video.read_frames(portrait, [0, len(reference) - 1])
    np.testing.assert_array_equal(frames, reference[[0, -1]])
    out = video.transform_frames(frames, short_side=224, crop_size=224)
    assert out.shape == (2, 224, 224, 3) and out.dtype == np.float32


def _textured(count, height, width, seed=0):
    """Smooth gradients plus noise: every resize rounds somewhere."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = (x * 255 // max(width - 1, 1) + y * 128 // max(height - 1, 1)) % 256
    noise = rng.integers(-20, 21, size=(count, height, width, 3))
    return np.clip(base[None, ..., None] + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "height, width, short_side, crop_size, exact",
    [
        (64, 96, 64, 56, True),  # no resize, centre crop
        (128, 230, 64, 56, True),  # area shrink by exactly 2
        (48, 72, 64, 56, True),  # bilinear enlargement (OpenCV fixed point)
        (117, 203, 160, 150, True),  # enlargement, odd sizes
        (96, 70, 128, 112, True),  # portrait enlargement
        (180, 320, 100, 90, False),  # area shrink by 1.8
    ],
)
def test_tf_transform_equals_opencv_transform(height, width, short_side, crop_size, exact):
    import tensorflow as tf

    frames = _textured(3, height, width)
    expected = video.transform_frames(frames, short_side=short_side, crop_size=crop_size)
    twin = tf.function(
        lambda f: video.transform_frames_tf(f, short_side=short_side, crop_size=crop_size)
    )
    got = twin(tf.constant(frames)).numpy()
    assert got.shape == expected.shape
    levels = np.abs(got - expected) * 127.5  # grey levels
    if exact:
        assert levels.max() < 1e-3, levels.max()
    else:  # documented: one grey level on a small fraction of the values
        assert levels.max() < 1 + 1e-3 and np.mean(levels > 0.5) < 0.01


def test_tf_transform_on_real_frames(shared_data):

    clips = shared_data / "skateboard"
    frames = video.read_frames(clips / "Ollie" / "Ollie23.mp4", [0, 7, 15])  # portrait 256x456
    for short_side, crop_size in ((256, 224), (128, 112), (300, 256)):
        expected = video.transform_frames(frames, short_side=short_side, crop_size=crop_size)
        got = video.transform_frames_tf(frames, short_side=short_side, crop_size=crop_size)
        assert np.abs(got.numpy() - expected).max() * 127.5 < 1e-3, (short_side, crop_size)


def test_read_clip_opens_once_and_equals_probe_then_read_frames(clip, tmp_path):
    counts = []

    def sampler(count):
        counts.append(count)
        return np.array([[0, 7], [7, 29]])

    info, frames = video.read_clip(clip, sampler, threads=1)
    assert counts == [30] and info == video.probe(clip, decode_first=False)
    np.testing.assert_array_equal(frames, video.read_frames(clip, [0, 7, 7, 29]))
    with pytest.raises(VideoTooShortError) as err:
        video.read_clip(clip, lambda count: [count + 3])
    assert err.value.decoded_frames == 30 and set(err.value.frames) == set()
    with pytest.raises(ValueError, match=">= 0"):
        video.read_clip(clip, lambda count: [-1])
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(VideoReadError, match="text.mp4"):
        video.read_clip(tmp_path / "text.mp4", lambda count: [0])


def test_read_frames_transform_and_threads(clip):
    reference = decode_all(clip)
    calls = []

    def corner(frame):
        calls.append(frame.shape)
        return frame[:8, :8]

    got = video.read_frames(clip, [3, 3, 9, 40], on_missing="loop", transform=corner)
    np.testing.assert_array_equal(got, reference[[3, 3, 9, 10], :8, :8])
    assert calls == [(48, 64, 3)] * 3  # each distinct frame once, 40 -> 10 in a second pass
    single = video.read_frames(clip, [0, 29], threads=1)
    np.testing.assert_array_equal(single, reference[[0, 29]])
    with pytest.raises(ValueError, match="threads"):
        video.read_frames(clip, [0], threads=0)


def test_to_float_tf_equals_to_float():
    frames = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1)
    np.testing.assert_allclose(video.to_float_tf(frames).numpy(), video.to_float(frames), atol=1e-7)
