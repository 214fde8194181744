"""The model zoo: named, verified models from the manifest in `zoo/manifest.json`.

Entries are named `<dataset>_<arch>`: `hmdb51_res3`, `ucf101_lstm2`,
`hmdb51_twostream_res3`, `kinetics400_i3d`, ... Each records its architecture
preset, the backbone and feature spec its head expects, its class names, the
location and sha256 of its weights, and metrics with the command that produced
them. `load` never returns random weights silently: an entry whose weights are
not published raises `WeightsNotPublishedError` saying how to produce them.

Weights are looked up, in order: next to the manifest (small weights shipped in
the wheel), in the cache (`$RESLSTM_HOME/zoo`, default
`$KERAS_HOME/reslstm_tf/zoo`), then downloaded from the entry's `url` or from
`$RESLSTM_ZOO_URL/<file>` (a mirror or a lab's own zoo; `file://` works). Every
file is sha256-verified, from the cache as after a download, and downloads are
written atomically. `$RESLSTM_ZOO_MANIFEST` adds the entries of another manifest
(a lab's own), separated by `os.pathsep`.

A manifest is not trusted further than its checksums: entry names and weights file names
must be plain names (`check_plain_name`), every path built from them must stay inside its
folder, and a download stops at the entry's declared `bytes` (plus `DOWNLOAD_MARGIN`).
Published weights are content-addressed, `<name>-<sha256[:8]>.weights.h5` as in timm, and
`publish` writes them before it replaces the manifest atomically: killed at any point
(`RESLSTM_FAULT=publish_weights_written` or `publish_manifest_written`), the entry still
loads, the old weights or the new.

Why not `keras.utils.get_file(file_hash=...)`: it checks the hash of a download, but joins
the file name to its cache folder unchecked, reads the response with no size limit, and
downloads under the final name, where a file that failed its hash check stays. The zoo needs
path containment, a size cap and atomic writes, so `_download` streams the file itself.
"""

import contextlib
import copy
import difflib
import json
import os
import pathlib
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from reslstm_tf import files as cache
from reslstm_tf import runs
from reslstm_tf.assets import asset_path
from reslstm_tf.backbones.i3d import I3D
from reslstm_tf.faults import fault_point
from reslstm_tf.models import build_model, load_model

MANIFEST_ENV = "RESLSTM_ZOO_MANIFEST"
MIRROR_ENV = "RESLSTM_ZOO_URL"
FORMAT_VERSION = 1
_HEAD_KINDS = ("single_stream", "two_stream")
# A download may exceed its entry's declared `bytes` by this much before it is refused.
DOWNLOAD_MARGIN = 64 << 10
# The cap of a download whose entry declares no size.
MAX_DOWNLOAD_BYTES = 2 << 30
_CHUNK = 1 << 20
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


class WeightsNotPublishedError(RuntimeError):
    """The zoo entry exists but has no published weights."""


class WeightsUnavailableError(RuntimeError):
    """The weights are published but neither cached nor reachable."""


class DownloadTooLargeError(ValueError):
    """A download went past the size its manifest entry declares."""


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


def check_plain_name(what, value):
    """Returns `value` if it is a plain file or entry name, else raises a ValueError.

    A plain name has no path separator, is not `.`, `..`, hidden or absolute, and uses
    letters, digits and `._+-` only, so joining it to a folder stays in that folder.
    """
    if not isinstance(value, str) or not _PLAIN_NAME.fullmatch(value) or ".." in value:
        raise ValueError(
            f"{what} must be a plain name (letters, digits, '._+-', no path, not hidden). "
            f"Received: {value!r}"
        )
    return value


def _inside(folder, file_name, what):
    """`folder/file_name`, refused unless it resolves (links followed) inside `folder`."""
    folder = pathlib.Path(folder)
    path = folder / check_plain_name(what, file_name)
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"{what} {file_name!r} resolves outside {folder}: refused")
    return path


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


def list():  # noqa: A001 - the zoo's public verb, as in timm.list_models
    """Returns the sorted names of all zoo entries."""
    return sorted(_all_entries())


