"""The model zoo: named, verified models from the manifest in `zoo/manifest.json`.

Entries are named `<dataset>_<arch>`: `hmdb51_res3`, `ucf101_lstm2`,
`hmdb51_twostream_res3`, `kinetics400_i3d`, ... Each records its architecture
preset, the backbone and feature spec its head expects, its class names, the
location and sha256 of its weights, and metrics with the command that produced
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

import contextlib
import copy
import difflib
import json
import os
import pathlib
import re
import tempfile

from reslstm_tf import files as cache
from reslstm_tf import runs
from reslstm_tf.assets import asset_path
from reslstm_tf.backbones.delta import apply_delta, compute_delta, load_delta
from reslstm_tf.backbones.i3d import I3D
from reslstm_tf.checks import check_choice
from reslstm_tf.clip_spec import ClipSpec
from reslstm_tf.faults import fault_point
from reslstm_tf.models import build_model, load_model
from reslstm_tf.zoo import names, video
from reslstm_tf.zoo.fetch import DOWNLOAD_MARGIN as DOWNLOAD_MARGIN
from reslstm_tf.zoo.fetch import MAX_DOWNLOAD_BYTES as MAX_DOWNLOAD_BYTES
from reslstm_tf.zoo.fetch import MIRROR_ENV as MIRROR_ENV
from reslstm_tf.zoo.fetch import DownloadTooLargeError as DownloadTooLargeError
from reslstm_tf.zoo.fetch import WeightsUnavailableError as WeightsUnavailableError
from reslstm_tf.zoo.fetch import check_plain_name, verified_file

MANIFEST_ENV = "RESLSTM_ZOO_MANIFEST"
FORMAT_VERSION = 1
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


def default_manifest_path():
    """Returns the path of the packaged manifest, `zoo/manifest.json`."""
    return asset_path("zoo", "manifest.json")


def _read_manifest(path):
    path = pathlib.Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"zoo manifest {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"zoo manifest {path} is not valid JSON: {error}") from None
    if manifest.get("format_version") != FORMAT_VERSION or "entries" not in manifest:
        raise ValueError(
            f"zoo manifest {path} has format_version={manifest.get('format_version')!r}; "
            f"expected {FORMAT_VERSION} with an 'entries' mapping"
        )
    for name, entry in manifest["entries"].items():
        check_plain_name(f"zoo manifest {path}: entry name", name)
        entry["_manifest_dir"] = str(path.parent)
    return manifest["entries"]


def _all_entries():
    entries = _read_manifest(default_manifest_path())
    for extra in filter(None, os.environ.get(MANIFEST_ENV, "").split(os.pathsep)):
        entries.update(_read_manifest(extra))
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
    """Reads a class list (one name per line) from `data/` or beside a manifest."""
    candidates = []
    if manifest_dir:
        candidates.append(pathlib.Path(manifest_dir) / file_name)
    try:
        candidates.append(asset_path("data", file_name))
    except FileNotFoundError:
        pass
    for path in candidates:
        if path.is_file():
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            return [n for n in names if n]
    raise FileNotFoundError(f"class list {file_name!r} not found in {candidates}")


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


def weights_file_name(name, sha256):
    """The content-addressed weights file name of entry `name`: `<name>-<sha256[:8]>.weights.h5`."""
    return f"{name}-{sha256[:8]}.weights.h5"


def _save_weights(model, name, weights_dir, dtype="float32"):
    """Saves `model`'s weights under their content-addressed name in `weights_dir`; returns it.

    The weights are written to a temporary file (Keras needs the `.weights.h5` suffix),
    stored as float16 if asked, flushed to disk, then renamed: the final name only ever
    holds complete weights.
    """
    check_choice("dtype", dtype, ("float32", "float16"))
    weights_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=weights_dir, prefix=f".{name}.", suffix=".partial.weights.h5")
    # mkstemp makes 0600 files and h5py writes into the file it is given: published weights
    # get the mode the umask gives a new file, as every other file the project writes.
    os.fchmod(fd, cache.file_mode(weights_dir / f"{name}.new.weights.h5"))
    os.close(fd)
    try:
        model.save_weights(tmp)
        if dtype == "float16":
            video.weights_as_float16(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        target = weights_dir / weights_file_name(name, cache.sha256_of(tmp))
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return target


def _file_record(path, **extra):
    return {
        "file": path.name,
        "sha256": cache.sha256_of(path),
        "bytes": path.stat().st_size,
        **extra,
    }


def _files_of(entry):
    """The names of the weights and delta files an entry references."""
    records = [(entry or {}).get("weights"), *((entry or {}).get("deltas") or {}).values()]
    return {r["file"] for r in records if isinstance(r, dict) and "file" in r}


def _remove_unreferenced(manifest, name, weights_dir, previous=()):
    """Deletes `name`'s files that no entry references any more.

    Its own (and the temporary leftovers of a crash), and those its previous version
    referenced (e.g. a delta file it shared with another entry).
    """
    referenced = set().union(*map(_files_of, manifest["entries"].values()))
    n = re.escape(name)
    ours = re.compile(
        rf"{n}(-[0-9a-f]{{8}})?\.weights\.h5|\.{n}\..*\.partial\.weights\.h5"
        rf"|\.?{n}-(rgb|flow)-delta-[0-9a-f]{{8}}\.npz(\..*\.tmp)?"
    )
    for path in weights_dir.iterdir():
        ours_or_was = ours.fullmatch(path.name) or path.name in previous
        if ours_or_was and path.name not in referenced and path.is_file():
            path.unlink()


def _open_manifest(manifest_path, weights_dir):
    """(manifest path, manifest dict, weights folder) of a publication."""
    manifest_path = pathlib.Path(manifest_path or default_manifest_path())
    manifest = (
        json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest_path.exists()
        else {"format_version": FORMAT_VERSION, "entries": {}}
    )
    return manifest_path, manifest, pathlib.Path(weights_dir or manifest_path.parent)


def _record_entry(manifest_path, manifest, name, entry):
    """Records `entry` in the manifest file (replaced atomically); returns the old one's files."""
    previous = _files_of(manifest["entries"].get(name))
    manifest["entries"][name] = entry
    manifest["entries"] = dict(sorted(manifest["entries"].items()))
    with cache.atomic_write(manifest_path, "w") as handle:
        handle.write(json.dumps(manifest, indent=2) + "\n")
    return previous


