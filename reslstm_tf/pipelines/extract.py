"""Feature extraction as an Apache Beam pipeline: the cache reslstm-extract writes, on many workers.

The pipeline does what `reslstm_tf.extract.extract` does, with the same pieces:

1. the video list of an `ExtractConfig` (`reslstm_tf.extract.load_videos`: a folder, a split
   file, UCF-101 or HMDB-51) becomes keyed records ``(video id, VideoRecord)``, minus the
   videos already in the cache;
2. `DecodeClip` checks each header (`check_frame_size`, `check_clip_memory`) and decodes the
   centred clip of the config's `ClipSpec` (`reslstm_tf.data.reader.read_clip`);
3. `RunInference` with `SegmentFeatureHandler` embeds the segments: one backbone per worker
   process (`build_extractor`, the extractor reslstm-extract builds), batches of up to
   ``batch_size`` videos whose segments go through it together; a failing batch is retried
   video by video;
4. `ToRecord` makes each video's record (`reslstm_tf.data.feature_cache.make_example`, the
   same bytes), `WriteShards` writes shards of ``shard_size`` records atomically
   (`reslstm_tf.pipelines.shards`), and the last step writes the sealed index and
   ``failures.json``.

Bad videos go to the dead-letter output (``failures.json``: ``{"failures": [{"id", "error"}]}``,
as reslstm-extract's) and never stop the run. A run killed at any point and run again skips
the videos whose shards were written and finishes with every video exactly once; readers
(reslstm-train, reslstm-eval) refuse the cache until the index is sealed.

The cache folder must be visible to every worker and to the launching process at the same
path (a local folder for the DirectRunner; a shared file system, e.g. NFS or Filestore, on a
cluster): see docs/beam.md. Augmented views (``views``) and parallel ``num_shards`` workers
are reslstm-extract's; here the runner spreads the work.
"""

import dataclasses
import json
import logging
import os
import time

import apache_beam as beam
import cv2
import numpy as np
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    ModelHandler,
    PredictionResult,
    RunInference,
)
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.window import GlobalWindows

from reslstm_tf import extract as extract_lib
from reslstm_tf.data.feature_cache import check_writable, make_example
from reslstm_tf.data.reader import read_clip
from reslstm_tf.data.video import VideoReadError
from reslstm_tf.files import atomic_write, folder_lock
from reslstm_tf.pipelines import shards as shards_lib

logger = logging.getLogger(__name__)

DEAD_LETTER = "dead_letter"
RUNNERS = {
    "direct": "DirectRunner",
    "flink": "FlinkRunner",
    "spark": "SparkRunner",
    "dataflow": "DataflowRunner",
}


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    """One video to extract: its position in the video list and its `VideoItem`."""

    position: int
    item: object


@dataclasses.dataclass
class DecodedClip:
    """A decoded centred clip (float32 (K_v, L, S, S, C) in [-1, 1]) and what the record keeps."""

    position: int
    item: object
    clip: np.ndarray
    sample: object
    info: object


def decode_clip(record, config):
    """The `DecodedClip` of a `VideoRecord`, or raises as `read_clip` and the header checks do."""
    path = os.path.join(os.fspath(config.data_dir), record.item.path)
    extract_lib.check_clip_memory(path, extract_lib.check_frame_size(path), config)
    clip = read_clip(path, config.clip, "eval")
    return DecodedClip(record.position, record.item, clip.as_float(), clip.sample, clip.info)


class DecodeClip(beam.DoFn):
    """(id, VideoRecord) -> (id, DecodedClip); bad videos -> the dead-letter output."""

    def __init__(self, config):
        self._config = config

    def process(self, element):
        video_id, record = element
        try:
            yield video_id, decode_clip(record, self._config)
        except (VideoReadError, ValueError, OSError, cv2.error, MemoryError) as err:
            error = f"{type(err).__name__}: {err}"
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, {"id": video_id, "error": error})


