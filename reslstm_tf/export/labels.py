"""What an export says about itself: class names, clip spec and model name beside the graph.

LiteRT and ONNX graphs carry tensors, not meanings. Every export therefore writes, beside
its model files:

- ``labels.txt``: the class names, one a line, in logit order (the convention LiteRT's task
  libraries and most serving stacks read);
- ``metadata.json``: {"model_name", "class_names", "clip_spec", "zoo_entry", "sha256",
  "inputs", "outputs"}: the zoo name the model was loaded as (its tagged name), and each
  stream's `ClipSpec` (how a video is cut into the clips or features the graph takes).

ONNX files also carry the same as ``metadata_props`` (`model_name`, `class_names` and
`clip_spec` as JSON strings, `zoo_entry`, `sha256`), readable with
``onnxruntime.InferenceSession(path).get_modelmeta().custom_metadata_map``.

The metadata comes from the model's zoo entry (`zoo.load` sets `model.zoo_entry`) or from a
class list given to the exporter; a model with neither gets a metadata file with
``class_names`` null and no labels file.
"""

import json
import os
import pathlib

from reslstm_tf.clip_spec import DESCRIPTIVE_KEYS, ClipSpec

LABELS_FILE = "labels.txt"
METADATA_FILE = "metadata.json"


def clip_specs(entry):
    """{stream: spec dict} of a zoo entry's `features` (the spec fields and descriptive keys)."""
    specs = {}
    for stream, record in ((entry or {}).get("features") or {}).items():
        if isinstance(record, dict) and stream in ("rgb", "flow"):
            spec = ClipSpec.from_record(record).to_dict()
            specs[stream] = {**spec, **{k: record[k] for k in DESCRIPTIVE_KEYS if k in record}}
    return specs or None


def export_metadata(model, classes=None):
    """The metadata of an export of `model` (module docstring).

    Args:
        model: the Keras model being exported (with `zoo_entry` if it came from the zoo).
        classes: optional class names: a list, or a class list file (one name a line).
    """
    from reslstm_tf import zoo

    entry = getattr(model, "zoo_entry", None)
    if isinstance(classes, (str, os.PathLike)):
        classes = zoo.read_class_names(str(classes))
    elif classes is None and entry:
        classes = zoo.class_names(entry["name"])
    weights = (entry or {}).get("weights") or {}
    return {
        "model_name": entry["name"] if entry else model.name,
        "class_names": list(classes) if classes is not None else None,
        "clip_spec": clip_specs(entry),
        "zoo_entry": entry["name"] if entry else None,
        "sha256": weights.get("sha256") or weights.get("checkpoint_sha256"),
    }


def check_classes(metadata, num_outputs):
    """Raises ValueError if the metadata names a number of classes other than the logits'."""
    names = metadata.get("class_names")
    if names is not None and num_outputs is not None and len(names) != num_outputs:
        raise ValueError(
            f"{len(names)} class names for a model of {num_outputs} logits; give the model's "
            "own class list"
        )


def _write(path, text):
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path


def write_beside(folder, metadata, signatures=None):
    """Writes `metadata.json` (and `labels.txt` if the classes are known) into `folder`.

    Args:
        folder: the export folder.
        metadata: from `export_metadata`.
        signatures: optional {graph: {"inputs": [...], "outputs": [...]}} to record.

    Returns:
        {"labels": path (if written), "metadata": path}.
    """
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {**metadata, **({"signatures": signatures} if signatures else {})}
    paths = {}
    if metadata.get("class_names") is not None:
        text = "".join(f"{name}\n" for name in metadata["class_names"])
        paths["labels"] = _write(folder / LABELS_FILE, text)
    paths["metadata"] = _write(folder / METADATA_FILE, json.dumps(record, indent=2) + "\n")
    return paths


def onnx_props(metadata):
    """The metadata as ONNX `metadata_props`: strings, lists and dicts as JSON."""
    props = {}
    for key, value in metadata.items():
        if value is None:
            continue
        props[key] = value if isinstance(value, str) else json.dumps(value)
    return props


def read_labels(folder):
    """The class names of an export folder's `labels.txt`."""
    lines = (pathlib.Path(folder) / LABELS_FILE).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line]
