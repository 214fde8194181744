"""Validation splits inside a cached set: stratified k folds or one stratified hold-out.

Splits depend only on the labels and a split seed, so every architecture of an ablation
sees exactly the same folds; the training seed only changes initialisation and dropout.
"""

import numpy as np

from reslstm_tf.checks import check_choice
from reslstm_tf.experiments.config import PROTOCOLS, AblationError


def stratified_folds(labels, num_folds, seed=0):
    """Splits clip indices into `num_folds` disjoint folds with the class balance preserved.

    Each class's indices are shuffled with `seed` and dealt round-robin over the folds, so
    every fold holds floor or ceil of n_c / num_folds clips of class c.

    Args:
        labels: int array (N,) of class indices.
        num_folds: int >= 2, at most the size of the smallest class.
        seed: int, the split seed.

    Returns:
        A list of `num_folds` sorted int64 arrays of indices into `labels`.
    """
    labels = np.asarray(labels)
    if isinstance(num_folds, bool) or not isinstance(num_folds, (int, np.integer)):
        raise AblationError(f"num_folds must be an int >= 2. Received: {num_folds!r}")
    counts = np.bincount(labels) if labels.size else np.zeros(0, np.int64)
    smallest = int(counts[counts > 0].min()) if counts.any() else 0
    if num_folds < 2 or num_folds > smallest:
        raise AblationError(
            f"num_folds must be in [2, {smallest}] (the smallest class has {smallest} clips). "
            f"Received: num_folds={num_folds}"
        )
    rng = np.random.default_rng(seed)
    folds = [[] for _ in range(num_folds)]
    offset = 0
    for label in np.flatnonzero(counts):
        members = rng.permutation(np.flatnonzero(labels == label))
        for position, index in enumerate(members):
            folds[(position + offset) % num_folds].append(index)
        offset += len(members)  # Start the next class where this one stopped: even fold sizes.
    return [np.sort(np.asarray(fold, np.int64)) for fold in folds]


def stratified_holdout(labels, fraction=0.2, seed=0):
    """Returns (train, val) index arrays: a fixed stratified hold-out of `fraction` per class.

    Args:
        labels: int array (N,) of class indices.
        fraction: float in (0, 1), share of each class held out (at least one clip).
        seed: int, the split seed.

    Returns:
        (train_indices, val_indices), sorted int64 arrays, disjoint, covering all clips.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise AblationError(f"holdout fraction must be in (0, 1). Received: {fraction!r}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = min(max(1, int(round(fraction * len(members)))), len(members) - 1)
        if count < 1:
            raise AblationError(f"class {label} has a single clip; it cannot be held out")
        val.extend(members[:count])
    val = np.sort(np.asarray(val, np.int64))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


def splits_for(protocol, labels, folds=5, holdout_fraction=0.2, split_seed=0):
    """Returns the list of (fold id, train indices, val indices) of a protocol.

    Args:
        protocol: "cv" (one entry per fold) or "holdout" (one entry).
        labels: int array (N,) of class indices.
        folds: int, folds of the cross-validation.
        holdout_fraction: float, share of each class held out.
        split_seed: int, the split seed.
    """
    check_choice("protocol", protocol, PROTOCOLS, error=AblationError)
    if protocol == "cv":
        parts = stratified_folds(labels, folds, split_seed)
        everything = np.arange(len(labels))
        return [(i, np.setdiff1d(everything, part), part) for i, part in enumerate(parts)]
    train, val = stratified_holdout(labels, holdout_fraction, split_seed)
    return [(0, train, val)]
