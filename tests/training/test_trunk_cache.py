"""`TrunkSource`: each epoch, every video reads its own scheduled view of the cached trunk."""

import dataclasses

import numpy as np
import pytest

from reslstm_tf.training.trunk_cache import TrunkSource

N, V, T = 12, 3, 2


@dataclasses.dataclass
class FakeClips:
    """What `TrunkSource` reads of a `VideoClips`: its length, labels and seed."""

    labels: list
    seed: int

    def __len__(self):
        return len(self.labels)


def trunk_arrays(num_videos=N, num_views=V):
    """arrays[v][i] = a (T, 2, 2) block holding v and i, so a row tells which it is."""
    arrays = []
    for view in range(num_views):
        values = np.zeros((num_videos, T, 2, 2), np.float32)
        values[:, :, 0] = view
        values[:, :, 1] = np.arange(num_videos)[:, None, None]
        arrays.append(values)
    return arrays


def reference_views(num_videos, num_views, epoch, seed):
    """Video i reads view (o_i + epoch) mod V, o_i drawn from SeedSequence([seed, i])."""
    offsets = np.array(
        [
            np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, i]))).integers(
                num_views
            )
            for i in range(num_videos)
        ]
    )
    return (offsets + epoch) % num_views


def reference_rows(indices, epoch, seed):
    """The epoch order: the rows permuted by SeedSequence([seed, epoch])."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
    return np.asarray(indices)[rng.permutation(len(indices))]


def fed(source, epoch):
    """Returns (video index, view, label) of every element `source` gives in `epoch`."""
    out = []
    for features, label in source.train_data(epoch).as_numpy_iterator():
        out.append((int(features[0, 1, 0]), int(features[0, 0, 0]), int(label)))
    return out


@pytest.mark.parametrize("seed", [0, 5])
def test_each_video_reads_its_scheduled_view_in_the_epoch_order(seed):
    labels = [i % 2 for i in range(N)]
    source = TrunkSource(FakeClips(labels, seed), trunk_arrays())
    seen_views = []
    for epoch in range(2 * V):
        expected_views = reference_views(N, V, epoch, seed)
        rows = reference_rows(np.arange(N), epoch, seed)
        assert fed(source, epoch) == [(i, expected_views[i], labels[i]) for i in rows]
        np.testing.assert_array_equal(source.views_of(epoch), expected_views)
        seen_views.append(expected_views)
    table = np.stack(seen_views)
    # V consecutive epochs show each video every view once; one epoch mixes the views.
    assert all(sorted(column) == list(range(V)) for column in table[:V].T)
    assert len(set(table[0])) > 1


def test_a_fold_reads_the_views_of_the_whole_list_and_resumes_exactly():
    labels = [i % 2 for i in range(N)]
    fold = np.array([1, 4, 5, 9, 11])
    whole = TrunkSource(FakeClips(labels, 3), trunk_arrays())
    part = TrunkSource(FakeClips(labels, 3), trunk_arrays(), indices=fold, seed=3)
    for epoch in (0, 4):
        expected = reference_views(N, V, epoch, 3)
        got = fed(part, epoch)
        assert sorted(i for i, _, _ in got) == list(fold)
        assert all(view == expected[i] for i, view, _ in got)
        assert [i for i, _, _ in got] == list(reference_rows(fold, epoch, 3))
        assert all(whole.views_of(epoch)[i] == view for i, view, _ in got)
    # A new source (a resumed run) feeds the very same epoch.
    again = TrunkSource(FakeClips(labels, 3), trunk_arrays(), indices=fold, seed=3)
    assert fed(again, 4) == fed(part, 4)


def test_one_view_is_read_by_every_video_every_epoch():
    source = TrunkSource(FakeClips([0, 1, 0], 0), trunk_arrays(3, 1))
    for epoch in range(3):
        assert {view for _, view, _ in fed(source, epoch)} == {0}
