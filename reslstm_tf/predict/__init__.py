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
`samples/NOTICE`); with several videos, a folder or a split file it writes
`predictions.csv` and a summary. The zoo never imports this module; `reslstm_tf.streaming`
builds on it for live sources.
"""

import collections
import concurrent.futures
import csv
import dataclasses
import pathlib
import time

import cv2
import numpy as np
from tqdm.auto import tqdm

from reslstm_tf.assets import asset_path
from reslstm_tf.backbones.extractor import SegmentFeatureExtractor
from reslstm_tf.checks import check_positive_int
from reslstm_tf.data import datasets
from reslstm_tf.data.reader import read_clip
from reslstm_tf.data.video import VideoReadError
from reslstm_tf.extract import check_frame_size
from reslstm_tf.files import atomic_write
from reslstm_tf.plots import pyplot, save_figure
from reslstm_tf.predict.classifier import Classifier as Classifier
from reslstm_tf.predict.classifier import load_classifier as load_classifier
from reslstm_tf.predict.scoring import (
    EndToEndScorer,
    prefix_probabilities,
    softmax,
)

SAMPLE_VIDEO = "cricket.mp4"
DEFAULT_MODEL = "kinetics400_i3d"
SPLIT_FILE_SUFFIXES = (".txt", ".lst", ".list")
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
        """Returns a human-readable report: per-segment top-1 and the whole-video top-k."""
        lines = [f"{self.video} ({self.model}):"]
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
                (p, pool.submit(self._safe_decode, p)) for p in paths[:ahead]
            )
            for following in [*paths[ahead:], *[None] * len(pending)]:
                path, future = pending.popleft()
                decoded, error = future.result()
                if following is not None:
                    pending.append((following, pool.submit(self._safe_decode, following)))
                prediction = None if error else self.predict_decoded(path, decoded)
                bar.update(1)
                yield path, prediction, error

    def _safe_decode(self, path):
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


@dataclasses.dataclass
class BatchPrediction:
    """What `predict_videos` returns.

    Attributes:
        predictions: the `VideoPrediction`s of the videos that could be read, in order.
        failures: (video, error message) of the videos that could not.
        labels: {video: true class name} for the videos whose class is known.
        seconds: wall time of the run.
    """

    predictions: list
    failures: list
    labels: dict
    seconds: float

    @property
    def videos_per_second(self):
        """Videos (classified or failed) per second of wall time."""
        return (len(self.predictions) + len(self.failures)) / max(self.seconds, 1e-9)

    def accuracy(self):
        """Returns (top-1 correct, labelled) over the classified videos with a known class."""
        labelled = [p for p in self.predictions if self.labels.get(p.video) is not None]
        correct = sum(p.top_k[0][0] == self.labels[p.video] for p in labelled)
        return correct, len(labelled)


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
        A `BatchPrediction`.
    """
    predictor = name_or_model
    if not isinstance(predictor, VideoPredictor):
        predictor = VideoPredictor(name_or_model, num_segments, top_k, **kwargs)
    start = time.perf_counter()
    predictions, failures = [], []
    for path, prediction, error in predictor.predict(videos, progress=progress):
        if error is None:
            predictions.append(prediction)
        else:
            failures.append((str(path), str(error)))
    labels = {str(video): label for video, label in (labels or {}).items()}
    return BatchPrediction(predictions, failures, labels, time.perf_counter() - start)


def resolve_videos(inputs, data_dir=None):
    """Returns ([video paths], {video: class name}) from videos, folders and split files.

    A folder gives its video files (searched recursively), each labelled with the folder
    it sits in when that folder is a direct sub-folder (one folder per class); a split file
    (`.txt`, `<Class>/<video>` lines) gives its videos relative to `data_dir` (default: the
    split file's folder), labelled with their class folder.

    Raises:
        FileNotFoundError: an input does not exist, or a folder holds no videos.
        datasets.SplitFileError: a split file lists no videos.
    """
    videos, labels = [], {}
    for item in map(pathlib.Path, inputs):
        if item.is_dir():
            found = sorted(
                p for p in item.rglob("*") if p.suffix.lower() in datasets.VIDEO_EXTENSIONS
            )
            if not found:
                raise FileNotFoundError(
                    f"folder {item} holds no videos ({', '.join(datasets.VIDEO_EXTENSIONS)})"
                )
            videos += map(str, found)
            labels.update({str(p): p.parent.name for p in found if p.parent.parent == item})
        elif item.suffix.lower() in SPLIT_FILE_SUFFIXES and item.is_file():
            root = pathlib.Path(data_dir) if data_dir else item.parent
            listed = datasets.folder(root, item, on_error="skip")
            if not len(listed):
                raise datasets.SplitFileError(item, "lists no '<Class>/<video>' lines")
            videos += [str(root / v.path) for v in listed]
            labels.update({str(root / v.path): v.class_name for v in listed})
        elif not item.exists():
            raise FileNotFoundError(
                f"{item} does not exist: give a video file, a folder of videos or a split file"
            )
        else:
            videos.append(str(item))
    return videos, labels


