"""The model zoo: named, verified models from the manifest in `zoo/manifest.json`.

Entries are named `<dataset>_<arch>` (`hmdb51_res3`, `ucf101_lstm2`, ...), and a published
one `<dataset>_<arch>.<tag>` as in timm (`skateboard_lstm3.i3d224_frozen`,
`kinetics400_i3d.deepmind`): a tagged name always loads the same sha256. Bare names such as
`skateboard_lstm3` are aliases to a recommended tag, recorded with their history in the
manifest (`reslstm_tf.zoo.names`); `info`, `load` and the rest take either. Each entry
records its architecture preset, the backbone and feature spec its head expects, its class
names, the location and sha256 of its weights, and metrics with the command that produced
them. `load` never returns random weights silently: an entry whose weights are
not published raises `WeightsNotPublishedError` saying how to produce them.

Entry kinds (`entry["architecture"]["kind"]`): "backbone" (the I3D; weights the converted
Kinetics-400 checkpoint, verified on every use, or a published `.weights.h5`),
"single_stream" and "two_stream" (a Res-LSTM head on cached features; `weights` its
`.weights.h5`), and "video_classifier": a fine-tuned I3D + Res-LSTM classifier stored as
int8 deltas over a backbone entry plus its head, published by `publish_video_classifier`
(the entry format is in `reslstm_tf.zoo.video`).

Files are fetched and verified by `reslstm_tf.zoo.fetch`: beside the manifest, in the
cache, or downloaded (`$RESLSTM_ZOO_URL`), always sha256-checked. `$RESLSTM_ZOO_MANIFEST`
adds the entries of another manifest (a lab's own), separated by `os.pathsep`. Published
files are content-addressed, `<name>-<sha256[:8]>.weights.h5` as in timm (deltas
`<name>-<stream>-delta-<sha256[:8]>.npz`), and `publish` writes them before it replaces the
manifest atomically: killed at any point (`RESLSTM_FAULT=publish_weights_written` or
`publish_manifest_written`), the entry still loads, the old weights or the new.
"""

import copy
import difflib
import os
import pathlib
import warnings

from reslstm_tf.backbones.delta import apply_delta, load_delta
from reslstm_tf.backbones.i3d import I3D
from reslstm_tf.faults import fault_point as fault_point
from reslstm_tf.models import build_model
from reslstm_tf.zoo import manifest as manifests
from reslstm_tf.zoo import names, publishing, video
from reslstm_tf.zoo.fetch import DOWNLOAD_MARGIN as DOWNLOAD_MARGIN
from reslstm_tf.zoo.fetch import MAX_DOWNLOAD_BYTES as MAX_DOWNLOAD_BYTES
from reslstm_tf.zoo.fetch import MAX_FILE_BYTES as MAX_FILE_BYTES
from reslstm_tf.zoo.fetch import MIRROR_ENV as MIRROR_ENV
from reslstm_tf.zoo.fetch import DownloadTooLargeError as DownloadTooLargeError
from reslstm_tf.zoo.fetch import WeightsUnavailableError as WeightsUnavailableError
from reslstm_tf.zoo.fetch import check_plain_name as check_plain_name
from reslstm_tf.zoo.fetch import verified_file
from reslstm_tf.zoo.manifest import FORMAT_VERSION as FORMAT_VERSION
from reslstm_tf.zoo.manifest import ManifestError as ManifestError
from reslstm_tf.zoo.manifest import default_manifest_path as default_manifest_path

MANIFEST_ENV = "RESLSTM_ZOO_MANIFEST"
_HEAD_KINDS = ("single_stream", "two_stream")


class WeightsNotPublishedError(RuntimeError):
    """The zoo entry exists but has no published weights."""


class UnknownEntryError(ValueError):
    """No zoo entry has the name asked for; `hint(command)` names a close one and the list."""

    def __init__(self, name, close, count, list_command="reslstm_tf.zoo.list()"):
        self.name, self.close, self.count = name, close, count
        super().__init__(self.hint(list_command))

    def hint(self, list_command):
        """The message, naming `list_command` as the way to see every entry."""
        close = f" Did you mean {' or '.join(map(repr, self.close))}?" if self.close else ""
        return (
            f"unknown zoo entry {self.name!r}.{close} {list_command} gives all "
            f"{self.count} entries."
        )


def _read_manifest(path):
    return manifests.read(path)


