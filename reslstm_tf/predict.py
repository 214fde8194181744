"""Recognise the actions in a video file with a zoo entry: per segment and for the whole video.

`predict_video` is the one way from a video file to ranked actions. The zoo names, builds and
loads models and never imports this module; `reslstm_tf.streaming` builds on it for live
sources. `classify` is the library side of `reslstm-classify`: without a video it plays the
sample clip shipped in the package (`reslstm_tf/samples/cricket.mp4`, DeepMind's Apache-2.0
cricket clip; see `samples/NOTICE`).
"""

import dataclasses
import pathlib

import numpy as np
from tqdm.auto import tqdm

from reslstm_tf import zoo
from reslstm_tf.assets import asset_path
from reslstm_tf.backbones.extractor import SegmentFeatureExtractor
from reslstm_tf.checks import check_positive_int
from reslstm_tf.data import sampling, video
from reslstm_tf.models import StreamingClassifier
from reslstm_tf.plots import pyplot, save_figure

SAMPLE_VIDEO = "cricket.mp4"
DEFAULT_MODEL = "kinetics400_i3d"


@dataclasses.dataclass
class Classifier:
    """A model with what recognition needs from its zoo entry.

    Attributes:
        model: the Keras model, a clip classifier (frames -> logits, the
            `kinetics400_i3d` entry) or a Res-LSTM head (segment features -> logits).
        name: the zoo entry's name.
        class_names: the class names in logit order.
        spec: the entry's RGB feature spec: `num_segments`, `segment_len`,
            `frame_size`, `backbone`, ...
    """

    model: object
    name: str
    class_names: list
    spec: dict

    @property
    def takes_frames(self):
        """True for a clip classifier (5D frames input), False for a head on segment features."""
        return len(self.model.input_shape) == 5


def load_classifier(name_or_model):
    """Returns the `Classifier` of a zoo entry name or of a model from `zoo.load`.

    Args:
        name_or_model: a zoo entry name with published weights, a model returned by
            `reslstm_tf.zoo.load` (it carries its entry), or a `Classifier` (returned as is).

    Raises:
        ValueError: for a model without a zoo entry, or a two-stream entry (it needs
            optical flow).
    """
    if isinstance(name_or_model, Classifier):
        return name_or_model
    model = zoo.load(name_or_model) if isinstance(name_or_model, str) else name_or_model
    entry = getattr(model, "zoo_entry", None)
    if entry is None:
        raise ValueError(
            "a zoo entry name or a model from reslstm_tf.zoo.load is needed (its entry gives "
            f"the feature spec and class names). Received: {type(name_or_model).__name__}"
        )
    if entry["architecture"]["kind"] == "two_stream":
        raise ValueError(
            f"only RGB entries classify videos; {entry['name']!r} needs optical flow features too"
        )
    names = zoo.class_names(entry["name"])
    return Classifier(model, entry["name"], names, dict(entry["features"]["rgb"]))


@dataclasses.dataclass
class VideoPrediction:
    """What `predict_video` returns.

    Attributes:
        video: the video path.
        model: the zoo entry (or model) name.
        top_k: ranked (class name, probability) pairs for the whole video.
        segments: per segment, ranked (class name, probability) pairs. For a
            backbone entry each segment is classified on its own; for a Res-LSTM
            head, segment t gives the streaming prediction after segments 1..t.
        frame_indices: (K, L) decoded frame indices of the segments.
        thumbnails: (K, S, S, 3) uint8, the middle frame of each segment.
        fps: the video's frame rate.
    """

    video: str
    model: str
    top_k: list
    segments: list
    frame_indices: np.ndarray
    thumbnails: np.ndarray
    fps: float

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


def _softmax(logits):
    logits = np.asarray(logits, np.float64)
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _decode_segments(video_path, spec, num_segments):
    """Returns (sample, info, uint8 segments (K, L, S, S, 3)) decoded from the video."""
    info = video.probe(video_path)
    sample = sampling.sample_segments(
        max(info.frame_count, 1), num_segments, spec["segment_len"], mode="eval", short="overlap"
    )
    frames = video.read_frames(video_path, sample.indices.reshape(-1), on_missing="last")
    size = spec["frame_size"]
    frames = video.transform_frames(
        frames, short_side=spec.get("resize_short_side", size), crop_size=size, as_float=False
    )
    return sample, info, frames.reshape(num_segments, spec["segment_len"], size, size, 3)


