"""Stratified folds and hold-out splits (`reslstm_tf.experiments.splits`)."""

import numpy as np
import pytest

from reslstm_tf.experiments import splits
from reslstm_tf.experiments.config import AblationError


@pytest.mark.parametrize("num_folds", [2, 5])
def test_stratified_folds_are_disjoint_cover_all_and_keep_balance(num_folds):
    labels = np.array([0] * 37 + [1] * 23 + [2] * 11)
    folds = splits.stratified_folds(labels, num_folds, seed=3)
    assert len(folds) == num_folds
    joined = np.concatenate(folds)
    assert len(joined) == len(set(joined.tolist())) == len(labels)  # disjoint
    assert sorted(joined.tolist()) == list(range(len(labels)))  # cover every clip
    for label, count in enumerate(np.bincount(labels)):
        per_fold = [int(np.sum(labels[fold] == label)) for fold in folds]
        assert set(per_fold) <= {count // num_folds, -(-count // num_folds)}
    sizes = [len(fold) for fold in folds]
    assert max(sizes) - min(sizes) <= 1
    # The split seed fixes the folds; another seed gives other folds.
    again = splits.stratified_folds(labels, num_folds, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(folds, again))
    other = splits.stratified_folds(labels, num_folds, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(folds, other))


def test_stratified_holdout_keeps_class_shares():
    labels = np.array([0] * 74 + [1] * 76)
    train, val = splits.stratified_holdout(labels, 0.2, seed=0)
    assert not set(train.tolist()) & set(val.tolist())
    assert len(train) + len(val) == len(labels)
    assert np.bincount(labels[val]).tolist() == [15, 15]


def test_split_errors_name_the_setting():
    labels = np.array([0] * 4 + [1] * 3)
    with pytest.raises(AblationError, match=r"num_folds must be in \[2, 3\]"):
        splits.stratified_folds(labels, 4)
    with pytest.raises(AblationError, match="fraction must be in"):
        splits.stratified_holdout(labels, 1.5)