def _all_entries():
    """The entries of the packaged manifest and of each `$RESLSTM_ZOO_MANIFEST` one, in order.

    A later manifest's entry replaces an earlier one of the same name (a lab's own wins over
    the packaged one), and an entry named as an earlier manifest's alias is found before that
    alias's target; either way with a warning naming both manifests.
    """
    entries = _read_manifest(default_manifest_path())
    alias_sources = dict.fromkeys(names.read_aliases(default_manifest_path()), "")
    for extra in filter(None, os.environ.get(MANIFEST_ENV, "").split(os.pathsep)):
        for name, entry in _read_manifest(extra).items():
            if name in entries or name in alias_sources:
                what = "the entry" if name in entries else "the alias"
                source = entries[name]["_manifest_dir"] if name in entries else None
                source = source or alias_sources[name] or default_manifest_path().parent
                warnings.warn(
                    f"zoo entry {name!r} of {extra} replaces {what} of {source} "
                    f"(${MANIFEST_ENV} wins)",
                    stacklevel=3,
                )
            entries[name] = entry
        alias_sources.update(
            dict.fromkeys(names.read_aliases(extra), str(pathlib.Path(extra).parent))
        )
    return entries


def aliases():
    """Returns {alias: its record} of every manifest: `target` and `history` (`zoo.names`)."""
    table = names.read_aliases(default_manifest_path())
    for extra in filter(None, os.environ.get(MANIFEST_ENV, "").split(os.pathsep)):
        table.update(names.read_aliases(extra))
    return table


def list(include_aliases=False):  # noqa: A001 - the zoo's public verb, as in timm.list_models
    """Returns the sorted names of all zoo entries (tagged names and unpublished entries).

    With `include_aliases`, the bare names that point at a tag (`skateboard_lstm3`) too.
    """
    return sorted({*_all_entries(), *(aliases() if include_aliases else {})})


def published():
    """Returns the sorted names of the entries whose weights are published."""
    return sorted(name for name, entry in _all_entries().items() if entry.get("weights"))


def info(name):
    """Returns a copy of the manifest entry `name` (a tagged name, an alias or a bare entry).

    Its `name` is the entry's own (the tag an alias resolves to), `alias` the name asked
    for if it was an alias. Raises an `UnknownEntryError` suggesting close names.
    """
    entries, table = _all_entries(), aliases()
    resolved = names.resolve(name, entries, table)
    if resolved is None:
        close = difflib.get_close_matches(str(name), [*entries, *table], n=3, cutoff=0.5)
        raise UnknownEntryError(name, close, len(entries))
    entry = copy.deepcopy(entries[resolved])
    entry.pop("_manifest_dir", None)
    entry["name"] = resolved
    if resolved != name:
        entry["alias"] = name
    return entry


def class_names(name):
    """Returns the class names of zoo entry `name`, in logit order."""
    entry = _all_entries()[info(name)["name"]]
    return read_class_names(entry["dataset"]["classes"], entry["_manifest_dir"])


def read_class_names(file_name, manifest_dir=None):
    """Reads a class list (one name per line) from `data/` or beside a manifest.

    `file_name` must be a plain name resolving inside the manifest's folder, as weights
    files do (`reslstm_tf.zoo.manifest.read_class_names`).
    """
    return manifests.read_class_names(file_name, manifest_dir)


def weights_path(name):
    """Returns a local, sha256-verified path to the published weights of entry `name`."""
    entry = _all_entries()[info(name)["name"]]
    weights = entry.get("weights")
    if not weights:
        raise WeightsNotPublishedError(_not_published_message(name, entry))
    if "file" not in weights:
        raise ValueError(f"zoo entry {name!r} publishes no weights file: {weights}")
    return verified_file(name, entry["_manifest_dir"], weights, "weights")


def delta_path(name, stream):
    """Returns a local, sha256-verified path to the `stream` delta of video classifier `name`."""
    entry = _all_entries()[info(name)["name"]]
    deltas = entry.get("deltas") or {}
    if stream not in deltas:
        if not deltas:
            raise WeightsNotPublishedError(_not_published_message(name, entry))
        raise ValueError(f"zoo entry {name!r} has no {stream!r} delta; it has {sorted(deltas)}")
    return verified_file(name, entry["_manifest_dir"], deltas[stream], f"{stream} delta")


def _not_published_message(name, entry):
    dataset = entry["dataset"]["name"]
    recipe = entry.get("recipe", ["see docs/reproduce.md"])
    recipe = [recipe] if isinstance(recipe, str) else recipe
    return (
        f"zoo entry {name!r} has no published weights: no {dataset} features or GPU "
        "were available where this release was made, and reslstm_tf never returns "
        "random weights silently. To produce and publish them:\n"
        + "".join(f"  {command}\n" for command in recipe)
        + "(docs/reproduce.md gives the compute each step needs.) "
        f"Or call reslstm_tf.zoo.load({name!r}, weights=None) for the untrained "
        "architecture, or weights='path/to.weights.h5' for your own."
    )


