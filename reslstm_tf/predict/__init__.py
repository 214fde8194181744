"""Recognise the actions in videos with a zoo entry: per segment and for the whole video.

`VideoPredictor` is the one way from video files to ranked actions. It builds the backbone
once, decodes the next videos in threads while the network runs (as extraction does), and
cuts, resizes and crops each video exactly as `reslstm_tf.extract` does for the feature
cache (`reslstm_tf.data.reader.read_clip`, eval mode, with the `ClipSpec` the zoo entry or
the training run records), so what was trained is what is predicted. A video's segments go
through the backbone as one batch. Two-stream heads get optical flow computed with OpenCV
(the entry's flow method) through a second backbone. End-to-end classifiers (fine-tuned zoo
entries of kind "video_classifier") take the clips themselves, read as fine-tuning
evaluates them, through their own fine-tuned I3D (`reslstm_tf.predict.scoring`).

`predict_video` and `predict_videos` classify one video and a list; `classify` is the
library side of `reslstm-classify`: without a video it plays the sample clip shipped in the
package (`reslstm_tf/samples/cricket.mp4`, DeepMind's Apache-2.0 cricket clip; see
`samples/NOTICE`); with several videos, a folder or a split file it prints a line per
video and writes `predictions.csv` and a summary (`reslstm_tf.predict.batch`). The zoo
never imports this module; `reslstm_tf.streaming` builds on it for live sources.
"""

import collections
import concurrent.futures
import dataclasses
import pathlib
import time

import cv2
import numpy as np
from tqdm.auto import tqdm

from reslstm_tf.assets import asset_path
from reslstm_tf.backbones.extractor import SegmentFeatureExtractor
from reslstm_tf.checks import check_positive_int
from reslstm_tf.data.reader import read_clip
from reslstm_tf.data.video import VideoReadError
from reslstm_tf.extract import check_frame_size
from reslstm_tf.plots import pyplot, save_figure
from reslstm_tf.predict.batch import (
    SPLIT_FILE_SUFFIXES as SPLIT_FILE_SUFFIXES,
)
from reslstm_tf.predict.batch import (
    BatchPrediction,
    NoVideoReadError,
    check_batch,
    check_output,
    summarize,
    video_line,
)
from reslstm_tf.predict.batch import resolve_videos as resolve_videos
from reslstm_tf.predict.batch import write_predictions as write_predictions
from reslstm_tf.predict.classifier import Classifier as Classifier
from reslstm_tf.predict.classifier import load_classifier as load_classifier
from reslstm_tf.predict.scoring import (
    EndToEndScorer,
    prefix_probabilities,
    softmax,
)

SAMPLE_VIDEO = "cricket.mp4"
DEFAULT_MODEL = "kinetics400_i3d"
DEFAULT_CSV = "predictions.csv"
_DECODE_ERRORS = (VideoReadError, ValueError, OSError, cv2.error, MemoryError)


@dataclasses.dataclass
class VideoPrediction:
    """What `predict_video` returns.

    Attributes:
        video: the video path.
        model: the zoo entry (or model) name.
        top_k: ranked (class name, probability) pairs for the whole video.
        segments: per segment, ranked (class name, probability) pairs: a backbone entry
            classifies each alone; for a head, segment t gives the prediction after 1..t.
        frame_indices: (K, L) decoded frame indices of the segments.
        thumbnails: (K, S, S, 3) uint8, the middle frame of each segment.
        fps: the video's frame rate.
        probabilities: (C,) the whole video's class probabilities.
    """

    video: str
    model: str
    top_k: list
    segments: list
    frame_indices: np.ndarray
    thumbnails: np.ndarray
    fps: float
    probabilities: np.ndarray = None

    def format(self):
        """Returns a human-readable report: per-segment top-3 and the whole-video top-k.

        Segments that share frames (a clip shorter than its K x L frames) are said to overlap.
        """
        count, length = np.shape(self.frame_indices)
        shared = len(np.unique(self.frame_indices)) < count * length
        note = f" (overlapping: the clip is shorter than {count} x {length} frames)"
        lines = [f"{self.video} ({self.model}){note if shared else ''}:"]
        for index, ranked in enumerate(self.segments):
            first, last = self.frame_indices[index][[0, -1]]
            seconds = f"{first / self.fps:5.1f}-{last / self.fps:5.1f} s" if self.fps else ""
            top = ", ".join(f"{name} {p:.2f}" for name, p in ranked[:3])
            lines.append(f"  segment {index + 1:2d} {seconds}: {top}")
        lines.append("  whole video:")
        lines += [f"    {p:6.1%}  {name}" for name, p in self.top_k]
        return "\n".join(lines)


