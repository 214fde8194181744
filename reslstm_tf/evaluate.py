"""Evaluation: top-1/top-5/mean class accuracy, multi-clip averaging, CSV, JSON and figures.

`evaluate()` runs a classifier over an unbatched `(features, label)` dataset. With
`num_clips=N > 1` every element holds N clips of one video, `(N, T, d_f)` (or a
dict of such for two streams); the softmax probabilities of the clips are averaged,
the usual test-time augmentation. It writes into `out_dir`:

- `metrics.json`: top1, top5 (only with more than 5 classes, where it says something),
  mean_class_accuracy, num_videos, num_clips, num_classes;
- `per_class_accuracy.csv`: class_index, class_name, num_videos, num_correct, accuracy;
- `confusion_matrix.png`: row-normalised confusion matrix (rows: true classes);
- `predictions.npz`: the averaged probabilities, the labels and, given `video_ids`, the
  video names (`videos`);
- `top5_predictions.png`: for chosen videos, frames beside a bar chart of the
  five most probable classes (only when videos are chosen).

The file names are those of `reslstm_tf.runs.EvalDir`.

Mean class accuracy is the mean of the per-class accuracies over the classes that
have at least one video in the evaluated set.

`run_evaluation` evaluates a `reslstm-train` run: class ids of the evaluated features are
mapped to the run's by class name (a cache of a few classes has its own ids), and features
extracted with other settings than the run's training features are refused
(`reslstm_tf.runs.check_feature_spec`).
"""

import csv
import dataclasses
import pathlib

import numpy as np

from reslstm_tf import runs
from reslstm_tf.checks import check_finite_weights, check_positive_int
from reslstm_tf.files import atomic_write
from reslstm_tf.plots import plot_confusion_matrix, pyplot, save_figure


class EvaluationInputError(ValueError):
    """Evaluation input (model, data, class names, options) that cannot be used."""


# ---------------------------------------------------------------------------------- metrics


def _check_probs_labels(probs, labels):
    probs = np.asarray(probs, dtype="float64")
    labels = np.asarray(labels)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise EvaluationInputError(
            f"probabilities must be (N, C) and labels (N,). Received {probs.shape} and "
            f"{labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise EvaluationInputError(
            f"labels must be in [0, {probs.shape[1]}). Received labels in "
            f"[{labels.min()}, {labels.max()}]"
        )
    return probs, labels.astype("int64")


def top_k_accuracy(probs, labels, k=1):
    """Returns the fraction of videos whose true class is among the k most probable.

    Args:
        probs: float `(N, C)` scores or probabilities.
        labels: int `(N,)` true classes.
        k: int, 1 <= k; values above C count every video as correct.

    Returns:
        A float in [0, 1].
    """
    probs, labels = _check_probs_labels(probs, labels)
    if not isinstance(k, int) or k < 1:
        raise EvaluationInputError(f"k must be a positive integer. Received: k={k!r}")
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def confusion_matrix(labels, predictions, num_classes):
    """Returns the `(C, C)` int64 matrix whose [i, j] counts videos of class i predicted j."""
    matrix = np.zeros((num_classes, num_classes), dtype="int64")
    np.add.at(matrix, (np.asarray(labels, "int64"), np.asarray(predictions, "int64")), 1)
    return matrix


def per_class_accuracy(labels, predictions, num_classes):
    """Returns `(accuracy, counts)`: per-class top-1 accuracy (NaN for absent classes), videos."""
    matrix = confusion_matrix(labels, predictions, num_classes)
    counts = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(counts > 0, np.diag(matrix) / np.maximum(counts, 1), np.nan)
    return accuracy, counts


def mean_class_accuracy(labels, predictions, num_classes):
    """Returns the mean of the per-class accuracies over the classes present in `labels`."""
    accuracy, counts = per_class_accuracy(labels, predictions, num_classes)
    return float(np.mean(accuracy[counts > 0]))


def compute_metrics(probs, labels):
    """Returns {"top1", "top5", "mean_class_accuracy", "num_videos", "num_classes"}.

    "top5" only with more than 5 classes (with C <= 5 it is always 1).
    """
    probs, labels = _check_probs_labels(probs, labels)
    predictions = np.argmax(probs, axis=1)
    metrics = {"top1": top_k_accuracy(probs, labels, 1)}
    if probs.shape[1] > 5:
        metrics["top5"] = top_k_accuracy(probs, labels, 5)
    metrics.update(
        mean_class_accuracy=mean_class_accuracy(labels, predictions, probs.shape[1]),
        num_videos=int(labels.shape[0]),
        num_classes=int(probs.shape[1]),
    )
    return metrics