def build(name):
    """Builds the architecture of zoo entry `name` with untrained weights."""
    entry = info(name)
    arch = entry["architecture"]
    kind = arch["kind"]
    if kind == "backbone":
        return I3D(final_endpoint="Logits", weights=None, name=name)
    if kind == video.KIND:
        return video.build_classifier(entry, name, backbone_weights=None)
    if kind not in _HEAD_KINDS:
        raise ValueError(
            f"zoo entry {name!r} has unknown architecture kind {kind!r}; allowed: "
            f"{', '.join(map(repr, ('backbone',) + _HEAD_KINDS + (video.KIND,)))}"
        )
    features = entry["features"]
    feature_dim = features.get("feature_dim") or features.get("rgb", {}).get("feature_dim")
    return build_model(
        entry["dataset"]["num_classes"],
        modality="two_stream" if kind == "two_stream" else "rgb",
        preset=arch["preset"],
        fusion=arch.get("fusion", "product"),
        level=arch.get("level", "late"),
        feature_dim=feature_dim,
        flow_dim=features.get("flow", {}).get("feature_dim", feature_dim),
        name=name,
        **{k: arch[k] for k in ("units", "num_layers", "residual", "num_steps") if k in arch},
    )


def base_weights(name):
    """The backbone weights of entry `name`, as `feature_model` takes them.

    A published `.weights.h5` (verified), or "kinetics400" for the converted checkpoint
    (`kinetics400_i3d`: verified against its own record on every use).
    """
    entry = info(name)
    if entry["architecture"]["kind"] != "backbone":
        raise ValueError(
            f"a base must be a backbone entry such as {video.DEFAULT_BASE!r}; zoo entry {name!r} "
            f"is a {entry['architecture']['kind']!r}"
        )
    if (entry.get("weights") or {}).get("file"):
        return str(weights_path(name))
    return "kinetics400"


def _load_video_classifier(name, entry):
    """Verifies every file of a video classifier entry, then builds base + deltas + head."""
    modality = entry["architecture"]["modality"]
    if set(entry.get("deltas") or {}) - set(video.streams(modality)):
        raise ValueError(
            f"zoo entry {name!r} has deltas {sorted(entry['deltas'])} for a {modality!r} "
            f"classifier (streams {list(video.streams(modality))})"
        )
    head = weights_path(name)
    paths = {stream: delta_path(name, stream) for stream in video.streams(modality)}
    deltas = {stream: load_delta(path) for stream, path in paths.items()}
    model = video.build_classifier(entry, name, base_weights(entry.get("base", video.DEFAULT_BASE)))
    for stream, backbone in video.stream_backbones(model, modality).items():
        apply_delta(backbone, deltas[stream])
    model.get_layer("head").load_weights(str(head))
    return model


def load(name, weights="auto"):
    """Returns the Keras model of zoo entry `name` with its verified published weights.

    A "video_classifier" entry is rebuilt from its base backbone entry, its verified deltas
    and its head's weights (see the module docstring); a tampered file is refused before
    anything is built.

    Args:
        name: str, a zoo entry name (see `list()`).
        weights: "auto" for the published weights (error if not published), None
            for the untrained architecture, or a path to a `.weights.h5` file (of the
            whole model).

    Returns:
        A `keras.Model`. Its `zoo_entry` attribute holds the manifest entry.

    Example:

    >>> model = reslstm_tf.zoo.load("skateboard_frozen_lstm3")
    >>> reslstm_tf.zoo.load("hmdb51_res3")  # raises WeightsNotPublishedError
    """
    entry = info(name)
    if weights not in ("auto", None) and not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be 'auto', None or a path. Received: weights={weights!r}")
    if entry["architecture"]["kind"] == "backbone":
        model = I3D(
            final_endpoint="Logits",
            weights=base_weights(name) if weights == "auto" else weights,
            name=name,
        )
    elif entry["architecture"]["kind"] == video.KIND and weights == "auto":
        model = _load_video_classifier(name, entry)
    else:
        model = build(name)
        if weights == "auto":
            model.load_weights(str(weights_path(name)))
        elif weights is not None:
            path = pathlib.Path(weights)
            if not path.is_file():
                raise FileNotFoundError(f"weights file {path} does not exist")
            model.load_weights(str(path))
    model.zoo_entry = entry
    return model


def publish_video_classifier(classifier, name, entry, base=None, *args, **kwargs):
    """`publishing.publish_video_classifier` with the zoo's base weights (see there)."""
    return publishing.publish_video_classifier(
        classifier, name, entry, base, *args, base_weights=base_weights, **kwargs
    )


publish = publishing.publish
publish_files = publishing.publish_files
weights_file_name = publishing.weights_file_name
