"""The "video_classifier" zoo entries: fine-tuned I3D + Res-LSTM classifiers as deltas.

A fine-tuned `build_video_classifier` model (clips in, logits out) changes only the I3D
blocks from its `trainable_from` endpoint on, and its head. Its entry stores the changed
I3D variables of each stream as an int8 delta over a backbone entry
(`reslstm_tf.backbones.delta`), and the head's weights (float16 by default):

    "architecture": {"kind": "video_classifier", "modality": "rgb" | "flow" | "two_stream",
                     "backbone": "i3d", "preset": "res3", "num_segments": 8,
                     "segment_len": 16, "frame_size": 224, "trainable_from": "Mixed_5b",
                     and optionally "units", "num_layers", "residual", "dropout",
                     "fusion", "level", "frozen_batchnorm"},
    "base": "kinetics400_i3d",
    "deltas": {"rgb": {"file": "i3d-rgb-delta-<sha8>.npz", "sha256": ..., "bytes": ...},
               "flow": {...}},      # one per stream of the modality
    "weights": {"file": "<name>-<sha8>.weights.h5", "sha256": ..., "bytes": ...,
                "dtype": "float16"},  # the weights of the layer "head"
    "features": {"rgb": {"modality": "rgb", "resize_short_side": 256, "short": "loop"},
                 "flow": {"modality": "flow", "resize_short_side": 256, "short": "loop",
                          "flow_method": "tvl1"}}

The architecture fixes the clips' shape (T segments of L frames of S x S pixels);
`features` says how a video is read into them, as fine-tuning evaluates
(`reslstm_tf.data.clips`, eval mode: centred windows, the centre crop after resizing the
shorter side, flow by `flow_method`, the short-video policy `short`).
`publish_video_classifier` fills in the fine-tuning defaults (S * 256 / 224, "loop",
"tvl1"); declare the run's own values if they differed (for flow, `resize_short_side` is
the run's `flow_short_side`). `base` names a backbone entry: `kinetics400_i3d` (the
converted checkpoint, verified on every use) or a lab's own I3D with a published
`.weights.h5`; the classifier must have been fine-tuned from it (its layers before
`trainable_from` equal to the base's), or publishing refuses it.

Two entries whose deltas are equal (two heads on one fine-tuned I3D) share one delta file.
This module holds the pieces; `reslstm_tf.zoo` publishes and loads the entries.
"""

import hashlib

import numpy as np

from reslstm_tf import files as cache
from reslstm_tf.backbones.delta import encode_delta
from reslstm_tf.backbones.i3d import VALID_ENDPOINTS
from reslstm_tf.clip_spec import ClipSpec
from reslstm_tf.video_classifier import build_video_classifier
from reslstm_tf.zoo.fetch import path_inside

KIND = "video_classifier"
DEFAULT_BASE = "kinetics400_i3d"
REQUIRED = ("modality", "preset", "num_segments", "segment_len", "frame_size")
HEAD_KEYS = ("units", "num_layers", "residual", "dropout")


def streams(modality):
    """The streams of a modality: ("rgb",), ("flow",) or ("rgb", "flow")."""
    return ("rgb", "flow") if modality == "two_stream" else (modality,)


def stream_backbones(classifier, modality):
    """Returns {stream: I3D backbone} of a `build_video_classifier` model of `modality`."""
    if modality == "two_stream":
        return {s: classifier.get_layer(f"{s}_encoder").backbone for s in streams(modality)}
    return {modality: classifier.get_layer("segment_encoder").backbone}


def build_classifier(entry, name, backbone_weights):
    """Builds the `build_video_classifier` model an entry describes.

    Args:
        entry: the manifest entry (its `architecture` and `dataset.num_classes`).
        name: the model's name.
        backbone_weights: the I3D weights ("kinetics400", a `.weights.h5` path or None).

    Raises:
        ValueError: the architecture lacks a required key or names another backbone.
    """
    arch = entry["architecture"]
    missing = [key for key in REQUIRED if key not in arch]
    if missing or arch.get("backbone", "i3d") != "i3d":
        raise ValueError(
            f"zoo entry {name!r}: a video_classifier architecture needs {', '.join(REQUIRED)} "
            f"and backbone 'i3d'. Received: {arch}"
        )
    return build_video_classifier(
        entry["dataset"]["num_classes"],
        arch["modality"],
        "i3d",
        arch["preset"],
        num_segments=arch["num_segments"],
        segment_len=arch["segment_len"],
        frame_size=arch["frame_size"],
        backbone_weights=backbone_weights,
        trainable_from=arch.get("trainable_from", "Mixed_4f"),
        frozen_batchnorm=arch.get("frozen_batchnorm", True),
        fusion=arch.get("fusion", "product"),
        level=arch.get("level", "late"),
        name=name,
        **{key: arch[key] for key in HEAD_KEYS if key in arch},
    )


