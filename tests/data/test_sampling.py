"""Property tests of segment sampling (hypothesis) and checks against hand-derived cases."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reslstm_tf.data.sampling import sample_segments, step_segment_map

sizes = st.tuples(
    st.integers(1, 600),  # num_frames
    st.integers(1, 12),  # num_segments
    st.integers(1, 20),  # segment_len
    st.integers(1, 3),  # stride
)
policies = st.sampled_from(["loop", "pad", "overlap"])
modes = st.sampled_from(["train", "eval"])


@settings(max_examples=300, deadline=None)
@given(sizes, policies, modes, st.integers(0, 2**32 - 1))
def test_indices_always_in_range(size, short, mode, seed):
    n, k, length, stride = size
    sample = sample_segments(n, k, length, mode=mode, stride=stride, short=short, seed=seed)
    assert sample.indices.shape == (k, length)
    assert sample.indices.dtype == np.int64
    assert sample.indices.min() >= 0 and sample.indices.max() < n
    assert sample.looped == (n < k * ((length - 1) * stride + 1))


@settings(max_examples=300, deadline=None)
@given(sizes, modes, st.integers(0, 2**32 - 1))
def test_long_videos_give_ordered_disjoint_windows(size, mode, seed):
    n, k, length, stride = size
    span = (length - 1) * stride + 1
    n = max(n, k * span)
    sample = sample_segments(n, k, length, mode=mode, stride=stride, seed=seed, short="loop")
    idx = sample.indices
    assert not sample.looped
    np.testing.assert_array_equal(np.diff(idx, axis=1), stride)  # contiguous, monotone
    assert np.all(idx[1:, 0] > idx[:-1, -1])  # segments in order, never overlapping
    # window k lies inside part k of the video (TSN)
    bounds = np.arange(k + 1) * n // k
    assert np.all(idx[:, 0] >= bounds[:-1]) and np.all(idx[:, -1] < bounds[1:])


@settings(max_examples=200, deadline=None)
@given(sizes, policies)
def test_eval_is_deterministic_and_centred(size, short):
    n, k, length, stride = size
    a = sample_segments(n, k, length, mode="eval", stride=stride, short=short, seed=1)
    b = sample_segments(n, k, length, mode="eval", stride=stride, short=short, seed=2)
    np.testing.assert_array_equal(a.indices, b.indices)
    span = (length - 1) * stride + 1
    if n >= k * span:
        bounds = np.arange(k + 1) * n // k
        before = a.indices[:, 0] - bounds[:-1]
        after = bounds[1:] - 1 - a.indices[:, -1]
        assert np.all(np.abs(before - after) <= 1)


@settings(max_examples=100, deadline=None)
@given(sizes, policies, st.integers(0, 2**32 - 1))
def test_train_mode_is_seedable(size, short, seed):
    n, k, length, stride = size
    a = sample_segments(n, k, length, mode="train", stride=stride, short=short, seed=seed)
    b = sample_segments(
        n,
        k,
        length,
        mode="train",
        stride=stride,
        short=short,
        seed=np.random.default_rng(seed),
    )
    np.testing.assert_array_equal(a.indices, b.indices)


def test_train_mode_draws_random_offsets():
    draws = {
        tuple(sample_segments(300, 3, 8, mode="train", seed=s, short="loop").indices[:, 0])
        for s in range(20)
    }
    assert len(draws) > 10


def test_short_policies_by_hand():
    # 5 frames, 2 segments of 4: the video is too short (needs 8)
    loop = sample_segments(5, 2, 4, short="loop").indices
    np.testing.assert_array_equal(loop, [[0, 1, 2, 3], [4, 0, 1, 2]])
    pad = sample_segments(5, 2, 4, short="pad").indices
    np.testing.assert_array_equal(pad, [[0, 1, 2, 3], [4, 4, 4, 4]])
    overlap = sample_segments(5, 2, 4, short="overlap").indices
    np.testing.assert_array_equal(overlap, [[0, 1, 2, 3], [1, 2, 3, 4]])
    # overlap falls back to looping when a single window does not fit
    np.testing.assert_array_equal(
        sample_segments(3, 1, 5, short="overlap").indices, [[0, 1, 2, 0, 1]]
    )


def test_long_video_by_hand():
    # 100 frames, 4 parts of 25, windows of 5 centred: start = 25k + 10
    idx = sample_segments(100, 4, 5, short="loop").indices
    np.testing.assert_array_equal(idx[:, 0], [10, 35, 60, 85])


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 64), st.integers(1, 64))
def test_step_map(steps, segments):
    sigma = step_segment_map(steps, segments)
    assert sigma.shape == (steps,)
    assert sigma.min() >= 0 and sigma.max() < segments
    assert np.all(np.diff(sigma) >= 0)
    # reference: the part containing the centre of each of T equal slices of [0, 1)
    centres = (np.arange(steps) + 0.5) / steps
    np.testing.assert_array_equal(sigma, np.floor(centres * segments + 1e-9).astype(int))
    if steps >= segments:
        assert set(sigma.tolist()) == set(range(segments))
    if steps == segments:
        np.testing.assert_array_equal(sigma, np.arange(segments))


def test_sample_carries_step_map():
    sample = sample_segments(100, 4, 5, num_steps=8, short="loop")
    np.testing.assert_array_equal(sample.step_map, [0, 0, 1, 1, 2, 2, 3, 3])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "test"}, "mode must be one of 'train', 'eval'. Received: mode='test'"),
        ({"short": "wrap"}, "Received: short='wrap'"),
        ({"stride": 0}, "Received: stride=0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_segments(10, 2, 3, **{"short": "loop", **kwargs})
    with pytest.raises(ValueError, match="num_frames"):
        sample_segments(0, 2, 3, short="loop")


@pytest.mark.parametrize("short", ["loop", "pad", "overlap"])
@pytest.mark.parametrize("num_segments, segment_len, stride", [(1, 1, 1), (3, 4, 1), (4, 3, 2)])
def test_tf_twin_equals_the_numpy_sampler(short, num_segments, segment_len, stride):
    # Every frame count from a single frame to well past K_v windows: each branch (long
    # video, overlapping windows, loop or pad fallback) is crossed.
    import tensorflow as tf

    from reslstm_tf.data.sampling import eval_indices_tf

    twin = tf.function(
        lambda n: eval_indices_tf(n, num_segments, segment_len, stride=stride, short=short)
    )
    for n in range(1, 40):
        expected = sample_segments(
            n, num_segments, segment_len, mode="eval", stride=stride, short=short
        ).indices
        got = twin(tf.constant(n)).numpy()
        np.testing.assert_array_equal(got, expected, err_msg=f"n={n}")


def test_tf_twin_refuses_bad_arguments():
    from reslstm_tf.data.sampling import eval_indices_tf

    with pytest.raises(ValueError, match="Received: short='wrap'"):
        eval_indices_tf(10, 2, 3, short="wrap")
    with pytest.raises(ValueError, match="segment_len"):
        eval_indices_tf(10, 2, 0, short="loop")


def _eval_indices(num_frames, num_segments, segment_len, short="overlap"):
    return sample_segments(num_frames, num_segments, segment_len, mode="eval", short=short).indices


def test_eval_overlap_indices_by_hand():
    # N=50, K=3: parts [0, 16), [16, 33), [33, 50); centres 8, 24.5, 41.5; L=16 windows
    # start at floor(centre - 8) = 0, 16, 33.
    expected = np.array([np.arange(0, 16), np.arange(16, 32), np.arange(33, 49)])
    np.testing.assert_array_equal(_eval_indices(50, 3, 16), expected)
    # Windows stay inside the video: the last one is shifted left.
    np.testing.assert_array_equal(_eval_indices(20, 2, 16), [np.arange(0, 16), np.arange(4, 20)])
    # A video shorter than a segment: 'overlap' falls back to looping it (the sampler's
    # rule, as extraction does); 'pad' repeats its last frame.
    np.testing.assert_array_equal(_eval_indices(3, 2, 5), [[0, 1, 2, 0, 1], [2, 0, 1, 2, 0]])
    np.testing.assert_array_equal(
        _eval_indices(3, 2, 5, short="pad"), [[0, 1, 2, 2, 2], [2, 2, 2, 2, 2]]
    )
    with pytest.raises(ValueError, match="num_segments"):
        _eval_indices(10, 0, 16)