class SegmentFeatureHandler(ModelHandler):
    """A `ModelHandler` of the config's backbone: `DecodedClip`s -> their (K_v, d_f) features.

    The model is `reslstm_tf.extract.build_extractor(config)`, loaded once per worker process
    (or once per machine with ``share_across_processes``, served to its processes). A batch
    holds up to `config.batch_size` videos; their segments run through the backbone together,
    as in reslstm-extract. Each result's inference is the features, or the error string of a
    video the backbone failed on (the example keeps no clip).
    """

    def __init__(self, config, *, share_across_processes=False):
        super().__init__()
        self._config = config
        self._share = bool(share_across_processes)

    def load_model(self):
        return extract_lib.build_extractor(self._config)

    def run_inference(self, batch, model, inference_args=None):
        failures = []
        features = extract_lib.embed_batch(model, list(batch), failures)
        errors = {failure["id"]: failure["error"] for failure in failures}
        results = []
        for clip in batch:
            kept = dataclasses.replace(clip, clip=None)
            inference = features.get(clip.position, errors.get(clip.item.path, "no features"))
            results.append(PredictionResult(kept, inference))
        return results

    def get_num_bytes(self, batch):
        return sum(clip.clip.nbytes for clip in batch)

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": self._config.batch_size}

    def share_model_across_processes(self):
        return self._share

    def get_metrics_namespace(self):
        return "reslstm_segment_features"


class ToRecord(beam.DoFn):
    """(id, PredictionResult) -> (id, serialised example, shape); failures -> dead letter."""

    def process(self, element):
        video_id, result = element
        feats, clip = result.inference, result.example
        if isinstance(feats, str):
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, {"id": video_id, "error": feats})
            return
        if not np.all(np.isfinite(feats)):
            error = "ValueError: the backbone returned NaN or infinite features"
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, {"id": video_id, "error": error})
            return
        record = make_example(
            clip.item.path,
            clip.item.label,
            feats,
            frame_indices=clip.sample.indices,
            num_frames=clip.sample.num_frames,
            fps=clip.info.fps,
            meta={"class_name": clip.item.class_name},
        )
        yield video_id, record, list(np.shape(feats))


class WriteShards(beam.DoFn):
    """Writes records as shards of up to `shard_size` (and a bundle's rest); yields manifests."""

    def __init__(self, out_dir, shard_size):
        self._out_dir = os.fspath(out_dir)
        self._shard_size = int(shard_size)
        self._buffer = []

    def start_bundle(self):
        self._buffer = []

    def process(self, element):
        self._buffer.append(element)
        if len(self._buffer) >= self._shard_size:
            yield self._flush()

    def finish_bundle(self):
        if self._buffer:
            yield GlobalWindows.windowed_value(self._flush())

    def _flush(self):
        manifest = shards_lib.write_shard(self._out_dir, self._buffer)
        self._buffer = []
        return manifest


def _seal(manifests, failures, out_dir, metadata, previous):
    """The pipeline's last step: the sealed index, then failures.json."""
    shards_lib.seal_index(out_dir, metadata, previous, manifests)
    write_failures(os.path.join(out_dir, "failures.json"), failures)
    return len(manifests)


def write_failures(path, failures):
    """Writes the dead-letter records as reslstm-extract's failures.json (sorted by id)."""
    with atomic_write(path, "w") as handle:
        json.dump({"failures": sorted(failures, key=lambda f: f["id"])}, handle, indent=1)


def build_pipeline(pipeline, config, todo, *, metadata, previous, share_model=False):
    """Adds the extraction of `todo` ((id, VideoRecord) pairs) to a Beam `pipeline`.

    Returns:
        dict of the PCollections: 'manifests' (written shards), 'failures' (dead letter).
    """
    decoded = (
        pipeline
        | "ListVideos" >> beam.Create(todo)
        | "Spread" >> beam.Reshuffle()
        | "Decode" >> beam.ParDo(DecodeClip(config)).with_outputs(DEAD_LETTER, main="clips")
    )
    handler = KeyedModelHandler(SegmentFeatureHandler(config, share_across_processes=share_model))
    records = (
        decoded.clips
        | "Backbone" >> RunInference(handler)
        | "ToRecord" >> beam.ParDo(ToRecord()).with_outputs(DEAD_LETTER, main="records")
    )
    manifests = records.records | "WriteShards" >> beam.ParDo(
        WriteShards(config.out_dir, config.shard_size)
    )
    failures = (decoded[DEAD_LETTER], records[DEAD_LETTER]) | "DeadLetter" >> beam.Flatten()
    failure_list = failures | "AllFailures" >> beam.combiners.ToList()
    (
        manifests
        | "AllShards" >> beam.combiners.ToList()
        | "Seal"
        >> beam.Map(
            _seal,
            beam.pvalue.AsSingleton(failure_list),
            out_dir=os.fspath(config.out_dir),
            metadata=metadata,
            previous=previous,
        )
    )
    return {"manifests": manifests, "failures": failures}