def softmax(logits):
    """Returns the softmax of float `(..., C)` logits along the last axis, in float64."""
    logits = np.asarray(logits, dtype="float64")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------------------------ prediction


def _clip_rank(spec_shape, num_clips, name):
    rank = spec_shape.rank
    if num_clips == 1 and rank == 2:
        return False
    if rank == 3:
        clips = spec_shape[0]
        if clips is not None and clips != num_clips:
            raise EvaluationInputError(
                f"features {name!r} hold {clips} clips per video but num_clips={num_clips}"
            )
        return True
    allowed = "(T, d_f) or (num_clips, T, d_f)" if num_clips == 1 else "(num_clips, T, d_f)"
    raise EvaluationInputError(
        f"features {name!r} of each video must have shape {allowed} with num_clips="
        f"{num_clips}. Received shape {spec_shape}"
    )


def predict_probabilities(model, dataset, num_clips=1, batch_size=32, progress=True):
    """Returns `(probs, labels)`: clip-averaged softmax probabilities `(N, C)` and labels.

    Args:
        model: a `keras.Model` with logits out.
        dataset: unbatched `tf.data.Dataset` of `(features, label)`; features
            `(T, d_f)` or `(num_clips, T, d_f)` (or a dict of such for two streams).
        num_clips: int, clips per video.
        batch_size: int, videos per forward pass.
        progress: bool, show a tqdm progress bar.

    Returns:
        float64 `(N, C)` probabilities and int64 `(N,)` labels.
    """
    import tensorflow as tf
    from tqdm.auto import tqdm

    check_positive_int("num_clips", num_clips, error=EvaluationInputError)
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise EvaluationInputError(
            f"the dataset must yield (features, label) pairs. Received element spec {spec}"
        )
    feature_spec = spec[0] if isinstance(spec[0], dict) else {"features": spec[0]}
    has_clips = {name: _clip_rank(s.shape, num_clips, name) for name, s in feature_spec.items()}
    cardinality = int(dataset.cardinality())
    total = cardinality if cardinality >= 0 else None

    def flatten(x):
        # (B, clips, T, d) -> (B * clips, T, d); (B, T, d) stays.
        return tf.reshape(x, tf.concat([[-1], tf.shape(x)[-2:]], axis=0))

    probs, labels = [], []
    bar = tqdm(total=total, unit="video", desc="evaluate", disable=not progress)
    try:
        for features, label in dataset.batch(batch_size):
            if isinstance(features, dict):
                inputs = {k: flatten(v) if has_clips[k] else v for k, v in features.items()}
            else:
                inputs = flatten(features) if has_clips["features"] else features
            logits = np.asarray(model.predict_on_batch(inputs))
            clips = num_clips if any(has_clips.values()) else 1
            video_probs = softmax(logits).reshape(-1, clips, logits.shape[-1]).mean(axis=1)
            probs.append(video_probs)
            labels.append(np.asarray(label, dtype="int64").reshape(-1))
            bar.update(len(video_probs))
    finally:
        bar.close()
    if not probs:
        raise EvaluationInputError("the evaluation dataset is empty")
    return np.concatenate(probs), np.concatenate(labels)


# --------------------------------------------------------------------------------- outputs


