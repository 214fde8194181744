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
"""

import copy
import difflib
import json
import os
import pathlib
import shutil
import urllib.error
import urllib.parse
import urllib.request

from reslstm_tf import files as cache
from reslstm_tf.assets import asset_path
from reslstm_tf.backbones.i3d import I3D
from reslstm_tf.models import build_model, load_model

MANIFEST_ENV = "RESLSTM_ZOO_MANIFEST"
MIRROR_ENV = "RESLSTM_ZOO_URL"
FORMAT_VERSION = 1
_HEAD_KINDS = ("single_stream", "two_stream")


class WeightsNotPublishedError(RuntimeError):
    """The zoo entry exists but has no published weights."""


class WeightsUnavailableError(RuntimeError):
    """The weights are published but neither cached nor reachable."""


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
    for entry in manifest["entries"].values():
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
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown zoo entry {name!r}.{hint} reslstm_tf.zoo.list() gives all "
            f"{len(entries)} entries."
        )
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


def _download(url, destination, expected_sha256):
    """Downloads `url` (http(s) or file://) atomically to `destination` and verifies it."""
    tmp = cache.atomic_path(destination)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
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
    shipped = pathlib.Path(entry["_manifest_dir"]) / weights["file"]
    if shipped.is_file():
        cache.verify_sha256(shipped, expected)
        return shipped
    cached = cache.cache_dir("zoo") / weights["file"]
    if cached.is_file():
        try:
            cache.verify_sha256(cached, expected)
            return cached
        except cache.ChecksumError:
            cached.unlink()  # A corrupt or tampered cache entry is refused and refetched.
    errors = []
    for url in _candidate_urls(weights):
        try:
            _download(url, cached, expected)
            return cached
        except (urllib.error.URLError, OSError, cache.ChecksumError) as error:
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


def publish(model, name, entry, manifest_path=None, weights_dir=None, url=None):
    """Saves `model`'s weights as `<name>.weights.h5` and writes its entry into a manifest.

    Args:
        model: the trained Keras model.
        name: str, the entry name, `<dataset>_<arch>`.
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
    manifest_path = pathlib.Path(manifest_path or default_manifest_path())
    manifest = (
        json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest_path.exists()
        else {"format_version": FORMAT_VERSION, "entries": {}}
    )
    weights_dir = pathlib.Path(weights_dir or manifest_path.parent)
    file_name = f"{name}.weights.h5"
    target = weights_dir / file_name
    weights_dir.mkdir(parents=True, exist_ok=True)
    tmp = weights_dir / f".{name}.partial.weights.h5"  # Keras needs the .weights.h5 suffix.
    try:
        model.save_weights(str(tmp))
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    weights = {"file": file_name, "sha256": cache.sha256_of(target), "bytes": target.stat().st_size}
    if url:
        weights["url"] = url
    entry = {k: v for k, v in entry.items() if not k.startswith("_") and k != "name"}
    entry["weights"] = weights
    manifest["entries"][name] = entry
    manifest["entries"] = dict(sorted(manifest["entries"].items()))
    with cache.atomic_write(manifest_path, "w") as handle:
        handle.write(json.dumps(manifest, indent=2) + "\n")
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
    with open(entry_json, encoding="utf-8") as handle:
        entry = json.load(handle)
    if model_dir is not None:
        model_dir = pathlib.Path(model_dir)
        model_path = model_path or model_dir / "model.keras"
        if not pathlib.Path(model_path).is_file():
            raise FileNotFoundError(
                f"{model_path} not found: is {model_dir} a reslstm-train model_dir?"
            )
        for metrics_file in sorted(model_dir.glob("eval_*/metrics.json")):
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
            metrics["source"] = f"reslstm-eval, split {metrics_file.parent.name[len('eval_') :]}"
            entry.setdefault("metrics", []).append(metrics)
    return publish(load_model(model_path), name, entry, manifest, weights_dir, url)