def _clean(entry):
    return {k: copy.deepcopy(v) for k, v in entry.items() if not k.startswith("_") and k != "name"}


def publish(model, name, entry, manifest_path=None, weights_dir=None, url=None):
    """Saves `model`'s weights as `<name>-<sha256[:8]>.weights.h5`, then records the entry.

    The steps are ordered so a crash at any point leaves an entry that loads: the new
    weights are written under their own content-addressed name (the old file untouched),
    then the manifest is replaced atomically, then the entry's weights files that no entry
    references any more (the old ones, leftovers of a crash) are deleted.

    Args:
        model: the trained Keras model.
        name: str, the entry name, `<dataset>_<arch>` (a plain name, see `check_plain_name`).
        entry: dict, the manifest entry without `weights` (description, dataset,
            architecture, features, metrics with the command that produced them,
            license). `build(name)` must be able to rebuild the model from it.
        manifest_path: the manifest to update; defaults to the packaged one.
        weights_dir: where to write the weights; defaults to the manifest's folder
            (weights shipped with the manifest).
        url: optional download location recorded in the entry.

    Returns:
        The updated entry, with `weights` = {file, sha256, bytes[, url]}.
    """
    check_plain_name("the entry name", name)
    manifest_path, manifest, weights_dir = _open_manifest(manifest_path, weights_dir)
    target = _save_weights(model, name, weights_dir)
    fault_point("publish_weights_written")
    entry = _clean(entry)
    entry["weights"] = _file_record(target, **({"url": url} if url else {}))
    previous = _record_entry(manifest_path, manifest, name, entry)
    fault_point("publish_manifest_written")
    _remove_unreferenced(manifest, name, weights_dir, previous)
    return entry


