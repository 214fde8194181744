"""LiteRT (TensorFlow Lite) export: a head's full-sequence model and its streaming step.

`export_litert` writes two flatbuffers that run with LiteRT's interpreter alone (builtin
ops only, no Flex delegate, no TensorFlow on the device):

- ``model.tflite``: the full sequence (fixed T), the ``classify`` graph of
  `reslstm_tf.export.signatures`;
- ``step.tflite``: one segment and the LSTM states in, logits, probabilities and new
  states out, the ``step`` graph (as the SavedModel's ``serve_step``);
- ``labels.txt`` and ``metadata.json``: the class names in logit order, the clip spec and
  the model's (tagged) zoo name (`reslstm_tf.export.labels`).

A fine-tuned video classifier (zoo kind "video_classifier", e.g. `skateboard_lstm3`) exports
its clips-to-logits graph as ``model.tflite`` (input ``clips``, or ``rgb`` and ``flow``, of
shape (B, T, L, S, S, C) in [-1, 1]; `signatures.clips_function`); it has no streaming step.
Its I3D's 3D max pools, which LiteRT has no builtin op for, are traced as 2D pools per frame
then over time (`signatures.pooling_as_2d`, the same values).

Inputs and outputs are named as in `reslstm_tf.export.signatures`; the batch dimension
is dynamic (a signature runner resizes it). Conversion goes through a SavedModel written
by `keras.export.ExportArchive`, the path TensorFlow documents for Keras 3: converting a
`tf.function` of a Keras 3 model directly keeps its weights as resource variables that the
interpreter never initialises (NaN outputs).

Quantisation (post-training, no calibration data): "float16" stores the weights in
float16 (half the file; CPUs dequantise them at load and compute in float32);
"dynamic_int8" stores them in int8 and quantises activations on the fly in the matrix
products (a quarter of the file).

Example:

>>> paths = export_litert(model, "out/litert", quantization="dynamic_int8")
>>> from ai_edge_litert.interpreter import Interpreter
>>> step = Interpreter(model_path=str(paths["step"])).get_signature_runner()
>>> states = np.zeros((1, 3, 2, 256), np.float32)
>>> out = step(features=feature, states=states)  # out["probabilities"], out["states"]
"""

import os
import pathlib
import tempfile

import keras
import tensorflow as tf

from reslstm_tf.checks import check_choice
from reslstm_tf.export import labels, signatures

QUANTIZATIONS = ("none", "float16", "dynamic_int8")
MODEL_FILE = "model.tflite"
STEP_FILE = "step.tflite"


def _converter(saved_model_dir, signature_key, quantization):
    """Returns a LiteRT converter for one signature with builtin ops and `quantization`."""
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=[signature_key]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter


def _graphs(model, streaming):
    """{key: (file name, tf.function)} of the graphs to convert."""
    if signatures.is_clip_model(model):  # a video classifier: clips in, no streaming step
        return {"model": (MODEL_FILE, signatures.clips_function(model))}
    graphs = {"model": (MODEL_FILE, signatures.classify_function(model))}
    if streaming:
        graphs["step"] = (STEP_FILE, signatures.step_function(model))
    return graphs


def export_litert(
    model, out_dir, quantization="none", streaming=True, overwrite=False, classes=None
):
    """Writes LiteRT flatbuffers, `model.tflite` (and `step.tflite`), with labels and metadata.

    Args:
        model: a head from `reslstm_tf.models` (one-stream or two-stream, fixed T), a
            fine-tuned video classifier, a zoo entry name, or a `.keras` file.
        out_dir: str or path of the folder to write; created if missing.
        quantization: "none" (float32), "float16" or "dynamic_int8". Defaults to "none".
        streaming: also write a head's streaming step. Defaults to True (a video
            classifier has none).
        overwrite: replace existing files in `out_dir`. Defaults to False.
        classes: optional class names (a list or a class list file); default the zoo
            entry's.

    Returns:
        dict {"model": path, "step": path (with `streaming`), "labels": path (classes
        known), "metadata": path} of `pathlib.Path`s.

    Raises:
        ValueError: an unknown `quantization`, or a head without a fixed T.
        FileExistsError: a file to write exists and `overwrite` is False.
    """
    check_choice("quantization", quantization, QUANTIZATIONS)
    model = signatures.load_head(model)
    metadata = labels.export_metadata(model, classes)
    labels.check_classes(metadata, model.output_shape[-1])
    out_dir = pathlib.Path(out_dir)
    with signatures.pooling_as_2d(model):
        graphs = _graphs(model, streaming)
    paths = {key: out_dir / file_name for key, (file_name, _) in graphs.items()}
    existing = [str(path) for path in paths.values() if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing} already exist; choose another out_dir or overwrite=True")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="reslstm_litert_") as saved_model_dir:
        with signatures.pooling_as_2d(model):  # the I3D's 3D pools as builtin 2D pools
            archive = keras.export.ExportArchive()
            archive.track(model)
            for key, (_, function) in graphs.items():
                archive.add_endpoint(key, function)
            archive.write_out(saved_model_dir, verbose=False)
        for key, path in paths.items():
            flatbuffer = _converter(saved_model_dir, key, quantization).convert()
            partial = path.with_name(f".{path.name}.partial")
            partial.write_bytes(flatbuffer)
            os.replace(partial, path)
    inputs = {
        key: {spec.name: [d for d in spec.shape] for spec in function.input_signature}
        for key, (_, function) in graphs.items()
    }
    return {**paths, **labels.write_beside(out_dir, metadata, {"inputs": inputs})}


def interpreter(path, num_threads=None):
    """Returns a LiteRT interpreter for a `.tflite` file, from `ai_edge_litert`.

    `ai_edge_litert` is LiteRT's own Python package (the `litert` extra); TensorFlow's
    `tf.lite.Interpreter` is deprecated in its favour and slated for removal.

    Args:
        path: the `.tflite` file.
        num_threads: CPU threads (None: LiteRT's default).
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:
        raise ImportError(
            'running LiteRT models needs ai-edge-litert: pip install "reslstm-tf[litert]"'
        ) from error
    return Interpreter(model_path=str(path), num_threads=num_threads)
