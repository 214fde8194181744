"""tf.data pipelines from synthetic videos and from a feature cache."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from reslstm_tf.data import pipeline, sampling, video
from reslstm_tf.data.feature_cache import FeatureCacheWriter


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
    expected = sampling.sample_segments(24, 3, 4).indices
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


def test_feature_dataset(tmp_path):
    rng = np.random.default_rng(0)
    stored = {}
    with FeatureCacheWriter(tmp_path, shard_size=3) as writer:
        for i in range(7):
            feats = rng.standard_normal((4, 5)).astype(np.float32)
            stored[i] = feats
            writer.add(f"v{i}", i % 3, feats, meta={"i": i})
    ds = pipeline.feature_dataset(tmp_path, num_steps=8, batch_size=3, seed=1)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [3, 3, 1]
    x, y = batches[0]
    assert x.shape == (3, 8, 5) and y.dtype == tf.int32
    sigma = sampling.step_segment_map(8, 4)
    seen = 0
    for xb, yb in batches:
        for feats, label in zip(xb.numpy(), yb.numpy()):
            match = [i for i, f in stored.items() if np.array_equal(f[sigma], feats)]
            assert len(match) == 1 and match[0] % 3 == label
            seen += 1
    assert seen == 7
    order = lambda: [int(v) for _, y in pipeline.feature_dataset(tmp_path, seed=3) for v in y]  # noqa: E731
    assert order() == order()


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
    np.testing.assert_array_equal(sample.indices, sampling.sample_segments(count, 4, 8).indices)
    assert clip.shape == (4, 8, 32, 32, 3) and np.all(np.abs(clip) <= 1)
    # The frames the first pass decoded are reused: exactly the sampled frames, in order.
    everything = video.read_frames(path, np.arange(count))
    expected = video.transform_frames(
        everything[sample.indices.reshape(-1)],
        short_side=pipeline.default_short_side(32),
        crop_size=32,
    )
    np.testing.assert_array_equal(clip.reshape(expected.shape), expected)
