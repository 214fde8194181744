"""Publishing into a zoo manifest: content-addressed files, a locked, crash-safe update.

`publish` (a Keras head) and `publish_video_classifier` (deltas over a backbone entry plus a
head) run as one transaction on the manifest (`reslstm_tf.zoo.manifest.transaction`): the
manifest's folder is locked from the read to the cleanup, so two publishers into one
manifest never lose an entry. Inside it the order is crash-safe: the new files are written
under their own content-addressed names (`<name>-<sha256[:8]>.weights.h5`,
`i3d-<stream>-delta-<sha256[:8]>.npz`), then the manifest is replaced atomically, then
the files publishing wrote that no entry references any more are deleted.

What a publish deletes is narrow: only content-addressed files of publishing's own naming
whose content matches the hash in their name (or its own crash leftovers), and only when no
entry of the manifest names them. A file an old entry names that publishing did not write
(the manifest itself, a class list, anything else) is never deleted.

A model with a non-finite weight (NaN or inf) is refused before anything is written.
"""

import contextlib
import copy
import json
import os
import pathlib
import re
import tempfile

import numpy as np

from reslstm_tf import files as cache
from reslstm_tf import runs
from reslstm_tf.backbones.delta import compute_delta
from reslstm_tf.checks import check_choice
from reslstm_tf.clip_spec import ClipSpec
from reslstm_tf.faults import fault_point
from reslstm_tf.models import load_model
from reslstm_tf.zoo import manifest as manifests
from reslstm_tf.zoo import video
from reslstm_tf.zoo.fetch import check_plain_name
from reslstm_tf.zoo.manifest import default_manifest_path

# The backbone fine-tuned video classifiers are published over: their deltas are named after it.
DELTA_OWNER = "i3d"
# A file publishing writes: `<name>-<sha8>.weights.h5` or `i3d-<stream>-delta-<sha8>.npz`.
_CONTENT_ADDRESSED = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._+-]*?-(?:(?:rgb|flow)-delta-)?([0-9a-f]{8})\.(?:weights\.h5|npz)"
)


def _fault(point):
    """`reslstm_tf.faults.fault_point`, looked up at call time (tests stand in for it)."""
    fault_point(point)


def check_finite(model, name):
    """Refuses a model with a non-finite weight, naming the first such variable."""
    for variable in model.weights:
        value = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            bad = int(np.size(value) - np.isfinite(value).sum())
            raise ValueError(
                f"refusing to publish {name!r}: variable {getattr(variable, 'path', variable.name)}"
                f" holds {bad} non-finite values (NaN or inf); the training diverged"
            )


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


def _written_by_publish(path):
    """True if `path` is a content-addressed file of publishing whose content matches its name."""
    match = _CONTENT_ADDRESSED.fullmatch(path.name)
    return bool(match) and path.is_file() and cache.sha256_of(path).startswith(match.group(1))


def _remove_unreferenced(manifest, name, weights_dir, previous=()):
    """Deletes the files publishing wrote for `name` that no entry references any more.

    Its own crash leftovers and content-addressed files, and the content-addressed files its
    previous version referenced (e.g. a delta file it shared with another entry). A file
    that is not one publishing writes (whatever an old entry named) is never deleted.
    """
    referenced = set().union(*map(_files_of, manifest["entries"].values()))
    n = re.escape(name)
    leftover = re.compile(
        rf"\.{n}\..*\.partial\.weights\.h5|\.{DELTA_OWNER}-(rgb|flow)-delta-[0-9a-f]{{8}}\.npz\..*\.tmp"
    )
    # Its own weights (and deltas named after it by earlier releases), and the backbone's
    # deltas: shared by name, so one no entry references is a crashed publication's.
    ours = re.compile(
        rf"(?:{n}-(?:(?:rgb|flow)-delta-)?|{DELTA_OWNER}-(?:rgb|flow)-delta-)[0-9a-f]{{8}}"
        r"\.(?:weights\.h5|npz)"
    )
    for path in weights_dir.iterdir():
        if path.name in referenced or path.is_symlink() or not path.is_file():
            continue
        if leftover.fullmatch(path.name):
            path.unlink()
        elif (ours.fullmatch(path.name) or path.name in previous) and _written_by_publish(path):
            path.unlink()


def _paths(manifest_path, weights_dir):
    """(manifest path, weights folder) of a publication."""
    manifest_path = pathlib.Path(manifest_path or default_manifest_path())
    return manifest_path, pathlib.Path(weights_dir or manifest_path.parent)


def check_name_free(manifest, name):
    """Refuses a publication that would change what a published name loads.

    A tagged name (`<architecture>.<tag>`) is immutable once it has weights: it is never
    published again. A bare name that is an alias is moved by recording the alias change,
    never shadowed by an entry of that name. Checked before anything is written.

    Raises:
        ValueError: naming the tag or alias and what to do instead.
    """
    from reslstm_tf.zoo import names

    aliases = manifest.get(names.ALIASES_KEY) or {}
    if name in aliases:
        raise ValueError(
            f"{name!r} is an alias of {aliases[name]['target']!r}: publish the new model under a "
            f"tagged name ('{name}.<tag>') and record the alias change"
        )
    if names.is_tagged(name) and _files_of(manifest["entries"].get(name)):
        raise ValueError(
            f"{name!r} is a published tag and tags never change what they load; publish the "
            f"new model under another tag ('{names.split(name)[0]}.<new tag>')"
        )