def check_rebuilds(name, rebuilt, classifier):
    """Raises ValueError unless `rebuilt` (from entry `name`) has `classifier`'s inputs and head."""
    if rebuilt.input_shape != classifier.input_shape:
        raise ValueError(
            f"zoo entry {name!r} describes a classifier of input {rebuilt.input_shape}; the "
            f"model takes {classifier.input_shape}"
        )
    ours, theirs = (model.get_layer("head").weights for model in (rebuilt, classifier))
    for index, (mine, other) in enumerate(zip(ours, theirs)):
        if tuple(mine.shape) != tuple(other.shape):
            raise ValueError(
                f"zoo entry {name!r} describes a head whose weight {index} ({mine.path}) has "
                f"shape {tuple(mine.shape)}; the model's ({other.path}) has {tuple(other.shape)}"
            )
    if len(ours) != len(theirs):
        raise ValueError(
            f"zoo entry {name!r} describes a head of {len(ours)} weights; the model's has "
            f"{len(theirs)}"
        )


def check_fine_tuned_from(name, stream, delta, trainable_from, base):
    """Refuses a delta that changes an I3D layer before `trainable_from`.

    Those layers are frozen in fine-tuning, so they differ only if the classifier did not
    start from `base`; its delta would then quantise whole weights rather than fine-tuning's
    small changes.
    """
    if trainable_from is None:
        return
    first = VALID_ENDPOINTS.index(trainable_from)
    for path in delta:
        scope = path.split(".")[0].split("/")[0]
        if scope in VALID_ENDPOINTS and VALID_ENDPOINTS.index(scope) < first:
            raise ValueError(
                f"zoo entry {name!r}: the {stream} I3D differs from base {base!r} in {path!r}, "
                f"before trainable_from={trainable_from!r} (frozen in fine-tuning): it was not "
                f"fine-tuned from {base!r}; publish it with the base it started from"
            )


def clip_features(entry):
    """The entry's `features`: each stream's whole `ClipSpec`, its shape the architecture's."""
    arch, features = entry["architecture"], dict(entry.get("features") or {})
    shape = {name: arch[name] for name in ("num_segments", "segment_len", "frame_size")}
    for stream in streams(arch["modality"]):
        record = features.get(stream) or {}
        spec = ClipSpec.from_record(record, **shape, backbone=arch.get("backbone", "i3d"))
        features[stream] = {**record, **spec.replace(modality=stream).to_dict()}
    return features


def write_delta(delta, backbone, stream, entries, folder):
    """Writes a delta as `<backbone>-<stream>-delta-<sha8>.npz` in `folder`; returns its record.

    Named after what it changes and its content (`i3d-rgb-delta-2f264f5e.npz`), never after
    the entry that first used it: entries share it.

    If an entry of `entries` already records a file in `folder` with the same content, that
    file is shared instead. The file is written atomically (complete or absent).

    Returns:
        {"file", "sha256", "bytes"}.
    """
    data = encode_delta(delta)
    digest = hashlib.sha256(data).hexdigest()
    record = {"sha256": digest, "bytes": len(data)}
    for entry in entries.values():
        for other in (entry.get("deltas") or {}).values():
            if other.get("sha256") != digest:
                continue
            path = path_inside(folder, other.get("file"), "delta file")
            if path.is_file() and cache.sha256_of(path) == digest:
                return {"file": path.name, **record}
    target = path_inside(folder, f"{backbone}-{stream}-delta-{digest[:8]}.npz", "delta file")
    if not (target.is_file() and cache.sha256_of(target) == digest):
        with cache.atomic_write(target, "wb") as handle:
            handle.write(data)
    return {"file": target.name, **record}


def weights_as_float16(path):
    """Rewrites a `.weights.h5` with its float arrays as float16; Keras casts them back on load.

    Raises:
        ValueError: a weight is too large for float16 (publish as float32 instead).
    """
    import h5py

    nodes = []
    with h5py.File(path, "r") as source:
        root = dict(source.attrs)

        def keep(key, node):
            value = node[()] if isinstance(node, h5py.Dataset) else None
            nodes.append((key, value, dict(node.attrs)))

        source.visititems(keep)
    with h5py.File(path, "w") as target:
        target.attrs.update(root)
        for key, value, attrs in nodes:
            if value is None:
                target.require_group(key).attrs.update(attrs)
                continue
            if np.issubdtype(value.dtype, np.floating):
                if not np.isfinite(value.astype(np.float16)).all():
                    raise ValueError(f"weights {key} do not fit in float16: publish as float32")
                value = value.astype(np.float16)
            target.create_dataset(key, data=value).attrs.update(attrs)
