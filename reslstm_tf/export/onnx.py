"""ONNX export with tf2onnx: heads (full sequence and streaming step) and backbones (I3D).

`export_onnx` traces the model's inference graph as a `tf.function`
(`reslstm_tf.export.signatures`) and converts it with `tf2onnx.convert.from_function`; the
result runs in ONNX Runtime or any other ONNX inference stack. tf2onnx and onnx are the
optional `onnx` extra (`pip install "reslstm-tf[onnx]"`), onnxruntime runs the files.

Heads export their ``classify`` graph (inputs ``features``, or ``rgb`` and ``flow``;
outputs ``logits`` and ``probabilities``) and, with `step_path`, their streaming ``step``
graph, named as in `reslstm_tf.export.signatures` except that the returned states are
``new_states`` (``new_rgb_states``, ``new_flow_states``): an ONNX graph cannot have an input
and an output of the same name. Any other one-input model (a backbone
from `reslstm_tf.backbones.extractor.feature_model`) exports its call: input named as the
model's input, output ``features``. A fine-tuned video classifier (zoo kind
"video_classifier") exports its clips-to-logits graph (`signatures.clips_function`: input
``clips``, or ``rgb`` and ``flow``; outputs ``logits`` and ``probabilities``). Batch and, for
the I3D, frames and frame size stay dynamic.

Every file carries ``metadata_props``: the model's (tagged) zoo name, its class names and
clip spec as JSON (`reslstm_tf.export.labels`), and `export` writes ``labels.txt`` and
``metadata.json`` beside it.

Example:

>>> export_onnx(feature_model("i3d", "rgb"), "i3d.onnx")
>>> session = onnxruntime.InferenceSession("i3d.onnx")
>>> (features,) = session.run(None, {session.get_inputs()[0].name: segments})
"""

import os
import pathlib

from reslstm_tf.checks import check_positive_int
from reslstm_tf.export import labels, signatures

DEFAULT_OPSET = 17


def _tf2onnx():
    try:
        import tf2onnx
    except ImportError as error:
        raise ImportError(
            'ONNX export needs tf2onnx and onnx: pip install "reslstm-tf[onnx]"'
        ) from error
    return tf2onnx


def is_head(model):
    """Whether `model` is a Res-LSTM head (it has a `residual_lstm` stack)."""
    names = {layer.name for layer in model.layers}
    return bool(names & {"residual_lstm", "rgb_residual_lstm"})


def _renamed_states(step):
    """Returns `step` with its state outputs renamed `new_<name>` (ONNX names are unique)."""
    import tensorflow as tf

    @tf.function(input_signature=step.input_signature)
    def onnx_step(*inputs):
        outputs = step(*inputs)
        return {(f"new_{k}" if k.endswith("states") else k): v for k, v in outputs.items()}

    return onnx_step


def _convert(function, path, opset, props=None):
    """Converts a `tf.function` with an input signature to an ONNX file; returns its path.

    `props` ({str: str}) are written as the file's `metadata_props`.
    """
    tf2onnx = _tf2onnx()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    model_proto, _ = tf2onnx.convert.from_function(
        function,
        input_signature=function.input_signature,
        opset=opset,
    )
    if props:
        import onnx

        onnx.helper.set_model_props(model_proto, props)
    partial.write_bytes(model_proto.SerializeToString())
    os.replace(partial, path)
    return path


def _functions(model, head, step_path):
    """{key: tf.function} of the graphs to convert."""
    if signatures.is_clip_model(model):
        return {"model": signatures.clips_function(model)}
    if not head:
        return {"model": signatures.forward_function(model, output_name="features")}
    functions = {"model": signatures.classify_function(model)}
    if step_path is not None:
        functions["step"] = _renamed_states(signatures.step_function(model))
    return functions


def export_onnx(
    model, path, opset=DEFAULT_OPSET, step_path=None, overwrite=False, classes=None, beside=True
):
    """Writes `model`'s inference graph as an ONNX file (and a head's streaming step).

    Args:
        model: a head from `reslstm_tf.models` (fixed T), a fine-tuned video classifier, a
            zoo entry name or a `.keras` file, or any one-input Keras model such as the I3D
            feature backbone.
        path: str or path of the `.onnx` file to write.
        opset: the ONNX opset. Defaults to 17 (ONNX Runtime 1.14 and later).
        step_path: optional `.onnx` file for a head's streaming step.
        overwrite: replace existing files. Defaults to False.
        classes: optional class names (a list or a class list file); default the zoo
            entry's. Recorded in each file's `metadata_props`.
        beside: also write `labels.txt` and `metadata.json` beside `path`. Defaults to True.

    Returns:
        dict {"model": path, "step": path (with `step_path`), "labels": path (classes
        known, with `beside`), "metadata": path (with `beside`)} of `pathlib.Path`s.

    Raises:
        ValueError: `step_path` for a model that is not a head, or a bad `opset`.
        FileExistsError: a file to write exists and `overwrite` is False.
        ImportError: tf2onnx is not installed.
    """
    check_positive_int("opset", opset)
    model = signatures.load_head(model)
    head = is_head(model)
    metadata = labels.export_metadata(model, classes)
    logits = head or signatures.is_clip_model(model)
    labels.check_classes(metadata, model.output_shape[-1] if logits else None)
    if step_path is not None and not head:
        raise ValueError(
            "step_path is for Res-LSTM heads only (a streaming step needs a recurrent stack). "
            f"Received: model {model.name!r} with step_path={str(step_path)!r}"
        )
    paths = {"model": pathlib.Path(path)}
    if step_path is not None:
        paths["step"] = pathlib.Path(step_path)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing} already exist; choose another path or overwrite=True")
    functions = _functions(model, head, step_path)
    props = labels.onnx_props(metadata)
    written = {key: _convert(functions[key], paths[key], opset, props) for key in paths}
    if beside:
        written.update(labels.write_beside(paths["model"].parent, metadata))
    return written