def free_name(name, manifest_path=None):
    """`name`, or the first of `name2`, `name3`, ... the manifest lets a new model take
    (`name_2`, ... after a name ending in a digit).

    For a publisher that names its model by recipe (`reslstm-study`): a rerun selecting the
    same recipe gets a new tag instead of a refusal. Read under the manifest's lock; the
    publication itself checks again (`check_name_free`).
    """
    with manifests.transaction(_paths(manifest_path, None)[0]) as manifest:
        separator = "_" if name[-1:].isdigit() else ""
        candidate, number = name, 1
        while True:
            try:
                check_name_free(manifest, candidate)
                return candidate
            except ValueError:
                number += 1
                candidate = f"{name}{separator}{number}"


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
    entry = _clean(entry)
    manifests.check_entry(f"zoo entry {name!r}", entry)
    check_finite(model, name)
    manifest_path, weights_dir = _paths(manifest_path, weights_dir)
    with manifests.transaction(manifest_path) as manifest:
        check_name_free(manifest, name)
        target = _save_weights(model, name, weights_dir)
        _fault("publish_weights_written")
        entry["weights"] = _file_record(target, **({"url": url} if url else {}))
        previous = _record_entry(manifest_path, manifest, name, entry)
        _fault("publish_manifest_written")
        _remove_unreferenced(manifest, name, weights_dir, previous)
    return entry


def publish_video_classifier(
    classifier,
    name,
    entry,
    base=None,
    manifest_path=None,
    weights_dir=None,
    dtype="float16",
    *,
    base_weights,
):
    """Publishes a fine-tuned video classifier as deltas over a backbone entry and its head.

    Each stream's I3D is compared with a fresh build of the entry's architecture on the
    base's weights: the variables fine-tuning changed are written as an int8 delta
    (`i3d-<stream>-delta-<sha256[:8]>.npz`, shared with any entry holding the same
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
        base_weights: the function giving a base entry's I3D weights (`zoo.base_weights`;
            `reslstm_tf.zoo.publish_video_classifier` passes it).

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
    manifests.check_entry(f"zoo entry {name!r}", entry)
    check_finite(classifier, name)
    manifest_path, weights_dir = _paths(manifest_path, weights_dir)
    rebuilt = video.build_classifier(entry, name, base_weights(base))
    video.check_rebuilds(name, rebuilt, classifier)
    modality = entry["architecture"]["modality"]
    fresh = video.stream_backbones(rebuilt, modality)
    trainable_from = entry["architecture"].get("trainable_from", "Mixed_4f")
    deltas = {}
    for stream, backbone in video.stream_backbones(classifier, modality).items():
        deltas[stream] = compute_delta(backbone, fresh[stream])
        video.check_fine_tuned_from(name, stream, deltas[stream], trainable_from, base)
    with manifests.transaction(manifest_path) as manifest:
        check_name_free(manifest, name)
        for stream, delta in deltas.items():  # checked: now written
            deltas[stream] = video.write_delta(
                delta, DELTA_OWNER, stream, manifest["entries"], weights_dir
            )
        head = _save_weights(classifier.get_layer("head"), name, weights_dir, dtype)
        rebuilt.get_layer("head").load_weights(str(head))  # the entry's head takes them
        _fault("publish_weights_written")
        entry.update(base=base, deltas=deltas, features=video.clip_features(entry))
        entry["weights"] = _file_record(head, dtype=dtype)
        previous = _record_entry(manifest_path, manifest, name, entry)
        _fault("publish_manifest_written")
        _remove_unreferenced(manifest, name, weights_dir, previous)
    return entry


def move_alias(alias, target, why, manifest_path=None, date=None, version=None):
    """Points an alias at a published entry, appending the change to the alias's history.

    The only way an alias changes: its record in the manifest's `aliases` table gets a new
    `target` and one more `history` record (target, date, version, why); entries and their
    files are not touched. Run in the manifest's transaction (locked, replaced atomically).

    Args:
        alias: the bare name (`skateboard_lstm3`); not the name of an entry.
        target: the entry it will stand for (a tagged name with weights).
        why: the reason recorded in the history.
        manifest_path: the manifest; defaults to the packaged one.
        date: ISO date of the change (default today); version: the package's (default).

    Returns:
        The alias's new record.

    Raises:
        ValueError: the alias names an entry, the target is no entry, or the alias already
            points at the target.
    """
    import datetime
    import importlib.metadata

    from reslstm_tf.zoo import names

    check_plain_name("the alias", alias)
    manifest_path, _ = _paths(manifest_path, None)
    with manifests.transaction(manifest_path) as manifest:
        if alias in manifest["entries"]:
            raise ValueError(f"{alias!r} is an entry, not an alias: entries are never renamed")
        if target not in manifest["entries"]:
            raise ValueError(f"alias {alias!r} cannot point at {target!r}: no such entry")
        table = manifest.setdefault(names.ALIASES_KEY, {})
        record = table.get(alias) or {"target": None, "history": []}
        if record["target"] == target:
            raise ValueError(f"alias {alias!r} already points at {target!r}")
        version = version or importlib.metadata.version("reslstm_tf")
        date = date or datetime.date.today().isoformat()
        change = {"target": target, "date": date, "version": version, "why": why}
        record = {"target": target, "history": [*record["history"], change]}
        table[alias] = record
        manifest[names.ALIASES_KEY] = dict(sorted(table.items()))
        names.check_aliases(manifest[names.ALIASES_KEY], f"zoo manifest {manifest_path}")
        manifests.write(manifest_path, manifest)
    return record


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