def cache_metadata(config, videos):
    """The settings reslstm-extract records in the index for this config and video list."""
    from reslstm_tf.backbones.extractor import FEATURE_DIMS

    dims = type("Dims", (), {"feature_dim": FEATURE_DIMS[config.clip.backbone]})
    metadata = extract_lib.backbone_metadata(config, dims, videos)
    return extract_lib.cache_settings(dataclasses.replace(config, metadata=metadata))


def pipeline_options(runner="direct", beam_args=()):
    """Beam `PipelineOptions` for `runner` ('direct', 'flink', 'spark', 'dataflow') and args."""
    if runner not in RUNNERS:
        raise extract_lib.ExtractInputError(
            f"runner must be one of {sorted(RUNNERS)}. Received: runner={runner!r}"
        )
    return PipelineOptions([f"--runner={RUNNERS[runner]}", *beam_args])


def _check_config(config):
    if config.views or config.num_shards != 1 or config.limit is not None:
        raise extract_lib.ExtractInputError(
            "the Beam pipeline extracts the centred view of every video: views, num_shards "
            "and limit are reslstm-extract's (the runner spreads the work itself)"
        )


def run_extract(config, options=None, *, videos=None, share_model=False):
    """Runs the extraction pipeline for an `ExtractConfig`; returns a summary as `extract`'s.

    Args:
        config: the `ExtractConfig` (views, num_shards and limit must keep their defaults).
        options: Beam `PipelineOptions` (default: `pipeline_options()`, the DirectRunner).
        videos: the video list (default: `reslstm_tf.extract.load_videos(config)`).
        share_model: one backbone per machine, served to its worker processes.

    Returns:
        dict: done, skipped (already cached), failed, failures, problems, seconds, out_dir,
        failures_file.
    """
    _check_config(config)
    start = time.monotonic()
    videos = extract_lib.load_videos(config) if videos is None else videos
    problems = [str(problem) for problem in getattr(videos, "problems", [])]
    if not len(videos):
        raise extract_lib.ExtractError("no videos to extract: the video list is empty")
    out_dir = check_writable(config.out_dir, num_shards=1)  # before anything is decoded
    metadata = cache_metadata(config, videos)
    with folder_lock(out_dir, "feature cache", lock_name=".lock"):
        previous = shards_lib.read_previous(out_dir, metadata)
        written = shards_lib.committed_shards(out_dir, previous)
        done = {i for s in (previous or {}).get("shards", []) for i in s["ids"]}
        done.update(i for manifest in written for i in manifest["ids"])
        todo = [
            (item.path, VideoRecord(position, item))
            for position, item in enumerate(videos)
            if item.path not in done
        ]
        todo = list(dict(todo).items())  # a video listed twice is extracted once
        shards_lib.mark_incomplete(out_dir, previous, f"pid {os.getpid()}")
        with beam.Pipeline(options=options or pipeline_options()) as pipeline:
            build_pipeline(
                pipeline,
                config,
                todo,
                metadata=metadata,
                previous=_with_written(out_dir, previous, written, metadata),
                share_model=share_model,
            )
    failures_file = os.path.join(os.fspath(out_dir), "failures.json")
    summary = outcome(failures_file, len(todo), len(videos), start)
    return {**summary, "problems": problems, "out_dir": os.fspath(out_dir)}


def outcome(failures_file, todo, total, start, done="done"):
    """A finished pipeline's summary: the videos done, skipped and failed (read back), seconds.

    Args:
        failures_file: the dead-letter file the pipeline wrote.
        todo: how many videos the pipeline was given; total: how many were asked for.
        start: the `time.monotonic()` of the start.
        done: the name of the count of videos done ("done", or "computed" for flow).
    """
    with open(failures_file, encoding="utf-8") as handle:
        failures = json.load(handle)["failures"]
    return {
        done: todo - len(failures),
        "skipped": total - todo,
        "failed": len(failures),
        "failures": failures,
        "seconds": round(time.monotonic() - start, 2),
        "failures_file": failures_file,
    }


def _with_written(out_dir, previous, written, metadata):
    """The earlier index with the shards of a killed run added (they are kept as written)."""
    if not written:
        return previous
    base = previous or {"metadata": metadata, "feature_shape": None, "shards": []}
    first = out_dir / written[0]["file"]
    shape = base.get("feature_shape") or shards_lib.shard_feature_shape(first)
    shards = [{"file": m["file"], "ids": m["ids"]} for m in written]
    return {**base, "feature_shape": shape, "shards": [*base["shards"], *shards]}