def _segment_scorer(classifier):
    """Returns score(segment (L, S, S, 3) in [-1, 1]) -> class probabilities.

    A clip classifier scores each segment on its own; a Res-LSTM head gets the segment's
    backbone feature and carries its LSTM states, so each call returns the prediction after
    all the segments so far.
    """
    model = classifier.model
    if classifier.takes_frames:
        return lambda segment: _softmax(model.predict_on_batch(segment[None])[0])
    extractor = SegmentFeatureExtractor(backbone=classifier.spec["backbone"], modality="rgb")
    stream = StreamingClassifier(model)
    states = stream.initial_states(1)

    def score(segment):
        nonlocal states
        logits, states = stream.step_logits(extractor(segment[None]), states)
        return _softmax(np.asarray(logits)[0])

    return score


def predict_video(name_or_model, video_path, top_k=5, num_segments=None, progress=True):
    """Recognises the actions in a video with a zoo entry; see `VideoPrediction`.

    Args:
        name_or_model: a zoo entry name, a model returned by `zoo.load`, or a
            `Classifier` from `load_classifier` (to reuse one backbone for many videos).
        video_path: path of a video file OpenCV can decode.
        top_k: int, how many ranked classes to return. Defaults to 5.
        num_segments: int, segments to cut the video into; defaults to the
            entry's feature spec (its T for a Res-LSTM head).
        progress: bool, show a progress bar with rate and ETA.

    Returns:
        A `VideoPrediction`.

    Example:

    >>> predict_video("kinetics400_i3d", sample_video_path()).top_k[0]
    ('playing cricket', 0.97...)
    """
    classifier = load_classifier(name_or_model)
    names, spec = classifier.class_names, classifier.spec
    k = check_positive_int("num_segments", num_segments or spec["num_segments"])
    if top_k < 1:
        raise ValueError(f"top_k must be in [1, {len(names)}]. Received: top_k={top_k}")
    top_k = min(top_k, len(names))  # e.g. the default 5 on a 2-class entry: all classes.
    score = _segment_scorer(classifier)
    sample, info, segments = _decode_segments(video_path, spec, k)
    bar = tqdm(segments, desc="segments", unit="seg", disable=not progress, leave=False)
    probabilities = [score(video.to_float(frames)) for frames in bar]
    # A clip classifier's video score averages its segments; a head's is its state after K.
    whole = np.mean(probabilities, axis=0) if classifier.takes_frames else probabilities[-1]
    return VideoPrediction(
        video=str(video_path),
        model=classifier.name,
        top_k=_ranked(whole, names, top_k),
        segments=[_ranked(p, names, top_k) for p in probabilities],
        frame_indices=sample.indices,
        thumbnails=segments[:, segments.shape[1] // 2],
        fps=float(info.fps or 0.0),
    )


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


def classify(video_path=None, model=DEFAULT_MODEL, top_k=5, num_segments=None, sheet=None):
    """Classifies a video (default: the sample clip), prints the report, writes a contact sheet.

    Args:
        video_path: a video file; None for `sample_video_path()`.
        model: a zoo entry name, a model from `zoo.load` or a `Classifier`.
        top_k: int, ranked classes to report.
        num_segments: int, segments to cut the video into (default: the entry's).
        sheet: the contact-sheet PNG path; default `<video stem>_<entry name>.png`.

    Returns:
        The `VideoPrediction`.
    """
    video_path = pathlib.Path(video_path) if video_path else sample_video_path()
    classifier = load_classifier(model)
    prediction = predict_video(classifier, video_path, top_k=top_k, num_segments=num_segments)
    print(prediction.format())
    sheet = pathlib.Path(sheet or f"{video_path.stem}_{classifier.name}.png")
    contact_sheet(prediction, sheet)
    print(f"contact sheet: {sheet}")
    return prediction
