"""Fine-tuning clips: reproducible per (seed, epoch), flips that mirror motion, cached flow."""

import numpy as np
import pytest

from reslstm_tf.clip_spec import ClipSpec
from reslstm_tf.data.clips import VideoClips, cached_flow_clip, fill_flow_cache, flip_clip
from reslstm_tf.data.flow_cache import FlowCache
from reslstm_tf.data.pipeline import load_clip
from tests.training.finetune_helpers import write_dataset

CLIP = dict(num_segments=2, segment_len=4, frame_size=32)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = write_dataset(tmp_path_factory.mktemp("clips") / "videos", per_class=2, frames=20)
    items = [(f"{name}/{name}{i}.avi", label) for label, name in enumerate(("Bright", "Dark"))
             for i in range(2)]  # fmt: skip
    return root, items


def test_flip_mirrors_frames_and_negates_horizontal_flow():
    rng = np.random.default_rng(0)
    rgb = rng.random((2, 3, 4, 5, 3)).astype("float32")
    np.testing.assert_array_equal(flip_clip(rgb, "rgb")[..., 0, :], rgb[..., -1, :])
    np.testing.assert_array_equal(flip_clip(flip_clip(rgb, "rgb"), "rgb"), rgb)
    flow = np.zeros((1, 4, 5, 2), "float32")
    flow[..., :, 0, 0] = 0.5  # column 0 moves right
    flow[..., 1] = 0.25  # everything moves down
    mirrored = flip_clip(flow, "flow")
    assert np.all(mirrored[..., :, -1, 0] == -0.5) and np.all(mirrored[..., :, :-1, 0] == 0)
    assert np.all(mirrored[..., 1] == 0.25)  # vertical motion is unchanged


def test_clips_depend_only_on_seed_epoch_and_video(videos):
    root, items = videos
    clips = VideoClips(items, root, seed=3, **CLIP)
    first = clips.load(1, "train", epoch=0)[0]
    np.testing.assert_array_equal(first, clips.load(1, "train", epoch=0)[0])
    others = [clips.load(1, "train", epoch=e)[0] for e in range(1, 4)]
    assert any(not np.array_equal(first, other) for other in others)
    again = VideoClips(items, root, seed=3, **CLIP)
    np.testing.assert_array_equal(first, again.load(1, "train", epoch=0)[0])
    assert first.shape == (2, 4, 32, 32, 3) and first.dtype == np.float32


def test_eval_clips_are_load_clips_centred_clips(videos):
    root, items = videos
    clips = VideoClips(items, root, **CLIP)
    expected, _ = load_clip(root / items[2][0], 2, 4, mode="eval", frame_size=32)
    np.testing.assert_array_equal(clips.load(2, "eval", epoch=5)[0], expected)


def test_dataset_follows_the_epoch_order_in_parallel(videos):
    root, items = videos
    clips = VideoClips(items, root, seed=1, num_parallel_calls=3, **CLIP)
    order = clips.order("train", epoch=2)
    assert sorted(order) == [0, 1, 2, 3]
    got = list(clips.dataset("train", epoch=2).as_numpy_iterator())
    assert [int(label) for _, label in got] == [items[i][1] for i in order]
    for (clip, _), index in zip(got, order):
        np.testing.assert_array_equal(clip, clips.load(int(index), "train", epoch=2)[0])
    assert list(clips.order("eval")) == [0, 1, 2, 3]
    placeholder = list(clips.placeholder().as_numpy_iterator())
    assert [int(label) for _, label in placeholder] == [label for _, label in items]


def test_flow_clips_come_from_the_cache_with_the_known_motion(videos, tmp_path):
    root, items = videos
    cache = FlowCache(tmp_path / "flow", method="farneback", short_side=40)
    summary = fill_flow_cache(cache, items, root, progress=False)
    assert summary["computed"] == 4 and not summary["failed"]
    clips = VideoClips(items, root, modality="flow", flow_cache=cache, seed=0, **CLIP)
    centred = clips.load(0, "eval")[0]  # "Bright" videos move 2 px right per frame
    assert centred.shape == (2, 4, 32, 32, 2)
    right = np.median(centred[..., 8:-8, 8:-8, 0]) * 20.0
    assert right == pytest.approx(2.0, abs=0.5)  # frames 48x40 stay 48x40 at short side 40
    flips = [np.median(clips.load(0, "train", e)[0][..., 0]) for e in range(8)]
    assert min(flips) < -0.05 < 0.05 < max(flips)  # flipped epochs move left


def test_cached_flow_refuses_a_crop_larger_than_the_fields():
    fields = np.zeros((6, 24, 30, 2), np.uint8)
    with pytest.raises(ValueError, match="short_side >= 32"):
        cached_flow_clip(fields, ClipSpec(num_segments=2, segment_len=2, frame_size=32))
    clip = cached_flow_clip(fields, ClipSpec(num_segments=2, segment_len=2, frame_size=24))
    assert clip.shape == (2, 2, 24, 24, 2) and np.all(clip == -1.0)
