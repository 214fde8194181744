"""tf.data pipelines from synthetic videos."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from reslstm_tf.clip_spec import ClipSpec
from reslstm_tf.data import pipeline, sampling, video


def write_clip(path, count, level0, size=(40, 30)):
    """MJPG clip whose frame i is a flat grey of level0 + 4 i (w x h = size)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for i in range(count):
        writer.write(np.full((size[1], size[0], 3), level0 + 4 * i, np.uint8))
    writer.release()
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    for name in ("A", "B"):
        (root / name).mkdir()
    write_clip(root / "A" / "a.avi", 24, 20)
    write_clip(root / "B" / "b.avi", 12, 60)
    (root / "B" / "bad.avi").write_text("not a video")
    return root


def test_load_clip_rgb_matches_sampling(videos):
    clip, sample = pipeline.load_clip(videos / "A" / "a.avi", 3, 4, frame_size=16)
    assert clip.shape == (3, 4, 16, 16, 3) and clip.dtype == np.float32
    expected = sampling.sample_segments(24, 3, 4, short="loop").indices
    np.testing.assert_array_equal(sample.indices, expected)
    # flat grey frames: the value encodes the frame index (MJPG is near-lossless on flat)
    levels = (clip[:, :, 8, 8, 0] + 1) * 127.5
    np.testing.assert_allclose(levels, 20 + 4 * expected, atol=3)


def test_load_clip_flow(videos):
    clip, sample = pipeline.load_clip(
        videos / "A" / "a.avi", 2, 3, frame_size=16, modality="flow", flow_method="farneback"
    )
    assert clip.shape == (2, 3, 16, 16, 2) and sample.indices.shape == (2, 4)
    assert np.abs(clip).max() <= 1
    # Flat frames have no texture to follow: whatever their brightness, the flow is zero.
    assert np.abs(clip).max() < 1e-3


def write_moving_texture(path, count, dx, dy, size=(80, 64)):
    """MJPG clip of a smooth random texture moving by (dx, dy) whole pixels per frame."""
    width, height = size
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(
        (rng.random((height, 2 * width)) * 255).astype(np.uint8), (0, 0), 1.5
    )
    texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for i in range(count):
        frame = np.roll(np.roll(texture, dx * i, axis=1), dy * i, axis=0)[:, :width]
        writer.write(np.repeat(frame[..., None], 3, axis=-1))
    writer.release()
    return path


@pytest.mark.parametrize("method", ["farneback", "tvl1"])
def test_load_clip_flow_measures_a_known_motion(tmp_path, method):
    # Content moving 2 px right and 1 px up per frame: u = +2, v = -1 pixels, scaled by the
    # 20-pixel bound to 0.1 and -0.05. The 64-pixel short side is the resize target of a
    # 56 crop, so no resize changes the motion.
    path = write_moving_texture(tmp_path / "moving.avi", 12, dx=2, dy=-1)
    clip, _ = pipeline.load_clip(path, 2, 3, frame_size=56, modality="flow", flow_method=method)
    assert clip.shape == (2, 3, 56, 56, 2)
    interior = clip[:, :, 10:-10, 10:-10].reshape(-1, 2) * 20  # back to pixels
    np.testing.assert_allclose(np.median(interior, axis=0), [2.0, -1.0], atol=0.05)
    assert np.mean(np.linalg.norm(interior - [2.0, -1.0], axis=1) < 0.5) > 0.95


def test_video_dataset(videos):
    items = [("A/a.avi", 0), ("B/b.avi", 1)]
    ds = pipeline.video_dataset(items, videos, 2, 4, frame_size=16, batch_size=2)
    clips, labels = next(iter(ds))
    assert clips.shape == (2, 2, 4, 16, 16, 3) and clips.dtype == tf.float32
    np.testing.assert_array_equal(labels.numpy(), [0, 1])
    direct, _ = pipeline.load_clip(videos / "B" / "b.avi", 2, 4, frame_size=16)
    np.testing.assert_allclose(clips[1].numpy(), direct)


def test_video_dataset_train_is_seeded_and_skips_bad(videos):
    items = [("A/a.avi", 0), ("B/bad.avi", 1), ("B/b.avi", 1)]

    def run(seed):
        ds = pipeline.video_dataset(
            items, videos, 2, 3, frame_size=16, mode="train", seed=seed, on_error="skip"
        )
        return [(c.numpy(), int(y)) for c, y in ds]

    first, second = run(7), run(7)
    assert len(first) == 2
    for (a, la), (b, lb) in zip(first, second):
        assert la == lb
        np.testing.assert_array_equal(a, b)
    with pytest.raises(tf.errors.OpError, match="bad.avi"):
        list(pipeline.video_dataset(items, videos, 2, 3, frame_size=16))


