"""SavedModel export for TF Serving: a features signature, a streaming step and raw video.

One-stream and two-stream heads export alike (the step graphs of
`reslstm_tf.export.signatures`). ``serve_video`` (one-stream heads) samples, resizes and
crops exactly as extraction does (`video_to_segments`), so a served video gets the features
its feature cache would hold.

Without ``overwrite`` the export folder is created exclusively before anything is traced, so
of two exports started into one new folder the second is refused (`FileExistsError`) and the
first one's export stays; a killed export leaves that folder empty (remove it, or pass
``overwrite=True``). Replacing an export (``overwrite=True``) never leaves the folder without
a complete version:
the new one is written beside it, the two are swapped, and the old one is deleted last. The
points the reliability tests kill the export at (``RESLSTM_FAULT``, `reslstm_tf.faults`):
``export_written`` (the new version is complete beside the old, which still serves) and
``export_swapped`` (the new version serves, the old one is not yet deleted).
"""

import contextlib
import ctypes
import os
import pathlib
import shutil

import keras
import tensorflow as tf

from reslstm_tf.clip_spec import ClipSpec, spec_of
from reslstm_tf.data.reader import read_clip_tf
from reslstm_tf.data.sampling import step_segment_map
from reslstm_tf.export import signatures
from reslstm_tf.faults import fault_point


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
    frames, num_segments, segment_len, frame_size, *, short_side=None, short=None
):
    """Turns uint8 frames (B, N, H, W, 3) into float segments (B, K, L, S, S, 3) in [-1, 1].

    `reader.read_clip_tf` for the `ClipSpec` of the arguments (None: the spec's default):
    the segments extraction feeds the backbone, in TensorFlow ops only.
    """
    spec = spec_of(
        num_segments=num_segments,
        segment_len=segment_len,
        frame_size=frame_size,
        resize_short_side=short_side,
        short=short,
    )
    return read_clip_tf(frames, spec)


def export_saved_model(
    model,
    export_dir,
    class_names,
    top_k=5,
    backbone=None,
    segment_len=None,
    frame_size=None,
    overwrite=False,
    *,
    num_segments=None,
    short_side=None,
    short=None,
    clip=None,
):
    """Writes `model` as a SavedModel that TF Serving runs with no reslstm_tf code.

    Signatures:
        serving_default(features float32 (B, T, d_f)) -> logits, probabilities,
            top_k_indices, top_k_probabilities, top_k_classes (strings). A two-stream
            model takes rgb_features and flow_features (B, T, d_f) instead.
        serve_step(features float32 (B, d_f), states float32 (B, L, 2, H)) ->
            logits, probabilities, states: streaming recognition, one segment per
            request; start from zero states and send back the returned ones. A
            two-stream model takes rgb_features and flow_features (B, d_f) and, fused
            late, rgb_states and flow_states (returned under the same names), fused at
            mid level one `states`.
        serve_video(frames uint8 (B, N, H, W, 3)), only with `backbone`: the K_v
            segments extraction would cut from the N frames (`reader.read_clip_tf`),
            embedded by `backbone` ((n, L, S, S, 3) -> (n, d_f)), read at the T steps of
            `step_segment_map(T, K_v)` and classified; same outputs.

    Any batch size works. The export traces the generic LSTM kernels, so a model
    trained on GPU with cuDNN kernels serves on CPU.

    Args:
        model: a Keras head from `build_single_stream` or `build_two_stream` (or the zoo).
        export_dir: str or path; must not exist unless `overwrite=True`.
        class_names: list of str, in logit order.
        top_k: int, how many ranked classes to return. Defaults to 5.
        backbone: optional Keras model mapping segments to features (one-stream heads).
        segment_len: frames per segment, replacing the clip spec's.
        frame_size: crop side, replacing the clip spec's.
        overwrite: bool, replace an existing `export_dir`.
        num_segments: K_v, segments per video (default: the clip spec's, else the model's T).
        short_side: resize target of the shorter side, replacing the clip spec's.
        short: short-video policy of the sampler, replacing the clip spec's.
        clip: the `ClipSpec` videos are cut with for `serve_video` (default `ClipSpec()`
            with K_v the model's T); a zoo entry's is its recorded spec.

    Returns:
        The export directory as a `pathlib.Path`.
    """
    export_dir = pathlib.Path(export_dir)
    fields = dict(segment_len=segment_len, frame_size=frame_size, short=short)
    fields.update(num_segments=num_segments, resize_short_side=short_side)
    reserved = _reserve(export_dir, overwrite)
    try:
        _export(model, export_dir, class_names, top_k, backbone, clip, reserved, fields)
    except BaseException:
        if reserved:
            with contextlib.suppress(OSError):
                export_dir.rmdir()  # only if still the empty folder reserved above
        raise
    return export_dir