def write_predictions(batch, path, top_k):
    """Writes the predictions CSV: video, label, top-k classes and probabilities, segment top-1."""
    header = ["video", "label", *[f"{c}_{i}" for i in range(1, top_k + 1) for c in ("class", "p")]]
    header += ["segment_top1", "error"]
    with atomic_write(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for p in batch.predictions:
            ranked = [x for name, prob in p.top_k for x in (name, f"{prob:.6f}")]
            ranked += [""] * (2 * top_k - len(ranked))
            segments = ";".join(r[0][0] for r in p.segments)
            writer.writerow([p.video, batch.labels.get(p.video, ""), *ranked, segments, ""])
        for video, error in batch.failures:
            writer.writerow([video, batch.labels.get(video, ""), *[""] * (2 * top_k + 1), error])
    return pathlib.Path(path)


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
    for y, value in enumerate(values):
        bars.text(value + 0.01, y, f"{value:.1%}", va="center", fontsize=9)
    fig.suptitle(f"{pathlib.Path(prediction.video).name}: {prediction.model}", fontsize=11)
    return save_figure(fig, out_png, dpi=90)


def _summarize(batch, csv_path):
    """Prints the failures by name, the totals, the speed and (with labels) the accuracy."""
    for video, error in batch.failures:
        print(f"failed: {video}: {error}")
    print(
        f"classified {len(batch.predictions)} videos, failed {len(batch.failures)}, "
        f"{batch.seconds:.1f} s ({batch.videos_per_second:.2f} videos/s); "
        f"predictions: {csv_path}"
    )
    correct, labelled = batch.accuracy()
    if labelled:
        print(f"accuracy: {correct / labelled:.1%} ({correct}/{labelled} labelled videos)")


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
):
    """Classifies videos (default: the sample clip); the library side of `reslstm-classify`.

    One video: prints its report and writes a contact sheet. Several videos, a folder or a
    split file: a progress bar, `predictions.csv`, a summary, the accuracy if classes are known.

    Args:
        videos: a video path, or a list of video paths, folders and split files; None
            for `sample_video_path()`.
        model: a zoo entry name, a `.keras` head, a model from `zoo.load` or a `Classifier`.
        top_k: int, ranked classes to report.
        num_segments: int, segments to cut each video into (default: the entry's).
        sheet: one video: the contact-sheet PNG (default `<video stem>_<entry name>.png`).
        out_csv: several videos: the predictions CSV (default `predictions.csv`).
        classes: a class list file, for a model without a zoo entry.
        flow_method: 'tvl1' or 'farneback' for a two-stream head (default: the entry's).
        data_dir: the folder split-file paths are relative to (default: the file's own).

    Returns:
        The `VideoPrediction` of one video, or the `BatchPrediction` of several.
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
    given = {"num_segments": num_segments, "flow_method": flow_method}
    given = {name: value for name, value in given.items() if value is not None}
    classifier = load_classifier(model, classes, spec=given or None)  # a run refuses changes
    predictor = VideoPredictor(classifier, num_segments, top_k, flow_method=flow_method)
    if single:
        prediction = predict_video(predictor, paths[0])
        print(prediction.format())
        name = f"{pathlib.Path(paths[0]).stem}_{predictor.classifier.name}.png"
        contact_sheet(prediction, sheet or name)
        print(f"contact sheet: {sheet or name}")
        return prediction
    batch = predict_videos(predictor, paths, labels=labels)
    csv_path = write_predictions(batch, out_csv or "predictions.csv", predictor.top_k)
    _summarize(batch, csv_path)
    if not batch.predictions:
        raise ValueError(
            f"none of the {len(paths)} videos could be read; see {csv_path} for each reason"
        )
    return batch
