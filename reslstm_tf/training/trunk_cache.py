"""Trunk caching: the frozen lower part of a 3D CNN computed once per clip view.

With BatchNorm frozen and the layers below `trainable_from` frozen, the "trunk" (the backbone
up to the endpoint before `trainable_from`) is a fixed function of the clip. Its output is
computed once per clip view and the later blocks and the head train on it:

- `trunk_outputs` runs a trunk over one view of every video (index order);
- `TrunkViews` keeps the views on disk (`eval.npy`, `view0.npy`, ...): computed once,
  written atomically (a killed fill resumes with the missing views), shared by every run
  that reads the same clips (cross-validation folds and seeds);
- `TrunkSource` feeds the Trainer: in each epoch every video reads its own view, chosen by
  `reslstm_tf.data.feature_arrays.view_schedule` (the policy is documented there), in the
  epoch order of the clips.

View v is the clip `VideoClips.dataset("train", v)` reads (random windows, crop, flip from
(seed, v, video)); the eval view is the centred clip. A video reading view v in epoch e
therefore sees the clip an uncached run reads in epoch v.
"""

import json
import pathlib

import numpy as np
import tensorflow as tf

from reslstm_tf.data.feature_arrays import view_schedule
from reslstm_tf.files import atomic_write, folder_lock
from reslstm_tf.video_classifier import SegmentEncoder


def trunk_outputs(clips, trunk, mode="train", epoch=0, batch_size=4, progress=None):
    """Runs `trunk` on one view of every clip; returns float32 (N, T, *trunk output).

    Args:
        clips: a one-stream `VideoClips`.
        trunk: a model mapping (n, L, S, S, C) segments to the trunk's output.
        mode: "train" (view `epoch`) or "eval" (centred clips).
        epoch: the view of a train-mode call.
        batch_size: videos per trunk call.
        progress: an optional tqdm bar, advanced by videos.

    Returns:
        The outputs in the clips' index order (not the epoch's order).
    """
    encoder = SegmentEncoder(trunk)
    out = []
    for batch, _ in clips.dataset(mode, epoch).batch(batch_size):
        out.append(np.asarray(encoder(batch, training=False), np.float32))
        if progress is not None:
            progress.update(len(out[-1]))
    outputs = np.concatenate(out)
    rows = np.empty_like(outputs)
    rows[clips.order(mode, epoch)] = outputs
    return rows


class TrunkViews:
    """The trunk outputs of a video list's clip views, stored once in a folder.

    Args:
        folder: where the views live (created).
        clips: the one-stream `VideoClips` of the videos (all of them, in a fixed order).
        trunk: the trunk model (needed only to compute missing views).
        views: the number of training views.
        batch_size: videos per trunk call.
        spec: a JSON-able description of the clips and the trunk; a folder written with
            another spec is refused (`ValueError`), so stale views are never read.
    """

    def __init__(self, folder, clips, trunk, views, batch_size=4, spec=None):
        self.folder = pathlib.Path(folder)
        self.clips, self.trunk, self.views, self.batch_size = clips, trunk, views, batch_size
        self.spec = dict(spec or {}, videos=list(clips.paths), views_seed=int(clips.seed))
        self._arrays = {}

    def _check_spec(self):
        path = self.folder / "spec.json"
        if path.exists():
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored != self.spec:
                changed = sorted(k for k in set(stored) | set(self.spec)
                                 if stored.get(k) != self.spec.get(k))  # fmt: skip
                raise ValueError(
                    f"{self.folder} holds trunk views of other clips or another trunk "
                    f"(different: {', '.join(changed)}); use another folder"
                )
        else:
            with atomic_write(path, "w") as handle:
                handle.write(json.dumps(self.spec))

    def _file(self, view):
        return self.folder / ("eval.npy" if view == "eval" else f"view{view}.npy")

    def fill(self, progress=True):
        """Computes and stores every view not on disk yet; returns the number computed."""
        self.folder.mkdir(parents=True, exist_ok=True)
        missing = [v for v in ["eval", *range(self.views)] if not self._file(v).exists()]
        if not missing:
            self._check_spec()
            return 0
        from tqdm.auto import tqdm

        with folder_lock(self.folder, "trunk views"):
            self._check_spec()
            total = len(missing) * len(self.clips)
            with tqdm(total=total, desc="trunk views", unit="clip", disable=not progress) as bar:
                for view in missing:
                    mode, epoch = ("eval", 0) if view == "eval" else ("train", view)
                    outputs = trunk_outputs(
                        self.clips, self.trunk, mode, epoch, self.batch_size, bar
                    )
                    with atomic_write(self._file(view)) as handle:
                        np.save(handle, outputs)
        return len(missing)

    def array(self, view):
        """The stored outputs of `view` ("eval" or 0..views-1): float32 (N, T, ...)."""
        if view not in self._arrays:
            path = self._file(view)
            if not path.exists():
                raise FileNotFoundError(f"{path} does not exist; call fill() first")
            self._arrays[view] = np.load(path, mmap_mode="r")
        return self._arrays[view]


class TrunkSource:
    """Each epoch's cached trunk outputs: every video's scheduled view, in epoch order.

    In epoch e, video i (its index in `clips`) reads view
    ``view_schedule(len(clips), views, e, seed)[i]`` (`reslstm_tf.data.feature_arrays`):
    a function of (seed, e, i) only, so a resumed run, or a subset of the videos, reads
    the same views.

    Args:
        clips: the `VideoClips` the views were cut from (their epoch order is used).
        arrays: a list of `views` arrays (N, T, ...) in index order, or a `TrunkViews`.
        indices: the rows to train on (default all): a subset of the videos, e.g. a fold.
        seed: seeds the epoch order and the view schedule (default the clips' seed, as
            `VideoClips.order`).
    """

    def __init__(self, clips, arrays, indices=None, seed=None):
        if isinstance(arrays, TrunkViews):
            arrays = [arrays.array(v) for v in range(arrays.views)]
        self.clips, self.arrays, self.views = clips, arrays, len(arrays)
        self.indices = np.arange(len(clips)) if indices is None else np.asarray(indices)
        self.labels = np.asarray(clips.labels)[self.indices]
        self.seed = clips.seed if seed is None else int(seed)

    def views_of(self, epoch):
        """The view each video of `clips` reads in `epoch`: int64 (N,), in index order."""
        return view_schedule(len(self.clips), self.views, epoch, self.seed)

    def train_data(self, epoch):
        """The unbatched (trunk outputs, label) of `epoch`, in the epoch's order."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(epoch)]))
        rows = self.indices[rng.permutation(len(self.indices))]
        chosen = self.views_of(epoch)[rows]
        first = self.arrays[0]
        features = np.empty((len(rows), *first.shape[1:]), first.dtype)
        for view in np.unique(chosen):  # each view's rows gathered from its array
            picked = chosen == view
            features[picked] = self.arrays[view][rows[picked]]
        return tf.data.Dataset.from_tensor_slices((features, np.asarray(self.clips.labels)[rows]))
