"""Batch classification as an Apache Beam pipeline: reslstm-classify's predictions.csv.

Each worker process builds one `reslstm_tf.predict.VideoPredictor` (the classifier and its
backbones, as reslstm-classify does) through `RunInference`'s `ModelHandler`, decodes each
video with it and classifies it; the last step writes the predictions CSV with
`reslstm_tf.predict.batch.write_predictions`, in the order of the input videos, failures
last, each with its reason: the file reslstm-classify writes for the same videos.

The classifier travels to the workers as what loads it (`ClassifierSource`: a zoo entry
name or a ``.keras`` file, its class list and spec overrides), not as a model.

Example:

    from reslstm_tf.pipelines.classify import ClassifierSource, run_classify

    batch = run_classify(ClassifierSource("kinetics400_i3d"), ["a.mp4", "b.mp4"], "out.csv")
"""

import dataclasses
import time

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from reslstm_tf.pipelines.extract import pipeline_options
from reslstm_tf.predict import VideoPredictor, load_classifier
from reslstm_tf.predict.batch import BatchPrediction, write_predictions


@dataclasses.dataclass(frozen=True)
class ClassifierSource:
    """What builds a `VideoPredictor` on a worker (the arguments of `load_classifier` and it).

    Attributes:
        model: a zoo entry name or a ``.keras`` file.
        classes: a class list file or names (a model without a zoo entry).
        spec: feature-spec overrides (`load_classifier`'s ``spec``), a dict.
        num_segments: segments per video (default the entry's).
        top_k: ranked classes per video.
        flow_method: a two-stream head's flow method (default the entry's).
    """

    model: str
    classes: tuple = None
    spec: dict = None
    num_segments: int = None
    top_k: int = 5
    flow_method: str = None

    def load(self):
        """The `VideoPredictor` (its classifier and backbones built)."""
        classes = list(self.classes) if isinstance(self.classes, (list, tuple)) else self.classes
        classifier = load_classifier(self.model, classes=classes, spec=self.spec)
        return VideoPredictor(
            classifier,
            self.num_segments,
            self.top_k,
            flow_method=self.flow_method,
            decode_workers=1,
        )


class VideoPredictorHandler(ModelHandler):
    """A `ModelHandler` of video paths -> (`VideoPrediction` or None, error or None)."""

    def __init__(self, source):
        super().__init__()
        self._source = source

    def load_model(self):
        return self._source.load()

    def run_inference(self, batch, model, inference_args=None):
        results = []
        for position, path in batch:
            decoded, error = model.safe_decode(path)
            prediction = None if error else model.predict_decoded(path, decoded)
            if prediction is not None:  # the thumbnails are for contact sheets, not the CSV
                prediction = dataclasses.replace(prediction, thumbnails=None)
            results.append(PredictionResult((position, path), (prediction, error and str(error))))
        return results

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": 1}


def _batch(results, class_names, labels, seconds):
    """The `BatchPrediction` of the pipeline's results, in the input order."""
    results = sorted(results, key=lambda result: result.example[0])
    predictions = [r.inference[0] for r in results if r.inference[1] is None]
    failures = [(str(r.example[1]), r.inference[1]) for r in results if r.inference[1]]
    labels = {str(video): label for video, label in (labels or {}).items()}
    return BatchPrediction(predictions, failures, labels, seconds, class_names)


def run_classify(source, videos, out_csv, options=None, labels=None):
    """Classifies `videos` on a Beam runner and writes reslstm-classify's predictions CSV.

    Args:
        source: a `ClassifierSource`.
        videos: video paths.
        out_csv: the predictions CSV to write.
        options: Beam `PipelineOptions` (default: the DirectRunner).
        labels: optional {video path: true class name}.

    Returns:
        dict: classified, failures [(video, error)], seconds, class_names, out_csv.
    """
    start = time.monotonic()
    predictor = source.load()  # checks the source here, and gives the classes
    class_names, top_k = list(predictor.classifier.class_names), predictor.top_k
    del predictor
    with beam.Pipeline(options=options or pipeline_options()) as pipeline:
        (
            pipeline
            | "ListVideos" >> beam.Create(list(enumerate(str(v) for v in videos)))
            | "Spread" >> beam.Reshuffle()
            | "Classify" >> RunInference(VideoPredictorHandler(source))
            | "AllResults" >> beam.combiners.ToList()
            | "WriteCsv"
            >> beam.Map(
                lambda results: write_predictions(
                    _batch(results, class_names, labels, 0.0), out_csv, top_k
                )
            )
        )
    return _read_back(out_csv, class_names, labels, time.monotonic() - start)


def _read_back(out_csv, class_names, labels, seconds):
    """The summary of the CSV the pipeline wrote."""
    import csv

    with open(out_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    failed = [(row["video"], row["error"]) for row in rows if row["error"]]
    return {
        "classified": len(rows) - len(failed),
        "failures": failed,
        "seconds": round(seconds, 2),
        "class_names": class_names,
        "out_csv": str(out_csv),
    }
