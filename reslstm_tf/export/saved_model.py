"""SavedModel export for TF Serving: a features signature and a raw-video signature."""

import os
import pathlib

import keras
import tensorflow as tf


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


def video_to_segments(frames, num_segments, segment_len, frame_size):
    """Turns uint8 frames (B, N, H, W, 3) into float segments (B, K, L, S, S, 3) in [-1, 1].

    Frames are resized so the short side is `frame_size` (keeping the aspect ratio),
    centre-cropped to a square, scaled to [-1, 1], and split into `num_segments`
    runs of `segment_len` consecutive frames starting at evenly spaced positions from
    the first frame to the last full window (indices past the end repeat the last
    frame). On videos longer than K_v windows this is close to, not identical with,
    the centred windows of `reslstm_tf.data.sampling` that extraction uses.
    """
    shape = tf.shape(frames)
    batch, count, height, width = shape[0], shape[1], shape[2], shape[3]
    flat = tf.reshape(frames, tf.stack([batch * count, height, width, 3]))
    short = tf.minimum(height, width)
    scale = tf.cast(frame_size, tf.float32) / tf.cast(short, tf.float32)
    new_h = tf.maximum(frame_size, tf.cast(tf.round(tf.cast(height, tf.float32) * scale), tf.int32))
    new_w = tf.maximum(frame_size, tf.cast(tf.round(tf.cast(width, tf.float32) * scale), tf.int32))
    resized = tf.image.resize(tf.cast(flat, tf.float32), tf.stack([new_h, new_w]), antialias=True)
    top = (new_h - frame_size) // 2
    left = (new_w - frame_size) // 2
    cropped = resized[:, top : top + frame_size, left : left + frame_size, :]
    scaled = tf.clip_by_value(cropped / 127.5 - 1.0, -1.0, 1.0)
    video = tf.reshape(scaled, tf.stack([batch, count, frame_size, frame_size, 3]))
    span = tf.maximum(count - segment_len, 0)
    starts = tf.cast(tf.round(tf.linspace(0.0, tf.cast(span, tf.float32), num_segments)), tf.int32)
    indices = tf.minimum(starts[:, None] + tf.range(segment_len)[None, :], count - 1)
    return tf.gather(video, indices, axis=1)


def export_saved_model(
    model,
    export_dir,
    class_names,
    top_k=5,
    backbone=None,
    segment_len=16,
    frame_size=224,
    overwrite=False,
):
    """Writes `model` as a SavedModel that TF Serving runs with no reslstm_tf code.

    Signatures:
        serving_default(features float32 (B, T, d_f)) -> logits, probabilities,
            top_k_indices, top_k_probabilities, top_k_classes (strings).
        serve_step(features float32 (B, d_f), states float32 (B, L, 2, H)) ->
            logits, probabilities, states: streaming recognition, one segment per
            request; start from zero states and send back the returned ones.
        serve_video(frames uint8 (B, N, H, W, 3)), only with `backbone`: frames are
            resized, cropped, scaled, cut into T segments of `segment_len` frames,
            embedded by `backbone` ((n, L, S, S, 3) -> (n, d_f)) and classified;
            same outputs.

    Any batch size works. The export traces the generic LSTM kernels, so a model
    trained on GPU with cuDNN kernels serves on CPU.

    Args:
        model: a one-stream Keras model from `build_single_stream` (or the zoo).
        export_dir: str or path; must not exist unless `overwrite=True`.
        class_names: list of str, in logit order.
        top_k: int, how many ranked classes to return. Defaults to 5.
        backbone: optional Keras model mapping segments to features.
        segment_len, frame_size: ints, the backbone's segment spec.
        overwrite: bool, replace an existing `export_dir`.

    Returns:
        The export directory as a `pathlib.Path`.
    """
    export_dir = pathlib.Path(export_dir)
    if export_dir.exists() and not overwrite:
        raise FileExistsError(
            f"export directory {export_dir} already exists; choose another or pass overwrite=True"
        )
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
        archive.track(backbone)

        def classify_video(frames):
            segments = video_to_segments(frames, num_steps, segment_len, frame_size)
            batch = tf.shape(segments)[0]
            flat = tf.reshape(segments, tf.concat([[-1], tf.shape(segments)[2:]], axis=0))
            features = tf.reshape(backbone(flat, training=False), [batch, num_steps, feature_dim])
            return _top_k_outputs(model(features, training=False), class_names, top_k)

        archive.add_endpoint(
            "serve_video",
            classify_video,
            input_signature=[tf.TensorSpec((None, None, None, None, 3), tf.uint8, "frames")],
        )
    tmp_dir = export_dir.with_name(f".{export_dir.name}.partial")
    if tmp_dir.exists():
        import shutil

        shutil.rmtree(tmp_dir)
    archive.write_out(str(tmp_dir), verbose=False)
    if export_dir.exists():
        import shutil

        shutil.rmtree(export_dir)
    os.replace(tmp_dir, export_dir)
    return export_dir