def test_video_dataset_draws_clips_per_seed_epoch_and_video(videos):
    # One randomness policy: the train clip of video i in epoch e is fine-tuning's
    # (VideoClips without flips), whatever the order and however often it is iterated.
    from reslstm_tf.data.clips import VideoClips, epoch_order

    items = [("A/a.avi", 0), ("B/b.avi", 1)]

    def epoch(number):
        ds = pipeline.video_dataset(
            items, videos, 2, 3, frame_size=16, mode="train", seed=3, epoch=number
        )
        return [c.numpy() for c, _ in ds]

    reference = VideoClips(items, videos, num_segments=2, segment_len=3, frame_size=16, seed=3)
    reference.flip = False
    for number in (0, 1):
        order = epoch_order(3, number, len(items))
        expected = [reference.load(int(i), "train", epoch=number)[0] for i in order]
        got = epoch(number)
        np.testing.assert_array_equal(np.stack(got), np.stack(expected))
        np.testing.assert_array_equal(np.stack(epoch(number)), np.stack(got))  # iterated again
    assert not np.array_equal(np.stack(epoch(0)), np.stack(epoch(1)))


def test_load_clip_resamples_when_container_over_announces(shared_data):
    # Ollie6.mov announces 59 frames but only 30 decode: sampling must use the real count
    path = shared_data / "skateboard" / "originals" / "Ollie6.mov"
    clip, sample, info = pipeline.load_clip(path, 4, 8, frame_size=32, return_info=True)
    real = int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))
    assert info.frame_count == real
    count = 0
    capture = cv2.VideoCapture(str(path))
    while capture.grab():
        count += 1
    assert count < real and sample.num_frames == count
    np.testing.assert_array_equal(
        sample.indices, sampling.sample_segments(count, 4, 8, short="loop").indices
    )
    assert clip.shape == (4, 8, 32, 32, 3) and np.all(np.abs(clip) <= 1)
    # The frames the first pass decoded are reused: exactly the sampled frames, in order.
    everything = video.read_frames(path, np.arange(count))
    expected = video.transform_frames(
        everything[sample.indices.reshape(-1)],
        short_side=ClipSpec(frame_size=32).short_side,
        crop_size=32,
    )
    np.testing.assert_array_equal(clip.reshape(expected.shape), expected)


def test_load_clip_uint8_is_the_float_clip_before_scaling(shared_data):
    # Portrait 256x456: resized (short side 128 for a 112 crop) and cropped, repeats frames.
    path = shared_data / "skateboard" / "Ollie" / "Ollie23.mp4"
    args = dict(frame_size=112, short="overlap")
    floats, sample = pipeline.load_clip(path, 4, 16, **args)
    raw, raw_sample = pipeline.load_clip(path, 4, 16, dtype="uint8", threads=1, **args)
    assert raw.dtype == np.uint8 and raw.shape == floats.shape == (4, 16, 112, 112, 3)
    np.testing.assert_array_equal(raw_sample.indices, sample.indices)
    np.testing.assert_array_equal(video.to_float(raw), floats)
    # the per-frame crop equals the stacked transform of the sampled frames
    frames = video.read_frames(path, sample.indices)
    expected = video.transform_frames(frames, short_side=128, crop_size=112, as_float=False)
    np.testing.assert_array_equal(raw.reshape(expected.shape), expected)
    with pytest.raises(ValueError, match="flow clips are float32"):
        pipeline.load_clip(path, 2, 2, modality="flow", dtype="uint8")
    with pytest.raises(ValueError, match="dtype must be one of"):
        pipeline.load_clip(path, 2, 2, dtype="float16")


def test_video_dataset_uint8_scaled_on_the_device(videos):
    items = [("A/a.avi", 0), ("B/b.avi", 1)]
    floats = pipeline.video_dataset(items, videos, 2, 4, frame_size=16, batch_size=2)
    raw = pipeline.video_dataset(
        items, videos, 2, 4, frame_size=16, batch_size=2, dtype="uint8", threads=1
    )
    (clips, labels), (raw_clips, raw_labels) = next(iter(floats)), next(iter(raw))
    assert raw_clips.dtype == tf.uint8 and raw_clips.shape == clips.shape
    np.testing.assert_array_equal(raw_labels.numpy(), labels.numpy())
    np.testing.assert_allclose(video.to_float_tf(raw_clips).numpy(), clips.numpy(), atol=1e-7)
    skipped = pipeline.video_dataset(
        [("B/bad.avi", 1), ("A/a.avi", 0)],
        videos,
        2,
        4,
        frame_size=16,
        dtype="uint8",
        on_error="skip",
    )
    assert [int(label) for _, label in skipped] == [0]