def sample_video_path():
    """Returns the path of the sample clip shipped in the package, `samples/cricket.mp4`.

    DeepMind's cricket clip from google-deepmind/kinetics-i3d (Apache-2.0, notice in
    `samples/NOTICE` and `samples/LICENSE`): 79 frames of 224x224 at 25 fps, H.264.
    """
    return asset_path("samples", SAMPLE_VIDEO)


def _ranked(probabilities, class_names, top_k):
    order = np.argsort(-probabilities)[:top_k]
    return [(class_names[i], float(probabilities[i])) for i in order]


def _backbone_weights(spec):
    """The `feature_model` weights of a spec: flow's cross-modality init is 'kinetics400'."""
    weights = spec.backbone_weights
    return "kinetics400" if str(weights).startswith("kinetics400") else weights


class VideoPredictor:
    """Classifies videos with one classifier and its backbone(s), built once.

    Args:
        classifier: a `Classifier`, a zoo entry name or a model (see `load_classifier`).
        num_segments: int, segments per video; default the entry's (its T for a head).
        top_k: int, ranked classes per prediction (at most the number of classes).
        flow_method: 'tvl1' or 'farneback' for a two-stream head; default the entry's.
        decode_workers: int, videos decoded ahead in threads while the network runs.
    """

    def __init__(self, classifier, num_segments=None, top_k=5, flow_method=None, decode_workers=2):
        self.classifier = load_classifier(classifier)
        spec = self.classifier.spec
        self.num_segments = check_positive_int("num_segments", num_segments or spec.num_segments)
        names = self.classifier.class_names
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be in [1, {len(names)}]. Received: top_k={top_k}")
        self.top_k = min(top_k, len(names))  # e.g. the default 5 on a 2-class entry: all.
        self.decode_workers = check_positive_int("decode_workers", decode_workers)
        self.streams = {"rgb": spec.replace(num_segments=self.num_segments)}
        if self.classifier.flow_spec is not None:
            flow = self.classifier.flow_spec.replace(num_segments=self.num_segments)
            self.streams["flow"] = flow.replace(flow_method=flow_method or flow.flow_method)
        self.extractors, self.scorer = {}, None
        if self.classifier.end_to_end:
            self.scorer = EndToEndScorer(self.classifier.model, self.num_segments)
        elif not self.classifier.takes_frames:
            self.extractors = {
                modality: SegmentFeatureExtractor(
                    backbone=stream.backbone,
                    modality=modality,
                    weights=_backbone_weights(stream),
                    batch_size=self.num_segments,  # a video's segments in one call
                    segment_len=stream.segment_len,
                )
                for modality, stream in self.streams.items()
            }

    def decode(self, path):
        """Decodes one video's segments per stream; returns ({modality: clip}, sample, info)."""
        check_frame_size(path)
        clips, sample, info = {}, None, None
        for modality, stream in self.streams.items():
            clip = read_clip(path, stream, "eval")
            clips[modality] = clip.as_float()
            if modality == "rgb":
                sample, info = clip.sample, clip.info
        return clips, sample, info

    def probabilities(self, clips):
        """Returns (per-segment probabilities (K, C), whole-video probabilities (C,))."""
        model = self.classifier.model
        if self.scorer is not None:
            return self.scorer(clips)
        if self.classifier.takes_frames:
            per_segment = softmax(model.predict_on_batch(clips["rgb"]))
            return per_segment, per_segment.mean(axis=0)  # the mean over segments
        features = {m: self.extractors[m](clips[m]) for m in self.streams}
        if not self.classifier.two_stream:
            features = {"features": features["rgb"]}
        per_segment = prefix_probabilities(model, features, self.num_segments)
        return per_segment, per_segment[-1]

    def predict_decoded(self, path, decoded):
        """Returns the `VideoPrediction` of a video from what `decode` returned for it."""
        clips, sample, info = decoded
        per_segment, whole = self.probabilities(clips)
        names, k = self.classifier.class_names, self.top_k
        rgb = clips["rgb"]
        middle = np.round((rgb[:, rgb.shape[1] // 2] + 1.0) * 127.5)
        return VideoPrediction(
            video=str(path),
            model=self.classifier.name,
            top_k=_ranked(whole, names, k),
            segments=[_ranked(p, names, k) for p in per_segment],
            frame_indices=sample.indices,
            thumbnails=np.clip(middle, 0, 255).astype(np.uint8),
            fps=float(info.fps or 0.0),
            probabilities=np.asarray(whole, np.float32),
        )

    def predict(self, paths, progress=True):
        """Yields (path, `VideoPrediction` or None, error or None) per path, in order.

        The next videos are decoded in threads while the network runs; a bad video is
        reported by its error and never stops the others.
        """
        paths = list(paths)
        bar = tqdm(total=len(paths), unit="video", desc="classify", disable=not progress)
        with bar, concurrent.futures.ThreadPoolExecutor(self.decode_workers) as pool:
            ahead = min(len(paths), self.decode_workers + 1)
            pending = collections.deque(
                (p, pool.submit(self.safe_decode, p)) for p in paths[:ahead]
            )
            for following in [*paths[ahead:], *[None] * len(pending)]:
                path, future = pending.popleft()
                decoded, error = future.result()
                if following is not None:
                    pending.append((following, pool.submit(self.safe_decode, following)))
                prediction = None if error else self.predict_decoded(path, decoded)
                bar.update(1)
                yield path, prediction, error

    def safe_decode(self, path):
        """Returns (`decode(path)`, None), or (None, the error) for a video that fails to decode."""
        try:
            return self.decode(path), None
        except _DECODE_ERRORS as error:
            return None, error


def predict_video(name_or_model, video_path, top_k=5, num_segments=None, progress=True):
    """Recognises the actions in a video with a zoo entry; see `VideoPrediction`.

    Args:
        name_or_model: a zoo entry name, a model returned by `zoo.load`, a `Classifier`
            from `load_classifier` or a `VideoPredictor` (to reuse one backbone).
        video_path: path of a video file OpenCV can decode.
        top_k: int, how many ranked classes to return. Defaults to 5.
        num_segments: int, segments to cut the video into; defaults to the
            entry's feature spec (its T for a Res-LSTM head).
        progress: unused; `predict_videos` shows a progress bar.

    Returns:
        A `VideoPrediction`.

    Example:

    >>> predict_video("kinetics400_i3d", sample_video_path()).top_k[0]
    ('playing cricket', 0.97...)
    """
    del progress
    predictor = name_or_model
    if not isinstance(predictor, VideoPredictor):
        predictor = VideoPredictor(name_or_model, num_segments=num_segments, top_k=top_k)
    return predictor.predict_decoded(video_path, predictor.decode(video_path))


def _classify_all(predictor, videos, labels=None, progress=True, report=None):
    """Classifies `videos` with `predictor`; returns their `BatchPrediction`.

    `report(video, prediction or None, error or None)`, if given, is called per video.
    """
    labels = {str(video): label for video, label in (labels or {}).items()}
    start = time.perf_counter()
    predictions, failures = [], []
    for path, prediction, error in predictor.predict(videos, progress=progress):
        if error is None:
            predictions.append(prediction)
        else:
            failures.append((str(path), str(error)))
        if report is not None:
            report(str(path), prediction, error)
    names = list(predictor.classifier.class_names)
    return BatchPrediction(predictions, failures, labels, time.perf_counter() - start, names)


def predict_videos(
    name_or_model, videos, top_k=5, num_segments=None, labels=None, progress=True, **kwargs
):
    """Classifies many videos with one backbone; a bad video is reported, never fatal.

    Args:
        name_or_model: a zoo entry name, a model, a `Classifier` or a `VideoPredictor`.
        videos: video paths.
        top_k: int, ranked classes per video.
        num_segments: int, segments per video (default: the entry's).
        labels: optional {video path: true class name}, for `BatchPrediction.accuracy`.
        progress: show a progress bar with videos/s and ETA.
        **kwargs: `flow_method`, `decode_workers` of `VideoPredictor`.

    Returns:
        A `BatchPrediction`; a `UserWarning` counts the videos that failed and names the
        first reasons (all of them are in `.failures`).

    Raises:
        NoVideoReadError: (a ValueError) no video could be classified; its `.batch` holds
            each video's reason.
    """
    predictor = name_or_model
    if not isinstance(predictor, VideoPredictor):
        predictor = VideoPredictor(name_or_model, num_segments, top_k, **kwargs)
    batch = _classify_all(predictor, videos, labels, progress)
    check_batch(batch)
    return batch


def contact_sheet(prediction, out_png, columns=4):
    """Writes a PNG: each segment's middle frame with its top class, and the video's top-k."""
    plt = pyplot()
    count = len(prediction.thumbnails)
    rows = -(-count // columns)
    fig = plt.figure(figsize=(3.2 * columns, 3.2 * rows + 2.6))
    grid = fig.add_gridspec(rows + 1, columns, height_ratios=[3.2] * rows + [2.6])
    for index, (image, ranked) in enumerate(zip(prediction.thumbnails, prediction.segments)):
        axis = fig.add_subplot(grid[index // columns, index % columns])
        axis.imshow(image)
        axis.set_axis_off()
        name, p = ranked[0]
        axis.set_title(f"{index + 1}: {name} ({p:.0%})", fontsize=9)
    bars = fig.add_subplot(grid[rows, :])
    labels = [name for name, _ in prediction.top_k][::-1]
    values = [p for _, p in prediction.top_k][::-1]
    bars.barh(labels, values, color="tab:blue")
    bars.set_xlim(0, 1)
    bars.set_xlabel("probability (whole video)")
    for y, value in enumerate(values):  # a long bar holds its label, a short one is followed
        inside = value > 0.85
        x, align = (value - 0.01, "right") if inside else (value + 0.01, "left")
        color = "white" if inside else "black"
        bars.text(x, y, f"{value:.1%}", va="center", ha=align, color=color, fontsize=9)
    fig.suptitle(f"{pathlib.Path(prediction.video).name}: {prediction.model}", fontsize=11)
    return save_figure(fig, out_png, dpi=90)


def _classify_many(predictor, paths, labels, out_csv):
    """Classifies several videos with a line per video; writes the CSV; prints the summary."""
    names = predictor.classifier.class_names

    def report(video, prediction, error):
        tqdm.write(video_line(video, prediction, error, labels.get(video), names))

    batch = _classify_all(predictor, paths, labels, report=report)
    csv_path = write_predictions(batch, out_csv, predictor.top_k)
    summarize(batch, csv_path)
    if not batch.predictions:
        raise NoVideoReadError(
            f"none of the {len(paths)} videos could be classified; see {csv_path} for each reason",
            batch,
        )
    return batch


def _model_label(model, classifier):
    """The name a file is labelled with: the zoo name asked for (an alias stays an alias)."""
    if isinstance(model, (str, pathlib.Path)):
        path = pathlib.Path(model)
        return path.stem if path.suffix == ".keras" else str(model)
    return classifier.name


def classify(
    videos=None,
    model=DEFAULT_MODEL,
    top_k=5,
    num_segments=None,
    sheet=None,
    out_csv=None,
    classes=None,
    flow_method=None,
    data_dir=None,
    overwrite=False,
):
    """Classifies videos (default: the sample clip); the library side of `reslstm-classify`.

    One video: prints its report and writes a contact sheet. Several videos, a folder or a
    split file: a progress bar, a line per video (top-1, probability, true class when known),
    `predictions.csv`, a summary, the accuracy over the labels that are classes of the model.

    Args:
        videos: a video path, or a list of video paths, folders and split files; None
            for `sample_video_path()`.
        model: a zoo entry name, a `.keras` head, a model from `zoo.load` or a `Classifier`.
        top_k: int, ranked classes to report.
        num_segments: int, segments to cut each video into (default: the entry's).
        sheet: one video: the contact-sheet PNG (default `<video stem>_<model name>.png`,
            the name as given: `cricket_kinetics400_i3d.png` for the default alias).
        out_csv: several videos: the predictions CSV (default `predictions.csv`), checked
            before any video is classified.
        classes: a class list file, for a model without a zoo entry.
        flow_method: 'tvl1' or 'farneback' for a two-stream head (default: the entry's).
        data_dir: the folder split-file paths are relative to (default: the file's own).
        overwrite: replace an existing `out_csv` (otherwise it is refused).

    Returns:
        The `VideoPrediction` of one video, or the `BatchPrediction` of several.

    Raises:
        FileExistsError: `out_csv` exists and `overwrite` is False.
        NoVideoReadError: none of several videos could be classified.
    """
    inputs = [videos] if isinstance(videos, (str, pathlib.Path)) else list(videos or [])
    inputs = inputs or [sample_video_path()]
    paths, labels = resolve_videos(inputs, data_dir)
    single = len(inputs) == 1 and paths == [str(inputs[0])]
    if single:  # a bad file is reported before the model is built
        try:
            check_frame_size(paths[0])
        except VideoReadError as error:
            hint = f"{error.problem}; give a video OpenCV can decode"
            raise VideoReadError(error.path, hint) from None
    else:  # and a bad output before any video is classified
        out_csv = check_output(out_csv or DEFAULT_CSV, overwrite)
    given = {"num_segments": num_segments, "flow_method": flow_method}
    given = {name: value for name, value in given.items() if value is not None}
    classifier = load_classifier(model, classes, spec=given or None)  # a run refuses changes
    predictor = VideoPredictor(classifier, num_segments, top_k, flow_method=flow_method)
    if not single:
        return _classify_many(predictor, paths, labels, out_csv)
    prediction = predict_video(predictor, paths[0])
    print(prediction.format())
    name = f"{pathlib.Path(paths[0]).stem}_{_model_label(model, predictor.classifier)}.png"
    contact_sheet(prediction, sheet or name)
    print(f"contact sheet: {sheet or name}")
    return prediction
