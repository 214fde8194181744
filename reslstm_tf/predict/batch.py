"""Many videos at once: their inputs, the batch's result, its CSV and its report.

`resolve_videos` turns videos, folders and split files into paths and true classes;
`BatchPrediction` holds what `reslstm_tf.predict.predict_videos` returns and says what went
wrong (`check_batch`: a warning naming the failures, an error when no video was read);
`check_output` refuses an output CSV before any video is classified; `video_line` and
`summarize` are what `reslstm-classify` prints.
"""

import csv
import dataclasses
import pathlib
import warnings

from reslstm_tf.data import datasets
from reslstm_tf.files import atomic_write

SPLIT_FILE_SUFFIXES = (".txt", ".lst", ".list")
FIRST_REASONS = 3  # failures named in a warning or an error


class NoVideoReadError(ValueError):
    """No video of a batch could be classified; `.batch` holds each one's reason."""

    def __init__(self, message, batch):
        super().__init__(message)
        self.batch = batch


@dataclasses.dataclass
class BatchPrediction:
    """What `predict_videos` returns.

    Attributes:
        predictions: the `VideoPrediction`s of the videos that could be read, in order.
        failures: (video, error message) of the videos that could not.
        labels: {video: true class name} for the videos whose class is known.
        seconds: wall time of the run.
        class_names: the model's classes; a label outside them is unknown, never scored.
    """

    predictions: list
    failures: list
    labels: dict
    seconds: float
    class_names: list = None

    @property
    def videos_per_second(self):
        """Videos (classified or failed) per second of wall time."""
        return (len(self.predictions) + len(self.failures)) / max(self.seconds, 1e-9)

    def known(self, label):
        """True when `label` is a class the model can predict (any label without classes)."""
        return label is not None and (self.class_names is None or label in self.class_names)

    def unknown_labels(self):
        """Returns {video: label} of the classified videos whose label the model does not have."""
        return {
            p.video: self.labels[p.video]
            for p in self.predictions
            if self.labels.get(p.video) is not None and not self.known(self.labels[p.video])
        }

    def accuracy(self):
        """Returns (top-1 correct, labelled) over the classified videos with a known class.

        A label that is not one of the model's classes is not scored (`unknown_labels`).
        """
        labelled = [p for p in self.predictions if self.known(self.labels.get(p.video))]
        correct = sum(p.top_k[0][0] == self.labels[p.video] for p in labelled)
        return correct, len(labelled)


def first_reasons(failures, count=FIRST_REASONS):
    """Returns '<video>: <reason>; ...' for the first `count` failures (and how many more)."""
    text = "; ".join(f"{video}: {error}" for video, error in failures[:count])
    more = len(failures) - count
    return text + (f"; and {more} more" if more > 0 else "")


def check_batch(batch):
    """Warns when some videos failed; raises `NoVideoReadError` when all of them did."""
    total = len(batch.predictions) + len(batch.failures)
    if batch.failures and not batch.predictions:
        raise NoVideoReadError(
            f"none of the {total} videos could be classified: {first_reasons(batch.failures)}",
            batch,
        )
    if batch.failures:
        warnings.warn(
            f"{len(batch.failures)} of {total} videos could not be classified (see "
            f".failures): {first_reasons(batch.failures)}",
            stacklevel=3,
        )


def _missing_split_videos(split_file, root, listed, data_dir):
    """Raises FileNotFoundError when none of a split file's videos is under `root`.

    `listed` is the split file's `VideoList` (lines whose video is missing may be skipped
    with a problem recorded).
    """
    if any((root / video.path).is_file() for video in listed):
        return
    if not len(listed) and not listed.problems:
        raise datasets.SplitFileError(split_file, "lists no '<Class>/<video>' lines")
    example = f"e.g. {root / listed[0].path}" if len(listed) else str(listed.problems[0])
    hint = (
        f"the folder data_dir={data_dir} gives"
        if data_dir
        else "the split file's own folder; give the videos' root folder with --data_dir (data_dir=)"
    )
    count = len(listed) + len(listed.problems)
    raise FileNotFoundError(
        f"none of the {count} videos of split file {split_file} exists: its paths were "
        f"resolved against {root} ({hint}); {example}"
    )


def resolve_videos(inputs, data_dir=None):
    """Returns ([video paths], {video: class name}) from videos, folders and split files.

    A folder gives its video files (searched recursively), each labelled with the folder
    it sits in when that folder is a direct sub-folder (one folder per class); a split file
    (`.txt`, `<Class>/<video>` lines) gives its videos relative to `data_dir` (default: the
    split file's folder), labelled with their class folder.

    Raises:
        FileNotFoundError: an input does not exist, a folder holds no videos, or none of a
            split file's videos is in the folder its paths are resolved against.
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
            _missing_split_videos(item, root, listed, data_dir)
            videos += [str(root / v.path) for v in listed]
            labels.update({str(root / v.path): v.class_name for v in listed})
        elif not item.exists():
            raise FileNotFoundError(
                f"{item} does not exist: give a video file, a folder of videos or a split file"
            )
        else:
            videos.append(str(item))
    return videos, labels


def check_output(path, overwrite=False):
    """Refuses an output CSV before any video is classified; returns it as a Path.

    Raises:
        ValueError: `path` is a folder.
        FileExistsError: `path` exists and `overwrite` is False.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        raise ValueError(
            f"the predictions CSV {path} is a folder; give a file path, e.g. "
            f"--out={path / 'predictions.csv'}"
        )
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"the predictions CSV {path} exists; pass --overwrite (overwrite=True) to replace "
            "it, or give another file with --out"
        )
    return path


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


def video_line(video, prediction, error, label=None, class_names=None):
    """One video's line: its top-1 and probability, and its true class when known."""
    if error is not None:
        return f"{video}: failed: {error}"
    name, p = prediction.top_k[0]
    line = f"{video}: {name} {p:.1%}"
    if label is None:
        return line
    if class_names is not None and label not in class_names:
        return f"{line} (true: {label}, not a class of the model)"
    return f"{line} (true: {label}, {'right' if name == label else 'wrong'})"


def summarize(batch, csv_path):
    """Prints the totals, the speed, the labels the model lacks and (with labels) the accuracy."""
    print(
        f"classified {len(batch.predictions)} videos, failed {len(batch.failures)}, "
        f"{batch.seconds:.1f} s ({batch.videos_per_second:.2f} videos/s); "
        f"predictions: {csv_path}"
    )
    unknown = batch.unknown_labels()
    if unknown:
        names = ", ".join(sorted(set(unknown.values())))
        print(
            f"unknown classes: {len(unknown)} videos are labelled with classes the model does "
            f"not have ({names}): not scored"
        )
    correct, labelled = batch.accuracy()
    if labelled:
        print(f"accuracy: {correct / labelled:.1%} ({correct}/{labelled} labelled videos)")