def published():
    """Returns the sorted names of the entries whose weights are published."""
    return sorted(name for name, entry in _all_entries().items() if entry.get("weights"))


def info(name):
    """Returns a copy of the manifest entry `name`, or raises a ValueError suggesting one."""
    entries = _all_entries()
    if name not in entries:
        close = difflib.get_close_matches(str(name), entries, n=3, cutoff=0.5)
        raise UnknownEntryError(name, close, len(entries))
    entry = copy.deepcopy(entries[name])
    entry.pop("_manifest_dir", None)
    entry["name"] = name
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


def _copy_capped(response, out, limit, url):
    """Copies `response` into `out`; raises `DownloadTooLargeError` past `limit` bytes."""
    declared = response.headers.get("Content-Length") if response.headers else None
    if declared and declared.isdigit() and int(declared) > limit:
        raise DownloadTooLargeError(f"{url} announces {declared} bytes, over the {limit} allowed")
    copied = 0
    while chunk := response.read(min(_CHUNK, limit + 1 - copied)):
        copied += len(chunk)
        if copied > limit:
            raise DownloadTooLargeError(
                f"{url} sent more than {limit} bytes, the size its manifest entry declares "
                "plus a margin: refused and deleted"
            )
        out.write(chunk)


def _download(url, destination, expected_sha256, max_bytes=MAX_DOWNLOAD_BYTES):
    """Downloads `url` (http(s) or file://) atomically to `destination` and verifies it.

    At most `max_bytes` are read; past that the download stops with `DownloadTooLargeError`
    and, as on any failure, nothing is left behind.
    """
    tmp = cache.atomic_path(destination)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            _copy_capped(response, out, max_bytes, url)
        cache.verify_sha256(tmp, expected_sha256)
        os.replace(tmp, destination)
    finally:
        if tmp.exists():
            tmp.unlink()


def _candidate_urls(weights):
    urls = []
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        urls.append(mirror.rstrip("/") + "/" + urllib.parse.quote(weights["file"]))
    if weights.get("url"):
        urls.append(weights["url"])
    return urls


