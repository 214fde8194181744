"""`run_training` on a cache with training-mode views: one view per video and epoch, resume."""

import numpy as np
import pytest

from reslstm_tf.cli import train as train_cli
from reslstm_tf.data.feature_cache import FeatureCacheWriter
from reslstm_tf.runs import RunDir
from reslstm_tf.training import TrainingInputError, run_training
from reslstm_tf.training.trainer import Trainer
from tests.training.helpers import CLASS_NAMES, DIM, NUM_CLASSES, STEPS, TINY_RUN

N, V = 16, 3


def cache_arrays(num_videos=N, num_views=V, seed=0):
    """Separable centred features (N, T, d) and views (N, V, T, d), every row different."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_videos) % NUM_CLASSES).astype("int64")
    centers = 2.0 * rng.normal(size=(NUM_CLASSES, DIM))
    base = centers[labels][:, None, :]
    centred = np.abs(base + rng.normal(size=(num_videos, STEPS, DIM))) + 1e-3
    views = np.abs(base[:, None] + rng.normal(size=(num_videos, num_views, STEPS, DIM))) + 1e-3
    return centred.astype("float32"), views.astype("float32"), labels


def write_cache(folder, centred, views, labels, modality="rgb"):
    """A cache of videos v00, v01, ... (ids sort in row order), with views unless None."""
    metadata = {"modality": modality, "classes": CLASS_NAMES}
    if views is not None:
        metadata.update(views=views.shape[1], view_seed=5)
    with FeatureCacheWriter(folder, shard_size=5, metadata=metadata) as writer:
        for n in range(len(labels)):
            stack = None if views is None else views[n]
            writer.add(f"v{n:02d}", int(labels[n]), centred[n], views=stack)
    return folder


def reference_schedule(num_videos, num_views, epoch, seed):
    """The documented choice: video n reads view (o_n + epoch) mod V, o_n from (seed, n)."""
    offsets = [
        np.random.default_rng(np.random.SeedSequence([seed, n])).integers(num_views)
        for n in range(num_videos)
    ]
    return (np.asarray(offsets) + epoch) % num_views


@pytest.fixture
def fed(monkeypatch):
    """{epoch: [elements]}: the unshuffled data the Trainer reads each epoch."""
    seen = {}
    original = Trainer.epoch_dataset

    def recording(self, epoch, dataset):
        data = original(self, epoch, dataset)
        seen.setdefault(epoch, list(data.as_numpy_iterator()))
        return data

    monkeypatch.setattr(Trainer, "epoch_dataset", recording)
    return seen


def _run(model_dir, features_dir, **overrides):
    kwargs = dict(TINY_RUN, model_dir=model_dir, features_dir=features_dir, seed=2)
    kwargs.update(overrides)
    return run_training(**kwargs)


@pytest.mark.slow
def test_each_epoch_feeds_every_video_its_scheduled_view(tmp_path, fed):
    centred, views, labels = cache_arrays()
    cache = write_cache(tmp_path / "cache", centred, views, labels)
    _run(tmp_path / "run", cache, epochs=4)
    assert sorted(fed) == [0, 1, 2, 3]
    for epoch, elements in fed.items():
        chosen = reference_schedule(N, V, epoch, seed=2)
        assert [int(y) for _, y in elements] == list(labels)
        for n, (x, _) in enumerate(elements):
            np.testing.assert_array_equal(x, views[n, chosen[n]])
    record = RunDir(tmp_path / "run").config()
    assert record["training_views"] == V and record["view_seed"] == {"rgb": 5}


@pytest.mark.slow
def test_two_streams_read_the_same_view_of_a_video(tmp_path, fed):
    centred, views, labels = cache_arrays()
    write_cache(tmp_path / "f" / "train" / "rgb", centred, views, labels)
    flow_views = views[:, :, ::-1] * 0.5
    write_cache(tmp_path / "f" / "train" / "flow", centred * 0.5, flow_views, labels, "flow")
    _run(tmp_path / "run", tmp_path / "f", modality="two_stream", fusion="sum", epochs=2)
    for epoch, elements in fed.items():
        chosen = reference_schedule(N, V, epoch, seed=2)
        for n, (x, _) in enumerate(elements):
            np.testing.assert_array_equal(x["rgb"], views[n, chosen[n]])
            np.testing.assert_array_equal(x["flow"], flow_views[n, chosen[n]])


@pytest.mark.slow
def test_a_run_stopped_mid_epoch_resumes_to_the_uninterrupted_run(tmp_path):
    centred, views, labels = cache_arrays()
    cache = write_cache(tmp_path / "cache", centred, views, labels)
    whole = _run(tmp_path / "whole", cache, epochs=3, dropout=0.2)
    part = _run(tmp_path / "part", cache, epochs=3, dropout=0.2, max_steps=3)  # in epoch 1
    assert part.global_step == 3
    with pytest.raises(TrainingInputError, match="training_views: 3 -> 0"):
        _run(tmp_path / "part", cache, epochs=3, dropout=0.2, train_views="off")
    resumed = _run(tmp_path / "part", cache, epochs=3, dropout=0.2)
    assert resumed.resumed_from and resumed.global_step == whole.global_step == 6
    assert resumed.history == whole.history
    for got, expected in zip(resumed.model.get_weights(), whole.model.get_weights()):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.slow
def test_a_cache_without_views_trains_as_before_and_off_uses_the_centred_view(tmp_path, fed):
    centred, views, labels = cache_arrays()
    plain = write_cache(tmp_path / "plain", centred, None, labels)
    with_views = write_cache(tmp_path / "views", centred, views, labels)
    old = _run(tmp_path / "old", plain, epochs=2)
    assert RunDir(tmp_path / "old").config()["training_views"] == 0
    assert all(np.array_equal(x, centred[n]) for n, (x, _) in enumerate(fed[1]))
    fed.clear()
    off = _run(tmp_path / "off", with_views, epochs=2, train_views="off")
    assert all(np.array_equal(x, centred[n]) for n, (x, _) in enumerate(fed[1]))
    assert off.history == old.history
    for got, expected in zip(off.model.get_weights(), old.model.get_weights()):
        np.testing.assert_array_equal(got, expected)
    record = RunDir(tmp_path / "off").config()
    assert record["training_views"] == 0 and record["view_seed"] is None
    auto = _run(tmp_path / "auto", with_views, epochs=2)
    assert auto.history != off.history


@pytest.mark.slow
def test_views_are_refused_when_the_streams_disagree_and_a_bad_setting_is_named(tmp_path):
    centred, views, labels = cache_arrays()
    write_cache(tmp_path / "f" / "train" / "rgb", centred, views, labels)
    write_cache(tmp_path / "f" / "train" / "flow", centred, None, labels, "flow")
    with pytest.raises(TrainingInputError, match="same number of views"):
        _run(tmp_path / "run", tmp_path / "f", modality="two_stream")
    trained = _run(tmp_path / "run", tmp_path / "f", modality="two_stream", train_views="off")
    assert trained.global_step == 2
    with pytest.raises(TrainingInputError, match="train_views must be one of 'auto', 'off'"):
        _run(tmp_path / "bad", tmp_path / "f", train_views="on")


def test_train_views_flag_reaches_the_run_config(tmp_path, monkeypatch):
    made = {}

    class Result:
        is_chief = False

    def fake_run_training(config):
        made["config"] = config
        return Result()

    monkeypatch.setattr(train_cli.train_lib, "run_training", fake_run_training)
    flags = train_cli.FLAGS
    before = set(flags)
    train_cli.define_flags()
    try:
        flags(["train", f"--model_dir={tmp_path}", "--features_dir=f", "--train_views=off"])
        train_cli.main(["train"])
    finally:
        flags.unparse_flags()
        for name in set(flags) - before:  # and their validators (--model_dir is required)
            delattr(flags, name)
    assert made["config"].train_views == "off"