def _reserve(export_dir, overwrite):
    """Creates `export_dir` exclusively unless `overwrite`; True if it did."""
    if overwrite:
        return False
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        export_dir.mkdir()
    except FileExistsError:
        raise FileExistsError(
            f"export directory {export_dir} already exists; choose another or pass overwrite=True"
        ) from None
    return True


def _export(model, export_dir, class_names, top_k, backbone, clip, reserved, fields):
    """Traces the signatures of `model` (and `backbone`) and writes them to `export_dir`."""
    class_names, num_steps = _check_exportable(model, class_names, top_k)
    archive = keras.export.ExportArchive()
    archive.track(model)
    _add_feature_endpoints(archive, model, class_names, top_k)
    if backbone is not None:
        if isinstance(model.input, dict):
            raise ValueError(
                "serve_video takes RGB frames; a two-stream model also needs optical flow, "
                "computed outside the graph: export it without a backbone"
            )
        spec = clip or ClipSpec(num_segments=num_steps)
        spec = spec.replace(**{k: v for k, v in fields.items() if v is not None})
        _add_video_endpoint(archive, model, backbone, spec, class_names, top_k)
    _write_out(archive, export_dir, reserved)


def _check_exportable(model, class_names, top_k):
    """Returns (class names as str, T); raises ValueError for what cannot be exported."""
    first = model.input["rgb"] if isinstance(model.input, dict) else model.input
    num_steps = first.shape[1]
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
    return class_names, num_steps


def _add_feature_endpoints(archive, model, class_names, top_k):
    """Adds `serving_default` (the full sequence) and `serve_step` (one segment, states)."""
    step = signatures.step_function(model)
    if not isinstance(model.input, dict):
        _, num_steps, feature_dim = model.input_shape
        archive.add_endpoint(
            "serving_default",
            lambda features: _top_k_outputs(model(features, training=False), class_names, top_k),
            input_signature=[tf.TensorSpec((None, num_steps, feature_dim), tf.float32, "features")],
        )
        archive.add_endpoint("serve_step", step, input_signature=step.input_signature)
        return
    specs = [
        tf.TensorSpec((None, *model.input[name].shape[1:]), tf.float32, f"{name}_features")
        for name in ("rgb", "flow")
    ]

    def classify_streams(rgb_features, flow_features):
        logits = model({"rgb": rgb_features, "flow": flow_features}, training=False)
        return _top_k_outputs(logits, class_names, top_k)

    archive.add_endpoint("serving_default", classify_streams, input_signature=specs)
    step_specs = [tf.TensorSpec((None, spec.shape[-1]), tf.float32, spec.name) for spec in specs]
    state_specs = list(step.input_signature[2:])
    if len(state_specs) == 2:  # late fusion: a recurrent stack per stream

        def step_streams(rgb_features, flow_features, rgb_states, flow_states):
            return step(rgb_features, flow_features, rgb_states, flow_states)

    else:  # mid fusion: one stack on the fused features

        def step_streams(rgb_features, flow_features, states):
            return step(rgb_features, flow_features, states)

    archive.add_endpoint("serve_step", step_streams, input_signature=step_specs + state_specs)


def _add_video_endpoint(archive, model, backbone, spec, class_names, top_k):
    """Adds `serve_video`: uint8 frames -> segments -> backbone -> the T steps -> the head."""
    archive.track(backbone)
    _, num_steps, feature_dim = model.input_shape
    step_map = tf.constant(step_segment_map(num_steps, spec.num_segments), tf.int32)

    def classify_video(frames):
        segments = read_clip_tf(frames, spec)
        batch = tf.shape(segments)[0]
        flat = tf.reshape(segments, tf.concat([[-1], tf.shape(segments)[2:]], axis=0))
        features = tf.cast(backbone(flat, training=False), tf.float32)
        features = tf.reshape(features, [batch, spec.num_segments, feature_dim])
        logits = model(tf.gather(features, step_map, axis=1), training=False)
        return _top_k_outputs(logits, class_names, top_k)

    archive.add_endpoint(
        "serve_video",
        classify_video,
        input_signature=[tf.TensorSpec((None, None, None, None, 3), tf.uint8, "frames")],
    )


