"""The one experiment runner (`reslstm_tf.experiments.runner`): views, heads, run logs."""

import json

import numpy as np
import pytest

from reslstm_tf.data.feature_arrays import view_schedule
from reslstm_tf.experiments.config import RunSpec, head_options
from reslstm_tf.experiments.runner import (
    CsvLog,
    HeadRunner,
    RunLog,
    feature_dims,
    run_plan,
    view_dataset_fn,
)


def test_stored_views_are_read_by_the_one_view_schedule():
    num_views, num_videos = 3, 10
    # views[v, n] holds (v, n) in every entry, so each element names the view it came from.
    views = np.zeros((num_views, num_videos, 2, 2), np.float32)
    for v in range(num_views):
        for n in range(num_videos):
            views[v, n] = [[v, n], [v, n]]
    labels = np.arange(num_videos) % 2
    rows = np.array([1, 4, 5, 8])
    dataset_fn = view_dataset_fn(views, labels, rows, seed=7)
    for epoch in range(4):
        read = np.stack([x.numpy()[0] for x, _ in dataset_fn(epoch)])
        expected = view_schedule(num_videos, num_views, epoch, 7)[rows]
        assert read[:, 1].tolist() == rows.tolist()  # a video's view, wherever it sits
        assert read[:, 0].tolist() == expected.tolist()
    two = view_dataset_fn({"rgb": views, "flow": views + 100}, labels, rows, seed=7)
    x, _ = next(iter(two(1)))
    assert x["flow"].numpy()[0, 0] == x["rgb"].numpy()[0, 0] + 100  # the same view index


@pytest.mark.slow
def test_head_runner_takes_the_feature_size_from_the_features():
    rng = np.random.default_rng(0)
    labels = np.arange(12) % 2
    runner = HeadRunner(2, head_options(epochs=1, batch_size=4))
    spec = RunSpec("res", 2, 8, 3, "rgb", "", "", "cv", 0, 0)
    train, val = np.arange(8), np.arange(8, 12)
    for dim in (5, 7):
        features = rng.normal(size=(12, 3, dim)).astype("float32")
        assert feature_dims(features) == dim
        result = runner.run(spec, features, labels, train, val)
        assert runner.model.input_shape == (None, 3, dim)
        assert result.val_probabilities.shape == (4, 2)
        np.testing.assert_allclose(result.val_probabilities.sum(-1), 1.0, atol=1e-6)
        assert result.val_accuracy == np.mean(result.val_probabilities.argmax(-1) == labels[val])


def test_run_plan_skips_what_the_log_holds_and_a_log_resumes(tmp_path):
    calls = []

    def execute(run):
        calls.append(run)
        return {"value": run * 10}

    runs = [(f"r{i}", i) for i in range(4)]
    log = RunLog(tmp_path / "runs.jsonl")
    assert run_plan(runs[:2], execute, log, progress=False) == [{"value": 0}, {"value": 10}]
    resumed = RunLog(tmp_path / "runs.jsonl")
    assert resumed.done("r1") and not resumed.done("r2")
    run_plan(runs, execute, resumed, progress=False, cost=lambda run: 0.5)
    assert calls == [0, 1, 2, 3]
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines][-1] == {"key": "r3", "value": 30}
    csv_log = CsvLog(tmp_path / "runs.csv", ("value",))
    run_plan(runs, execute, csv_log, progress=False)
    assert (tmp_path / "runs.csv").read_text().split() == ["value", "0", "10", "20", "30"]


@pytest.mark.parametrize("dims", [{"rgb": 6, "flow": 4}])
def test_two_stream_heads_take_each_streams_size(dims):
    rng = np.random.default_rng(1)
    labels = np.arange(8) % 2
    features = {k: rng.normal(size=(8, 2, d)).astype("float32") for k, d in dims.items()}
    runner = HeadRunner(2, head_options(epochs=1, batch_size=4))
    spec = RunSpec("res", 2, 4, 2, "two_stream", "product", "late", "cv", 0, 0)
    result = runner.run(spec, features, labels, np.arange(6), np.arange(6, 8))
    assert result.val_probabilities.shape == (2, 2)
    shapes = {tensor.name: tuple(tensor.shape) for tensor in runner.model.inputs}
    assert shapes == {"rgb": (None, 2, 6), "flow": (None, 2, 4)}
