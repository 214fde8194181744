"""A model with the clip spec and class names that recognition needs: `load_classifier`.

A classifier's `ClipSpec` comes from what it was made with: its zoo entry's `features`, or
the training run whose folder holds its `.keras` file; a model with neither gets the spec's
defaults (its T as K_v). Settings that would cut a run's clips otherwise are refused.
"""

import dataclasses
import pathlib

from reslstm_tf import runs, zoo
from reslstm_tf.clip_spec import ClipSpec
from reslstm_tf.models import load_model
from reslstm_tf.predict.scoring import clip_specs, is_end_to_end


@dataclasses.dataclass
class Classifier:
    """A model with what recognition needs from its zoo entry.

    Attributes:
        model: a clip classifier (frames -> logits, `kinetics400_i3d`), a Res-LSTM
            head (segment features -> logits), one-stream or two-stream, or an end-to-end
            video classifier (clips of T segments -> logits).
        name: the zoo entry's name (or the model file's stem).
        class_names: the class names in logit order.
        spec: the `ClipSpec` of the RGB stream (how videos are cut and embedded).
        flow_spec: the `ClipSpec` of the flow stream of a two-stream head or of an
            end-to-end classifier taking flow, else None.
    """

    model: object
    name: str
    class_names: list
    spec: dict
    flow_spec: dict = None

    @property
    def takes_frames(self):
        """True for a clip classifier (5D frames input), False for a head on segment features."""
        return not self.two_stream and len(self.model.input_shape) == 5

    @property
    def two_stream(self):
        """True for a classifier of RGB and optical-flow features (or clips)."""
        return isinstance(self.model.input, dict)

    @property
    def end_to_end(self):
        """True for a classifier of clips (T segments of frames) with its own backbone(s)."""
        return is_end_to_end(self.model)


def _head_spec(model, recorded, overrides, stream):
    """The recorded `ClipSpec` of a stream (or the defaults), with `overrides` applied.

    Without a record a head's K_v is its T.
    """
    spec = ClipSpec.from_record(recorded, modality=stream)
    if not recorded:
        first = model.input["rgb"] if isinstance(model.input, dict) else model.input
        if len(first.shape) == 3 and first.shape[1]:
            spec = spec.replace(num_segments=int(first.shape[1]))
    overrides = dict(overrides or {})
    if "frame_size" in overrides and "resize_short_side" not in overrides:
        overrides["resize_short_side"] = None  # frame_size * 256 / 224, as extraction
    return spec.replace(**overrides)


def _run_record(path):
    """(the {stream: spec} and class names a training run records, or ({}, None)).

    A `.keras` file inside a `reslstm-train` run folder carries the run's clip spec.
    """
    config_file = pathlib.Path(path).parent / runs.CONFIG_FILE
    if not config_file.is_file():
        return {}, None
    config = runs.RunDir(pathlib.Path(path).parent).config()
    return config.get("feature_spec") or {}, config.get("class_names")


def _refuse_conflicts(recorded, overrides, source):
    """Raises ValueError naming each override that changes a spec the run recorded."""
    conflicts = []
    for stream, record in recorded.items():
        spec = ClipSpec.from_record(record, modality=stream)
        conflicts += [
            f"{name}={value!r} (the run's {stream} clips: {spec[name]!r})"
            for name, value in (overrides or {}).items()
            if name in record and spec[name] != value
        ]
    if conflicts:
        raise ValueError(
            f"{source} was trained on clips cut otherwise: {', '.join(conflicts)}; "
            "drop these settings to classify with the run's clip spec"
        )


def _check_class_count(model, names, classes, entry):
    """Raises ValueError when the class list's length is not the model's number of outputs."""
    outputs = model.output_shape[-1]
    if not isinstance(outputs, int) or len(names) == outputs:  # unknown or several outputs
        return
    if classes is None:
        source = f"zoo entry {entry['name']!r} lists"
    elif isinstance(classes, (list, tuple)):
        source = "classes= gives"
    else:
        source = f"class list {classes} gives"
    raise ValueError(
        f"{source} {len(names)} class names for the {outputs} outputs of model "
        f"{model.name!r}; give a class list with one name per output, in logit order"
    )


def load_classifier(name_or_model, classes=None, spec=None):
    """Returns the `Classifier` of a zoo entry, a `.keras` head or a model from `zoo.load`.

    Args:
        name_or_model: a zoo entry name with published weights, a `.keras` model file, a
            Keras model (from `reslstm_tf.zoo.load` it carries its entry), or a
            `Classifier` (returned as is).
        classes: a class list file (one name per line) or a list of names; needed for a
            model without a zoo entry, and then replaces the entry's.
        spec: optional dict of feature-spec values that replace the entry's (or the
            defaults, `DEFAULT_SPEC`), for both streams: `num_segments`, `segment_len`,
            `frame_size`, `backbone_weights` (None: untrained), `flow_method`, ...

    Raises:
        ValueError: for a model with neither a zoo entry nor `classes`, or a class list
            whose length is not the model's number of outputs.
        FileNotFoundError: for a `.keras` file or class list that does not exist.
    """
    if isinstance(name_or_model, Classifier):
        return name_or_model
    name = getattr(name_or_model, "name", None)
    recorded = {}
    if isinstance(name_or_model, (str, pathlib.Path)):
        path = pathlib.Path(name_or_model)
        if path.suffix == ".keras":
            if not path.is_file():
                raise FileNotFoundError(f"model file {path} does not exist")
            recorded, run_classes = _run_record(path)
            _refuse_conflicts(recorded, spec, f"{path}")
            classes = classes if classes is not None else run_classes
            name_or_model, name = load_model(path), path.stem
        else:
            name_or_model = zoo.load(str(name_or_model))
    model = name_or_model
    entry = getattr(model, "zoo_entry", None)
    if entry is None and classes is None:
        raise ValueError(
            "a zoo entry name or a model from reslstm_tf.zoo.load is needed (its entry gives "
            "the feature spec and class names), or pass classes= (a class list file). "
            f"Received: {type(name_or_model).__name__}"
        )
    if classes is None:
        names = zoo.class_names(entry["name"])
    else:
        path = pathlib.Path(str(classes))
        is_list = isinstance(classes, (list, tuple))
        names = list(classes) if is_list else zoo.read_class_names(path.name, path.parent)
    _check_class_count(model, names, classes, entry)
    features = (entry or {}).get("features") or recorded
    if is_end_to_end(model):
        rgb, flow = clip_specs(model, features, spec)
        return Classifier(model, entry["name"] if entry else name, names, rgb, flow)
    rgb = _head_spec(model, features.get("rgb"), spec, "rgb")
    two = isinstance(model.input, dict)
    flow = _head_spec(model, features.get("flow"), spec, "flow") if two else None
    return Classifier(model, entry["name"] if entry else name, names, rgb, flow)