def _exchange(first, second):
    """Swaps two paths in one atomic step (Linux renameat2); False where unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return (
        renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0
    )


def _write_out(archive, export_dir, reserved=False):
    """Writes the archive beside `export_dir`, then swaps it into place.

    A `reserved` export_dir is the empty folder this export created: the new one replaces it.

    An existing version keeps serving until the new one is complete: the two folders are
    exchanged in one atomic rename where the system allows it (else the old one is moved
    aside just before the new one moves in), and only then is the old one deleted.
    """
    tmp_dir = export_dir.with_name(f".{export_dir.name}.partial")
    old_dir = export_dir.with_name(f".{export_dir.name}.old")
    for leftover in (tmp_dir, old_dir):
        if leftover.exists():
            shutil.rmtree(leftover)
    archive.write_out(str(tmp_dir), verbose=False)
    fault_point("export_written")
    if reserved or not export_dir.exists():
        os.replace(tmp_dir, export_dir)
        return
    if _exchange(tmp_dir, export_dir):
        old_dir = tmp_dir
    else:
        os.replace(export_dir, old_dir)
        os.replace(tmp_dir, export_dir)
    fault_point("export_swapped")
    shutil.rmtree(old_dir)


def _class_names(classes, model_name):
    """The class list `classes` (a file, relative to the current directory; or one of the
    package's `data/`), else the zoo entry's."""
    from reslstm_tf import zoo
    from reslstm_tf.zoo.manifest import read_class_file

    if not classes:
        return zoo.class_names(model_name)
    path = pathlib.Path(classes).expanduser()
    if path.is_file():
        return read_class_file(path)
    try:
        return zoo.read_class_names(str(classes))
    except (FileNotFoundError, ValueError):
        raise FileNotFoundError(
            f"class list {classes} not found: no file {path.absolute()}, nor one of that name "
            "in the package's data/"
        ) from None


def export_model(
    model_name_or_path, export_dir, classes=None, top_k=5, video_signature=True, overwrite=False
):
    """Exports a zoo entry or a `.keras` head as a SavedModel; returns the export directory.

    With `video_signature` (one-stream heads; a two-stream head needs optical flow, which
    the graph cannot compute), ``serve_video`` runs the entry's backbone with its feature spec
    (segments, segment length, frame size, resize target, short-video policy), so it
    computes the features the entry was trained on; a `.keras` head gets I3D with the
    default spec (16-frame segments, 224 crops of a 256 short side, 'overlap').

    Args:
        model_name_or_path: a zoo entry name or a `.keras` model file.
        export_dir: the SavedModel directory (must not exist unless `overwrite`).
        classes: a class list file (one name per line); default the zoo entry's. Needed
            for a `.keras` file.
        top_k: ranked classes returned (at most the number of classes). Defaults to 5.
        video_signature: also export ``serve_video`` (one-stream heads). Defaults to True.
        overwrite: replace an existing `export_dir`.

    Returns:
        The export directory as a `pathlib.Path`.
    """
    from reslstm_tf import zoo
    from reslstm_tf.models import load_model

    if str(model_name_or_path).endswith(".keras"):
        if not pathlib.Path(model_name_or_path).is_file():
            raise FileNotFoundError(f"model file {model_name_or_path} does not exist")
        model = load_model(model_name_or_path)
        if classes is None:
            raise ValueError("--classes is needed when exporting a .keras file")
    else:
        model = zoo.load(model_name_or_path)
    class_names = _class_names(classes, model_name_or_path)
    top_k = min(top_k, len(class_names))  # The default 5 on a 2-class model means all.
    backbone, spec = None, None
    if video_signature and not isinstance(model.input, dict):
        from reslstm_tf.backbones.extractor import feature_model

        entry = getattr(model, "zoo_entry", None) or {}
        record = (entry.get("features") or {}).get("rgb")
        spec = ClipSpec.from_record(record) if record else None  # the entry's clips
        backbone = feature_model(spec.backbone if spec else "i3d", "rgb")
    return export_saved_model(
        model,
        export_dir,
        class_names,
        top_k=top_k,
        backbone=backbone,
        overwrite=overwrite,
        clip=spec,
    )
