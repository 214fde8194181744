"""The flow-frame cache (`reslstm_tf.data.flow_cache`) filled by an Apache Beam pipeline.

TV-L1 costs about 0.8 s per 224x224 frame pair on one core, so a dataset's flow is the work
to spread over many machines. Each worker computes a video's quantised flow with
`reslstm_tf.data.flow_cache.video_flow` (Farneback or TV-L1, uint8 fields) and stores it with
`FlowCache.write` (a temporary name, then a rename): the files are those `FlowCache.fill`
writes, byte for byte, and a rerun computes only the videos that have none. Videos that
cannot be read go to the dead-letter output (``flow_failures.json``:
``{"failures": [{"id", "error"}]}``). As for the feature cache, the folder must be visible to
every worker at the same path.

Example:

    from reslstm_tf.data.flow_cache import FlowCache
    from reslstm_tf.pipelines.flow import run_flow

    summary = run_flow(FlowCache("flow/tvl1", method="tvl1"), [("Ollie/a.mp4", "/v/Ollie/a.mp4")])
"""

import json
import os
import time

import apache_beam as beam

from reslstm_tf.data import video as video_lib
from reslstm_tf.data.flow_cache import SPEC_FILE, FlowCache, video_flow
from reslstm_tf.faults import fault_point
from reslstm_tf.files import atomic_write, folder_lock
from reslstm_tf.pipelines.extract import (
    DEAD_LETTER,
    outcome,
    pipeline_options,
    write_failures,
)

FAILURES_FILE = "flow_failures.json"


class ComputeFlow(beam.DoFn):
    """(video id, path) -> video id, its flow stored in the cache; bad videos -> dead letter."""

    def __init__(self, root, method, short_side, bound):
        self._args = (os.fspath(root), method, short_side, bound)
        self._cache = None

    def setup(self):
        self._cache = FlowCache(*self._args)

    def process(self, element):
        video_id, path = element
        cache = self._cache
        if cache.has(video_id):  # a retried bundle
            yield video_id
            return
        try:
            flow = video_flow(path, cache.method, cache.short_side, cache.bound)
        except (video_lib.VideoReadError, ValueError, OSError) as error:
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER, {"id": video_id, "error": f"{type(error).__name__}: {error}"}
            )
            return
        cache.path_for(video_id).parent.mkdir(parents=True, exist_ok=True)
        cache.write(video_id, flow)
        fault_point("flow_written")
        yield video_id


def build_flow_pipeline(pipeline, cache, items):
    """Adds the flow of `items` ((video id, path) pairs) to `pipeline`; returns the outputs."""
    results = (
        pipeline
        | "ListVideos" >> beam.Create(items)
        | "Spread" >> beam.Reshuffle()
        | "Flow"
        >> beam.ParDo(
            ComputeFlow(cache.root, cache.method, cache.short_side, cache.bound)
        ).with_outputs(DEAD_LETTER, main="computed")
    )
    (
        results[DEAD_LETTER]
        | "AllFailures" >> beam.combiners.ToList()
        | "WriteFailures"
        >> beam.Map(lambda failures: write_failures(cache.root / FAILURES_FILE, failures))
    )
    return results


def run_flow(cache, items, options=None):
    """Fills a `FlowCache` with the flow of every (video id, path) it lacks; returns a summary.

    Returns:
        dict: computed, skipped (already cached), failed, failures, seconds.
    """
    start = time.monotonic()
    items = list(dict(items).items())
    with folder_lock(cache.root, "flow cache"):
        with atomic_write(cache.root / SPEC_FILE, "w") as handle:
            json.dump(cache.spec, handle, indent=2, sort_keys=True)
        todo = [(video_id, path) for video_id, path in items if not cache.has(video_id)]
        with beam.Pipeline(options=options or pipeline_options()) as pipeline:
            build_flow_pipeline(pipeline, cache, todo)
    return outcome(cache.root / FAILURES_FILE, len(todo), len(items), start, done="computed")