def publish_video_classifier(
    classifier, name, entry, base=None, manifest_path=None, weights_dir=None, dtype="float16"
):
    """Publishes a fine-tuned video classifier as deltas over a backbone entry and its head.

    Each stream's I3D is compared with a fresh build of the entry's architecture on the
    base's weights: the variables fine-tuning changed are written as an int8 delta
    (`<name>-<stream>-delta-<sha256[:8]>.npz`, shared with any entry holding the same
    delta), the head's weights as `<name>-<sha256[:8]>.weights.h5` in `dtype`; then the
    manifest is replaced atomically and the files no entry references are deleted (the
    crash-safe order of `publish`). The fresh build also checks that the entry rebuilds the
    classifier.

    Args:
        classifier: the trained `build_video_classifier` model.
        name: str, the entry name (a plain name).
        entry: dict, the manifest entry without `weights` and `deltas`: description,
            dataset, metrics, license, `architecture` (kind "video_classifier"; the format
            is in `reslstm_tf.zoo.video`) and optionally `features` (how videos are read;
            the fine-tuning defaults are filled in).
        base: the backbone entry the deltas are taken against; default the entry's `base`,
            else "kinetics400_i3d".
        manifest_path: the manifest to update; defaults to the packaged one.
        weights_dir: where to write the files; defaults to the manifest's folder.
        dtype: "float16" (default, half the bytes) or "float32", the head's stored weights.

    Returns:
        The published entry.

    Raises:
        ValueError: the entry does not rebuild the classifier (input shapes, or the first head
            or I3D variable that differs), or the classifier's I3D differs from the base's
            before `trainable_from` (it was not fine-tuned from that base); nothing is written.

    Example:

    >>> entry = {"description": "...", "dataset": {...}, "architecture": {
    ...     "kind": "video_classifier", "modality": "rgb", "backbone": "i3d", "preset": "res3",
    ...     "num_segments": 8, "segment_len": 16, "frame_size": 224,
    ...     "trainable_from": "Mixed_5b"}, "metrics": [...], "license": "..."}
    >>> reslstm_tf.zoo.publish_video_classifier(result.classifier, "hmdb51_i3d_res3", entry)
    """
    check_plain_name("the entry name", name)
    check_choice("dtype", dtype, ("float16", "float32"))
    entry = _clean(entry)
    if (entry.get("architecture") or {}).get("kind") != video.KIND:
        raise ValueError(
            f"entry['architecture']['kind'] must be {video.KIND!r} to publish {name!r}"
        )
    base = base or entry.get("base") or video.DEFAULT_BASE
    manifest_path, manifest, weights_dir = _open_manifest(manifest_path, weights_dir)
    rebuilt = video.build_classifier(entry, name, base_weights(base))
    video.check_rebuilds(name, rebuilt, classifier)
    modality = entry["architecture"]["modality"]
    fresh = video.stream_backbones(rebuilt, modality)
    trainable_from = entry["architecture"].get("trainable_from", "Mixed_4f")
    deltas = {}
    for stream, backbone in video.stream_backbones(classifier, modality).items():
        deltas[stream] = compute_delta(backbone, fresh[stream])
        video.check_fine_tuned_from(name, stream, deltas[stream], trainable_from, base)
    for stream, delta in deltas.items():  # checked: now written
        deltas[stream] = video.write_delta(delta, name, stream, manifest["entries"], weights_dir)
    head = _save_weights(classifier.get_layer("head"), name, weights_dir, dtype)
    rebuilt.get_layer("head").load_weights(str(head))  # the entry's head takes them
    fault_point("publish_weights_written")
    entry.update(base=base, deltas=deltas, features=video.clip_features(entry))
    entry["weights"] = _file_record(head, dtype=dtype)
    previous = _record_entry(manifest_path, manifest, name, entry)
    fault_point("publish_manifest_written")
    _remove_unreferenced(manifest, name, weights_dir, previous)
    return entry


def format_list(published_only=False):
    """Returns the zoo as a table, one row per entry (see `reslstm_tf.zoo.table`)."""
    from reslstm_tf.zoo import table

    return table.format_list(published_only=published_only)


def publish_files(
    model_path, name, entry_json, manifest=None, weights_dir=None, url=None, model_dir=None
):
    """Publishes a `.keras` model with the entry in a JSON file; see `publish`.

    Args:
        model_path: a `.keras` model; with `model_dir`, defaults to `model_dir/model.keras`.
        name: str, the entry name.
        entry_json: path of a JSON file with the entry (without `weights`).
        manifest, weights_dir, url: as in `publish`.
        model_dir: optional `reslstm-train` model_dir: the metrics of every
            `model_dir/eval_*/metrics.json` (written by `reslstm-eval`) are appended to the
            entry's metrics.

    Returns:
        The published entry.
    """
    check_plain_name("the entry name", name)
    with open(entry_json, encoding="utf-8") as handle:
        entry = json.load(handle)
    if model_dir is not None:
        run = runs.RunDir(model_dir)
        model_path = model_path or run.model_file
        if not pathlib.Path(model_path).is_file():
            raise FileNotFoundError(
                f"{model_path} not found: is {model_dir} a reslstm-train model_dir?"
            )
        _check_entry_features(name, entry, run.feature_spec())
        for split, metrics in sorted(run.metrics().items()):
            metrics = dict(metrics, source=f"reslstm-eval, split {split}")
            entry.setdefault("metrics", []).append(metrics)
    return publish(load_model(model_path), name, entry, manifest, weights_dir, url)


# A flow stream initialised from the RGB weights was extracted with the 'kinetics400' I3D.
_ENTRY_WEIGHTS = {"kinetics400_rgb_cross_modality": "kinetics400"}


def _check_entry_features(name, entry, trained):
    """Refuses an entry whose declared features differ from those its run trained on.

    Serving (`serve_video`, `predict_video`) cuts and embeds videos as the entry declares,
    so the declaration must be what the head was trained on.
    """
    declared = entry.get("features") or {}
    for stream, expected in trained.items():
        record = declared.get(stream)
        if not isinstance(record, dict):
            continue
        spec = ClipSpec.from_record(record)
        weights = _ENTRY_WEIGHTS.get(spec.backbone_weights, spec.backbone_weights)
        runs.check_feature_spec(
            expected,
            runs.feature_spec({**record, **spec.to_dict(), "weights": weights}),
            f"zoo entry {name!r} ({stream} features)",
            fix="declare the features the run was trained on in the entry",
        )