def write_per_class_csv(path, labels, predictions, class_names):
    """Writes per-class accuracy as CSV: class_index, class_name, num_videos, num_correct, accuracy.

    Classes without videos have an empty accuracy.
    """
    num_classes = len(class_names)
    matrix = confusion_matrix(labels, predictions, num_classes)
    counts = matrix.sum(axis=1)
    with atomic_write(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class_index", "class_name", "num_videos", "num_correct", "accuracy"])
        for index, name in enumerate(class_names):
            correct = int(matrix[index, index])
            accuracy = f"{correct / counts[index]:.6f}" if counts[index] else ""
            writer.writerow([index, name, int(counts[index]), correct, accuracy])


def _frame_strip(frames, max_frames=4):
    """Returns frames (K, H, W, 3), (H, W, 3) or (H, W) as one float RGB image in [0, 1]."""
    frames = np.asarray(frames)
    if frames.ndim == 2 or (frames.ndim == 3 and frames.shape[-1] in (1, 3)):
        frames = frames[None]
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise EvaluationInputError(
            "frames must be (K, H, W, 3), (H, W, 3) or (H, W) arrays. "
            f"Received shape {frames.shape}"
        )
    if frames.shape[0] > max_frames:
        frames = frames[np.linspace(0, frames.shape[0] - 1, max_frames).round().astype(int)]
    frames = frames.astype("float64")
    if frames.max(initial=0.0) > 1.0:
        frames = frames / 255.0
    frames = np.clip(frames, 0.0, 1.0)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return np.concatenate(list(frames), axis=1)


def plot_top5(probs, class_names, path, frames=None, labels=None, titles=None):
    """Saves a figure with one row per video: frames beside a bar chart of its top-5 classes.

    Args:
        probs: float `(V, C)` probabilities of the V chosen videos.
        class_names: the C class names.
        path: output PNG file.
        frames: optional list of V frame arrays ((K, H, W, 3), (H, W, 3) or (H, W);
            uint8 or floats in [0, 1]) or None entries.
        labels: optional `(V,)` true classes; their bars are drawn green, others blue.
        titles: optional V row titles (e.g. video ids).
    """
    plt = pyplot()
    probs = np.atleast_2d(np.asarray(probs, dtype="float64"))
    count = probs.shape[0]
    frames = list(frames) if frames is not None else [None] * count
    if len(frames) != count:
        raise EvaluationInputError(
            f"got {len(frames)} frame arrays for {count} videos; pass one (or None) per video"
        )
    fig, axes = plt.subplots(
        count, 2, figsize=(11, 2.6 * count), squeeze=False, gridspec_kw={"width_ratios": [3, 2]}
    )
    for row in range(count):
        image_ax, bar_ax = axes[row]
        image_ax.axis("off")
        if frames[row] is not None:
            image_ax.imshow(_frame_strip(frames[row]))
        else:
            image_ax.text(0.5, 0.5, "no frames", ha="center", va="center")
        title = titles[row] if titles is not None else f"video {row}"
        if labels is not None:
            title += f" (true: {class_names[int(labels[row])]})"
        image_ax.set_title(title, fontsize=9)
        top = np.argsort(-probs[row], kind="stable")[:5]
        colours = [
            "tab:green" if labels is not None and c == int(labels[row]) else "tab:blue" for c in top
        ]
        bar_ax.barh(range(len(top))[::-1], probs[row, top], color=colours)
        bar_ax.set_yticks(range(len(top))[::-1])
        bar_ax.set_yticklabels([class_names[c] for c in top], fontsize=8)
        bar_ax.set_xlim(0.0, 1.0)
        bar_ax.set_xlabel("probability", fontsize=8)
    save_figure(fig, path)


def evaluate(
    model,
    dataset,
    class_names,
    out_dir,
    num_clips=1,
    batch_size=32,
    top5_videos=None,
    frames=None,
    progress=True,
    video_ids=None,
):
    """Evaluates a classifier: metrics JSON, per-class CSV, confusion matrix and top-5 figure.

    Args:
        model: a `keras.Model` with logits out (C classes).
        dataset: unbatched `tf.data.Dataset` of `(features, label)`; features
            `(T, d_f)`, or `(num_clips, T, d_f)` per video when `num_clips > 1`
            (dicts of such for two-stream models).
        class_names: list of the C class names, or None for "class_<i>".
        out_dir: output folder (created).
        num_clips: int, clips per video; their probabilities are averaged.
        batch_size: int, videos per forward pass.
        top5_videos: optional indices (dataset order) of videos for the top-5 figure;
            defaults to the keys of `frames`.
        frames: optional {video index: frames array} shown beside the bar charts.
        progress: bool, show a progress bar.
        video_ids: optional names of the videos (dataset order), kept in predictions.npz.

    Returns:
        The metrics dict also written to `metrics.json`.

    Raises:
        EvaluationInputError: mismatched class names, labels out of range, bad shapes.
    """
    num_classes = int(model.output_shape[-1])
    if class_names is None:
        class_names = [f"class_{i}" for i in range(num_classes)]
    class_names = [str(n) for n in class_names]
    if len(class_names) != num_classes:
        raise EvaluationInputError(
            f"got {len(class_names)} class names but the model predicts {num_classes} classes"
        )
    check_positive_int("batch_size", batch_size, error=EvaluationInputError)
    frames = dict(frames or {})
    chosen = list(top5_videos) if top5_videos is not None else sorted(frames)
    outputs = runs.EvalDir(out_dir)
    try:
        outputs.create()
    except OSError as error:
        raise EvaluationInputError(
            f"out_dir {str(outputs.path)!r} cannot be created ({error.strerror or error})"
        ) from error

    probs, labels = predict_probabilities(model, dataset, num_clips, batch_size, progress)
    if labels.min() < 0 or labels.max() >= num_classes:
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise EvaluationInputError(
            f"the dataset has label {bad} outside the class range [0, {num_classes})"
        )
    bad_videos = [i for i in chosen if not 0 <= int(i) < len(labels)]
    if bad_videos:
        raise EvaluationInputError(
            f"top5_videos {bad_videos} are not video indices in [0, {len(labels)})"
        )
    metrics = compute_metrics(probs, labels)
    metrics["num_clips"] = num_clips
    predictions = np.argmax(probs, axis=1)
    # Videos of several classes all predicted as one: the model collapsed (reslstm-eval warns).
    metrics["predicted_classes"] = int(len(np.unique(predictions)))
    metrics["collapsed"] = bool(metrics["predicted_classes"] == 1 and len(np.unique(labels)) > 1)

    outputs.write_metrics(metrics)
    write_per_class_csv(outputs.per_class_file, labels, predictions, class_names)
    plot_confusion_matrix(
        confusion_matrix(labels, predictions, num_classes), class_names, outputs.confusion_file
    )
    outputs.write_predictions(probs, labels, video_ids)
    if chosen:
        index = np.asarray(chosen, dtype="int64")
        plot_top5(
            probs[index],
            class_names,
            outputs.top5_file,
            frames=[frames.get(int(i)) for i in index],
            labels=labels[index],
            titles=[f"video {int(i)}" for i in index],
        )
    return metrics


# ------------------------------------------------------------------------ trained model runs


def load_trained_model(model_dir, weights=None):
    """Rebuilds the model of a `reslstm-train` run and loads its weights.

    Args:
        model_dir: the run's folder (holds `train_config.json`).
        weights: optional `.weights.h5` file; default the run's `model.keras`,
            else its latest checkpoint.

    Returns:
        `(model, config)`: the `keras.Model` and the run's config dict.
    """
    from reslstm_tf.models import build_model

    run = runs.RunDir(model_dir)
    if not run.config_file.is_file():
        raise EvaluationInputError(
            f"model_dir {str(run.path)!r} has no {runs.CONFIG_FILE}; pass the folder of "
            "a reslstm-train run"
        )
    config = run.config()
    model = build_model(**config["model"])
    try:
        run.load_weights(model, weights)
    except FileNotFoundError as error:
        raise EvaluationInputError(str(error)) from None
    shown = f"the weights {weights}" if weights else f"the weights of model_dir {str(run.path)!r}"
    check_finite_weights(model, shown, EvaluationInputError)
    return model, config


@dataclasses.dataclass
class EvalConfig:
    """One `reslstm-eval` run (see `run_evaluation` for each field)."""

    model_dir: str
    features_npz: str | None = None
    features_dir: str | None = None
    flow_features_dir: str | None = None
    split: str = "test"
    out_dir: str | None = None
    weights: str | None = None
    num_clips: int = 1
    batch_size: int = 32
    class_names_file: str | None = None
    top5_videos: list | None = None
    frames_npz: str | None = None
    progress: bool = True


def _read_class_names(path):
    path = pathlib.Path(path)
    if not path.is_file():
        raise EvaluationInputError(f"class_names_file {str(path)!r} does not exist")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _read_frames(frames_npz):
    """Returns {video index: frames} of a frames `.npz` (arrays named by video index)."""
    if not frames_npz:
        return {}
    with np.load(frames_npz, allow_pickle=False) as data:
        bad = [key for key in data.files if not key.isdigit()]
        if bad:
            raise EvaluationInputError(
                f"frames_npz {str(frames_npz)!r} has arrays {bad}; name each array by its "
                "video index, e.g. '0' or '12'"
            )
        return {int(key): data[key] for key in data.files}


def _feature_inputs(config, run_config):
    """Returns `(features_dir, flow_features_dir, allow_single)` the evaluation reads."""
    if config.features_npz is not None or config.features_dir is not None:
        return config.features_dir, config.flow_features_dir, True
    features_dir = run_config.get("features_dir")
    if features_dir is None:
        raise EvaluationInputError(
            f"no evaluation features given and the run in {str(config.model_dir)!r} was not "
            "trained from a features folder; pass features_npz or features_dir"
        )
    return features_dir, config.flow_features_dir or run_config.get("flow_features_dir"), False


def check_features_spec(run, features_dir, split, modality, flow_dir=None, allow_single=True):
    """Refuses caches extracted with other settings than the run's training features.

    Raises:
        FeatureSpecError: naming each differing field (segment_len, short, precision, ...).
    """
    from reslstm_tf.data import feature_sets

    expected = runs.RunDir(run).feature_spec()
    if not expected or features_dir is None:
        return
    metadata = feature_sets.split_metadata(features_dir, split, modality, flow_dir, allow_single)
    for stream, values in metadata.items():
        if stream in expected:
            source = f"the {stream} features of {str(features_dir)!r} (split {split!r})"
            runs.check_feature_spec(expected[stream], runs.feature_spec(values), source)


def _relabel(dataset, mapping):
    """Maps the dataset's labels through `mapping` (data class id -> run class id)."""
    import tensorflow as tf

    table = tf.constant(mapping, tf.int64)
    return dataset.map(lambda x, y: (x, tf.cast(tf.gather(table, y), y.dtype)))


def _evaluation_features(config, run_config, num_steps):
    """Returns `(dataset, class names, video ids or None)`, labels in the run's class ids."""
    from reslstm_tf.data import feature_sets

    modality = run_config["model"]["modality"]
    features_dir, flow_dir, allow_single = _feature_inputs(config, run_config)
    if config.features_npz is None:
        check_features_spec(
            config.model_dir, features_dir, config.split, modality, flow_dir, allow_single
        )
    where = (features_dir, config.split, modality, flow_dir, allow_single)
    dataset, data_names = feature_sets.load_features(
        config.features_npz, *where[:3], num_steps, *where[3:]
    )
    ids = None if config.features_npz else feature_sets.split_video_ids(*where)
    source = f"the features of {str(config.features_npz or features_dir)!r}"
    mapping = runs.class_id_map(
        run_config.get("class_names"), data_names, source, error=EvaluationInputError
    )
    if mapping is not None:
        dataset = _relabel(dataset, mapping)
        data_names = run_config["class_names"]
    return dataset, data_names, ids


def run_evaluation(config=None, **kwargs):
    """Evaluates a `reslstm-train` run on features; the library behind `reslstm-eval`.

    Args:
        config: an `EvalConfig`, or None and its fields as keyword arguments:
            model_dir: the run's folder.
            features_npz, features_dir, flow_features_dir, split: the evaluation features
                (see `reslstm_tf.data.feature_sets.load_features`). Without any, the
                run's own features folder(s) are used, at `split`, which must then be a
                split folder (`<dir>/<split>[/<modality>]`), never the training cache.
            out_dir: output folder; default `<model_dir>/eval_<split>`.
            weights: optional `.weights.h5` to evaluate instead of the run's final weights.
            num_clips: int, clips per video.
            batch_size: int, videos per forward pass.
            class_names_file: optional text file, one class name per line.
            top5_videos: optional video indices for the top-5 figure.
            frames_npz: optional `.npz` whose arrays, named by video index ("0", "12"),
                are the frames shown in the top-5 figure.
            progress: bool, show a progress bar.

    Returns:
        The metrics dict.

    Raises:
        EvaluationInputError: a bad run folder, weights, class names or frames, or
            features of classes the run was not trained on.
        FeatureInputError: features that cannot be read.
        FeatureSpecError: features extracted with other settings than the run's.
    """
    config = config if config is not None else EvalConfig(**kwargs)
    model, run_config = load_trained_model(config.model_dir, config.weights)
    num_steps = model.inputs[0].shape[1]
    dataset, data_names, video_ids = _evaluation_features(config, run_config, num_steps)
    if config.class_names_file:
        class_names = _read_class_names(config.class_names_file)
    else:
        class_names = run_config.get("class_names") or data_names
    out_dir = config.out_dir or runs.RunDir(config.model_dir).eval_dir(config.split).path
    return evaluate(
        model,
        dataset,
        class_names,
        out_dir,
        num_clips=config.num_clips,
        batch_size=config.batch_size,
        top5_videos=config.top5_videos,
        frames=_read_frames(config.frames_npz),
        progress=config.progress,
        video_ids=video_ids,
    )