def weights_path(name):
    """Returns a local, sha256-verified path to the published weights of entry `name`."""
    entry = _all_entries()[info(name)["name"]]
    weights = entry.get("weights")
    if not weights:
        raise WeightsNotPublishedError(_not_published_message(name, entry))
    expected = weights["sha256"]
    what = f"zoo entry {name!r}: weights file"
    shipped = _inside(entry["_manifest_dir"], weights["file"], what)
    if shipped.is_file():
        cache.verify_sha256(shipped, expected)
        return shipped
    cached = _inside(cache.cache_dir("zoo"), weights["file"], what)
    declared = weights.get("bytes")
    limit = declared + DOWNLOAD_MARGIN if isinstance(declared, int) else MAX_DOWNLOAD_BYTES
    if cached.is_file():
        try:
            cache.verify_sha256(cached, expected)
            return cached
        except cache.ChecksumError:
            cached.unlink()  # A corrupt or tampered cache entry is refused and refetched.
    errors = []
    for url in _candidate_urls(weights):
        try:
            _download(url, cached, expected, limit)
            return cached
        except (urllib.error.URLError, OSError, ValueError) as error:
            errors.append(f"{url}: {error}")
    raise WeightsUnavailableError(
        f"weights {weights['file']} of zoo entry {name!r} are not cached in "
        f"{cached.parent} and could not be fetched"
        + (": " + "; ".join(errors) if errors else f" (no url; set ${MIRROR_ENV})")
    )


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
    if kind not in _HEAD_KINDS:
        raise ValueError(
            f"zoo entry {name!r} has unknown architecture kind {kind!r}; allowed: "
            f"{', '.join(map(repr, ('backbone',) + _HEAD_KINDS))}"
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


def load(name, weights="auto"):
    """Returns the Keras model of zoo entry `name` with its verified published weights.

    Args:
        name: str, a zoo entry name (see `list()`).
        weights: "auto" for the published weights (error if not published), None
            for the untrained architecture, or a path to a `.weights.h5` file.

    Returns:
        A `keras.Model`. Its `zoo_entry` attribute holds the manifest entry.

    Example:

    >>> model = reslstm_tf.zoo.load("skateboard_lstm3")
    >>> reslstm_tf.zoo.load("hmdb51_res3")  # raises WeightsNotPublishedError
    """
    entry = info(name)
    if weights not in ("auto", None) and not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be 'auto', None or a path. Received: weights={weights!r}")
    if entry["architecture"]["kind"] == "backbone":
        model = I3D(
            final_endpoint="Logits",
            weights="kinetics400" if weights == "auto" else weights,
            name=name,
        )
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


def _save_weights(model, name, weights_dir):
    """Saves `model`'s weights under their content-addressed name in `weights_dir`; returns it.

    The weights are written to a temporary file (Keras needs the `.weights.h5` suffix),
    flushed to disk, then renamed: the final name only ever holds complete weights.
    """
    weights_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=weights_dir, prefix=f".{name}.", suffix=".partial.weights.h5")
    os.close(fd)
    try:
        model.save_weights(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        target = weights_dir / weights_file_name(name, cache.sha256_of(tmp))
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return target


def _remove_unreferenced(manifest, name, weights_dir):
    """Deletes `name`'s weights files and temporary leftovers no manifest entry references."""
    referenced = {
        entry["weights"]["file"]
        for entry in manifest["entries"].values()
        if isinstance(entry.get("weights"), dict) and "file" in entry["weights"]
    }
    ours = re.compile(
        rf"{re.escape(name)}(-[0-9a-f]{{8}})?\.weights\.h5|\.{re.escape(name)}\..*\.partial\.weights\.h5"
    )
    for path in weights_dir.iterdir():
        if ours.fullmatch(path.name) and path.name not in referenced and path.is_file():
            path.unlink()


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
    manifest_path = pathlib.Path(manifest_path or default_manifest_path())
    manifest = (
        json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest_path.exists()
        else {"format_version": FORMAT_VERSION, "entries": {}}
    )
    weights_dir = pathlib.Path(weights_dir or manifest_path.parent)
    target = _save_weights(model, name, weights_dir)
    fault_point("publish_weights_written")
    weights = {"file": target.name, "sha256": cache.sha256_of(target)}
    weights["bytes"] = target.stat().st_size
    if url:
        weights["url"] = url
    entry = {k: v for k, v in entry.items() if not k.startswith("_") and k != "name"}
    entry["weights"] = weights
    manifest["entries"][name] = entry
    manifest["entries"] = dict(sorted(manifest["entries"].items()))
    with cache.atomic_write(manifest_path, "w") as handle:
        handle.write(json.dumps(manifest, indent=2) + "\n")
    fault_point("publish_manifest_written")
    _remove_unreferenced(manifest, name, weights_dir)
    return entry


def format_list():
    """Returns one line per zoo entry: its name, whether it is published, its description."""
    lines = []
    for name in list():
        entry = info(name)
        state = "published" if entry.get("weights") else "not published"
        lines.append(f"{name:28s} {state:14s} {entry.get('description', '')}")
    return "\n".join(lines)


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


# The zoo's names for a few feature-spec fields, mapped onto those extraction records.
_ENTRY_SPEC_NAMES = {"backbone_weights": "weights"}
_ENTRY_SPEC_VALUES = {"kinetics400_rgb_cross_modality": "kinetics400"}


def _check_entry_features(name, entry, trained):
    """Refuses an entry whose declared features differ from those its run trained on.

    Serving (`serve_video`, `predict_video`) cuts and embeds videos as the entry declares,
    so the declaration must be what the head was trained on.
    """
    declared = entry.get("features") or {}
    for stream, expected in trained.items():
        spec = declared.get(stream)
        if not isinstance(spec, dict):
            continue
        renamed = {_ENTRY_SPEC_NAMES.get(k, k): v for k, v in spec.items()}
        renamed = {
            k: _ENTRY_SPEC_VALUES.get(v, v) if isinstance(v, str) else v for k, v in renamed.items()
        }
        runs.check_feature_spec(
            expected,
            runs.feature_spec(renamed),
            f"zoo entry {name!r} ({stream} features)",
            fix="declare the features the run was trained on in the entry",
        )
