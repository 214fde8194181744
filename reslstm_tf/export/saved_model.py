"""SavedModel export for TF Serving: a features signature, a streaming step and raw video.

``serve_video`` samples, resizes and crops exactly as extraction does (`video_to_segments`),
so a served video gets the features its feature cache would hold.
"""

import os
import pathlib
import shutil

import keras
import tensorflow as tf

from reslstm_tf.data.sampling import eval_indices_tf, step_segment_map
from reslstm_tf.data.video import default_short_side, transform_frames_tf


def _top_k_outputs(logits, class_names, top_k):
    logits = tf.cast(logits, tf.float32)
    probabilities = tf.nn.softmax(logits, axis=-1)
    top = tf.math.top_k(probabilities, k=top_k)
    names = tf.gather(tf.constant(class_names), top.indices)
    return {
        "logits": logits,
        "probabilities": probabilities,
        "top_k_indices": top.indices,
        "top_k_probabilities": top.values,
        "top_k_classes": names,
    }


def video_to_segments(
    frames, num_segments, segment_len, frame_size, *, short_side=None, short="overlap"
):
    """Turns uint8 frames (B, N, H, W, 3) into float segments (B, K, L, S, S, 3) in [-1, 1].

    The same segments extraction feeds the backbone (`reslstm_tf.data.pipeline.load_clip`,
    eval mode): the frames of `reslstm_tf.data.sampling.sample_segments` for N frames, their
    shorter side resized to `short_side` and centre-cropped to `frame_size`
    (`reslstm_tf.data.video.transform_frames_tf` says where the pixels may differ by one
    grey level), scaled to [-1, 1]. Only TensorFlow ops: the exported graph runs without
    reslstm_tf.

    Args:
        frames: uint8 tensor (B, N, H, W, 3), N >= 1.
        num_segments: K_v.
        segment_len: L, frames per segment.
        frame_size: S, the side of the square crop.
        short_side: the resize target of the shorter side (default S * 256 / 224, as
            extraction).
        short: the short-video policy of `sample_segments` ('overlap', as the zoo's feature
            caches were made).

    Returns:
        float32 tensor (B, K, L, S, S, 3).
    """
    short_side = max(short_side or default_short_side(frame_size), frame_size)
    shape = tf.shape(frames)
    batch, count = shape[0], shape[1]
    indices = eval_indices_tf(count, num_segments, segment_len, short=short)
    picked = tf.gather(frames, tf.reshape(indices, [-1]), axis=1)
    flat = tf.reshape(picked, tf.concat([[-1], shape[2:]], axis=0))
    segments = transform_frames_tf(flat, short_side=short_side, crop_size=frame_size)
    return tf.reshape(segments, [batch, num_segments, segment_len, frame_size, frame_size, 3])


def export_saved_model(
    model,
    export_dir,
    class_names,
    top_k=5,
    backbone=None,
    segment_len=16,
    frame_size=224,
    overwrite=False,
    *,
    num_segments=None,
    short_side=None,
    short="overlap",
):
    """Writes `model` as a SavedModel that TF Serving runs with no reslstm_tf code.

    Signatures:
        serving_default(features float32 (B, T, d_f)) -> logits, probabilities,
            top_k_indices, top_k_probabilities, top_k_classes (strings).
        serve_step(features float32 (B, d_f), states float32 (B, L, 2, H)) ->
            logits, probabilities, states: streaming recognition, one segment per
            request; start from zero states and send back the returned ones.
        serve_video(frames uint8 (B, N, H, W, 3)), only with `backbone`: the K_v
            segments extraction would cut from the N frames (`video_to_segments`),
            embedded by `backbone` ((n, L, S, S, 3) -> (n, d_f)), read at the T steps of
            `step_segment_map(T, K_v)` and classified; same outputs.

    Any batch size works. The export traces the generic LSTM kernels, so a model
    trained on GPU with cuDNN kernels serves on CPU.

    Args:
        model: a one-stream Keras model from `build_single_stream` (or the zoo).
        export_dir: str or path; must not exist unless `overwrite=True`.
        class_names: list of str, in logit order.
        top_k: int, how many ranked classes to return. Defaults to 5.
        backbone: optional Keras model mapping segments to features.
        segment_len: frames per segment of the backbone's spec. Defaults to 16.
        frame_size: crop side of the backbone's spec. Defaults to 224.
        overwrite: bool, replace an existing `export_dir`.
        num_segments: K_v, segments per video (default: the model's T).
        short_side: resize target of the shorter side (default frame_size * 256 / 224).
        short: short-video policy of the sampler. Defaults to 'overlap'.

    Returns:
        The export directory as a `pathlib.Path`.
    """
    export_dir = pathlib.Path(export_dir)
    if export_dir.exists() and not overwrite:
        raise FileExistsError(
            f"export directory {export_dir} already exists; choose another or pass overwrite=True"
        )
    class_names, num_steps, feature_dim = _check_exportable(model, class_names, top_k)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def classify_features(features):
        return _top_k_outputs(model(features, training=False), class_names, top_k)

    archive.add_endpoint(
        "serving_default",
        classify_features,
        input_signature=[tf.TensorSpec((None, num_steps, feature_dim), tf.float32, "features")],
    )
    from reslstm_tf.streaming import StreamingClassifier

    stream = StreamingClassifier(model)
    archive.add_endpoint(
        "serve_step",
        lambda features, states: stream.tf_function()(features, states),
        input_signature=[
            tf.TensorSpec((None, feature_dim), tf.float32, "features"),
            tf.TensorSpec((None, stream.num_layers, 2, stream.units), tf.float32, "states"),
        ],
    )
    if backbone is not None:
        spec = dict(
            num_segments=num_segments or num_steps,
            segment_len=segment_len,
            frame_size=frame_size,
            short_side=short_side,
            short=short,
        )
        _add_video_endpoint(archive, model, backbone, spec, class_names, top_k)
    _write_out(archive, export_dir)
    return export_dir


def _check_exportable(model, class_names, top_k):
    """Returns (class names as str, T, d_f); raises ValueError for what cannot be exported."""
    if isinstance(model.input, dict):
        raise ValueError(
            "export_saved_model takes a one-stream model (input 'features'); two-stream "
            f"models are not yet exportable. Received inputs: {sorted(model.input)}"
        )
    _, num_steps, feature_dim = model.input_shape
    if num_steps is None:
        raise ValueError("export needs a model with a fixed number of steps T (num_steps)")
    class_names = [str(c) for c in class_names]
    num_classes = model.output_shape[-1]
    if len(class_names) != num_classes:
        raise ValueError(
            f"class_names has {len(class_names)} names but the model has {num_classes} outputs"
        )
    if not 1 <= top_k <= num_classes:
        raise ValueError(f"top_k must be in [1, {num_classes}]. Received: top_k={top_k}")
    return class_names, num_steps, feature_dim


def _add_video_endpoint(archive, model, backbone, spec, class_names, top_k):
    """Adds `serve_video`: uint8 frames -> segments -> backbone -> the T steps -> the head."""
    archive.track(backbone)
    _, num_steps, feature_dim = model.input_shape
    step_map = tf.constant(step_segment_map(num_steps, spec["num_segments"]), tf.int32)

    def classify_video(frames):
        segments = video_to_segments(frames, **spec)
        batch = tf.shape(segments)[0]
        flat = tf.reshape(segments, tf.concat([[-1], tf.shape(segments)[2:]], axis=0))
        features = tf.cast(backbone(flat, training=False), tf.float32)
        features = tf.reshape(features, [batch, spec["num_segments"], feature_dim])
        logits = model(tf.gather(features, step_map, axis=1), training=False)
        return _top_k_outputs(logits, class_names, top_k)

    archive.add_endpoint(
        "serve_video",
        classify_video,
        input_signature=[tf.TensorSpec((None, None, None, None, 3), tf.uint8, "frames")],
    )


def _write_out(archive, export_dir):
    """Writes the archive beside `export_dir`, then moves it into place."""
    tmp_dir = export_dir.with_name(f".{export_dir.name}.partial")
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    archive.write_out(str(tmp_dir), verbose=False)
    if export_dir.exists():
        shutil.rmtree(export_dir)
    os.replace(tmp_dir, export_dir)


def export_model(
    model_name_or_path, export_dir, classes=None, top_k=5, video_signature=True, overwrite=False
):
    """Exports a zoo entry or a `.keras` head as a SavedModel; returns the export directory.

    With `video_signature`, ``serve_video`` runs the entry's backbone with its feature spec
    (segments, segment length, frame size, resize target, short-video policy), so it
    computes the features the entry was trained on; a `.keras` head gets I3D with the
    default spec (16-frame segments, 224 crops of a 256 short side, 'overlap').

    Args:
        model_name_or_path: a zoo entry name or a `.keras` model file.
        export_dir: the SavedModel directory (must not exist unless `overwrite`).
        classes: a class list file (one name per line); default the zoo entry's. Needed
            for a `.keras` file.
        top_k: ranked classes returned (at most the number of classes). Defaults to 5.
        video_signature: also export ``serve_video``. Defaults to True.
        overwrite: replace an existing `export_dir`.

    Returns:
        The export directory as a `pathlib.Path`.
    """
    from reslstm_tf import zoo
    from reslstm_tf.models import load_model

    if str(model_name_or_path).endswith(".keras"):
        model = load_model(model_name_or_path)
        if classes is None:
            raise ValueError("--classes is needed when exporting a .keras file")
    else:
        model = zoo.load(model_name_or_path)
    class_names = zoo.read_class_names(classes) if classes else zoo.class_names(model_name_or_path)
    top_k = min(top_k, len(class_names))  # The default 5 on a 2-class model means all.
    backbone, spec = None, {}
    if video_signature:
        from reslstm_tf.backbones.extractor import feature_model

        entry = getattr(model, "zoo_entry", None) or {}
        spec = entry.get("features", {}).get("rgb", {})
        backbone = feature_model(spec.get("backbone", "i3d"), "rgb")
    return export_saved_model(
        model,
        export_dir,
        class_names,
        top_k=top_k,
        backbone=backbone,
        segment_len=spec.get("segment_len", 16),
        frame_size=spec.get("frame_size", 224),
        overwrite=overwrite,
        num_segments=spec.get("num_segments"),
        short_side=spec.get("resize_short_side"),
        short=spec.get("short", "overlap"),
    )
