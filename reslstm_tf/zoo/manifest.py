"""Reading a zoo manifest as untrusted input, and changing one as a locked transaction.

`read` checks a manifest before anything uses it: the file's size before it is parsed
(`MAX_MANIFEST_BYTES`), then a schema with bounds (entry count, class count, file sizes,
sha256 form), so a malformed or hostile manifest is refused in one line naming the file,
the entry and the field, never with a traceback or after building a huge model.

`transaction` is the read-modify-write of `publish`: an exclusive `flock` on the manifest's
folder is held from the read to the cleanup after the write, so two publishers into one
manifest run one after the other and neither loses the other's entry. The lock is on the
folder itself (no lock file is left beside the manifest); the operating system drops it
when the holder exits or is killed.

Class lists are contained like weights files: a plain file name, beside the manifest
(resolving inside its folder) or in the package's `data/`.
"""

import contextlib
import json
import os
import pathlib
import re

from reslstm_tf.assets import asset_path
from reslstm_tf.zoo.fetch import MAX_FILE_BYTES, check_plain_name, path_inside

FORMAT_VERSION = 1
# The packaged manifest is 60 KB; a lab's with thousands of entries stays far below this.
MAX_MANIFEST_BYTES = 8 << 20
MAX_ENTRIES = 10_000
# Kinetics-700 has 700 classes, ImageNet-21k 21,841.
MAX_CLASSES = 100_000
MAX_CLASS_FILE_BYTES = 8 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


def default_manifest_path():
    """Returns the path of the packaged manifest, `zoo/manifest.json`."""
    return asset_path("zoo", "manifest.json")


class ManifestError(ValueError):
    """A zoo manifest is malformed or out of bounds (a one-line message)."""


def _load(path):
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FileNotFoundError(f"zoo manifest {path} does not exist") from None
    if size > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"zoo manifest {path} is {size} bytes, over the {MAX_MANIFEST_BYTES} allowed"
        )
    with open(path, "rb") as handle:
        data = handle.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"zoo manifest {path} grew over the {MAX_MANIFEST_BYTES} allowed")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ManifestError(f"zoo manifest {path} is not UTF-8 text: {error}") from None
    except json.JSONDecodeError as error:
        raise ManifestError(f"zoo manifest {path} is not valid JSON: {error}") from None
    except RecursionError:
        raise ManifestError(f"zoo manifest {path} is nested too deeply to be a manifest") from None


def _is_int(value, low, high):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_file_record(where, record):
    """Refuses a file record ({"file", "sha256"[, "bytes", "url"]}) that is not well formed."""
    if not isinstance(record, dict):
        raise ManifestError(f"{where} must be an object. Received: {type(record).__name__}")
    check_plain_name(f"{where}: file", record.get("file"))
    if not isinstance(record.get("sha256"), str) or not _SHA256.fullmatch(record["sha256"]):
        raise ManifestError(
            f"{where}: sha256 must be 64 lowercase hex digits. Received: {record.get('sha256')!r}"
        )
    if "bytes" in record and not _is_int(record["bytes"], 1, MAX_FILE_BYTES):
        raise ManifestError(
            f"{where}: bytes must be an integer in [1, {MAX_FILE_BYTES}]. "
            f"Received: {record['bytes']!r}"
        )
    if "url" in record and not isinstance(record["url"], str):
        raise ManifestError(f"{where}: url must be a string. Received: {record['url']!r}")


def check_entry(where, entry):
    """Refuses an entry without its required fields or with fields out of bounds."""
    if not isinstance(entry, dict):
        raise ManifestError(f"{where} must be an object. Received: {type(entry).__name__}")
    for key in ("architecture", "dataset"):
        if not isinstance(entry.get(key), dict):
            raise ManifestError(f"{where} needs an object {key!r}")
    if not isinstance(entry["architecture"].get("kind"), str):
        raise ManifestError(f"{where}: architecture needs a 'kind' string")
    dataset = entry["dataset"]
    if not _is_int(dataset.get("num_classes"), 1, MAX_CLASSES):
        raise ManifestError(
            f"{where}: dataset.num_classes must be an integer in [1, {MAX_CLASSES}]. "
            f"Received: {dataset.get('num_classes')!r}"
        )
    check_plain_name(f"{where}: dataset.classes", dataset.get("classes"))
    weights = entry.get("weights")
    if weights is not None and not isinstance(weights, dict):
        raise ManifestError(f"{where}: weights must be an object or null")
    if weights and "file" in weights:
        check_file_record(f"{where}: weights", weights)
    deltas = entry.get("deltas") or {}
    if not isinstance(deltas, dict) or len(deltas) > 2:
        raise ManifestError(f"{where}: deltas must be an object with at most 2 streams")
    for stream, record in deltas.items():
        check_file_record(f"{where}: deltas.{stream}", record)


def check(path, manifest):
    """Returns the entries of a parsed manifest, each checked; raises `ManifestError`."""
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        found = manifest.get("format_version") if isinstance(manifest, dict) else manifest
        raise ManifestError(
            f"zoo manifest {path} has format_version={str(found)[:40]!r}; "
            f"expected {FORMAT_VERSION} with an 'entries' mapping"
        )
    entries = manifest.get("entries")
    if not isinstance(entries, dict):
        raise ManifestError(f"zoo manifest {path}: 'entries' must be an object of entries")
    if len(entries) > MAX_ENTRIES:
        raise ManifestError(
            f"zoo manifest {path} has {len(entries)} entries, over the {MAX_ENTRIES} allowed"
        )
    for name, entry in entries.items():
        try:
            check_plain_name(f"zoo manifest {path}: entry name", name)
            check_entry(f"zoo manifest {path}: entry {name!r}", entry)
        except ManifestError:
            raise
        except ValueError as error:  # a plain-name refusal: one line, the manifest named
            message = str(error)
            prefix = "" if message.startswith("zoo manifest") else f"zoo manifest {path}: "
            raise ManifestError(prefix + message) from None
    return entries


def read(path):
    """Returns the checked entries of the manifest at `path`, each with `_manifest_dir`."""
    path = pathlib.Path(path)
    entries = check(path, _load(path))
    for entry in entries.values():
        entry["_manifest_dir"] = str(path.parent)
    return entries


def read_class_names(file_name, manifest_dir=None):
    """Reads a class list (one name per line) beside a manifest or from the package's `data/`.

    With `manifest_dir` (a name a manifest gives), `file_name` must be a plain name and the
    file must resolve inside the manifest's folder (links followed), as weights files do: a
    manifest cannot make a class list of any file. Without it (a file the user names, as
    `--classes`), an existing path is read as given, relative to the current directory.
    """
    if manifest_dir is None and pathlib.Path(file_name).is_file():
        return read_class_file(file_name)
    check_plain_name("class list", file_name)
    candidates = []
    if manifest_dir:
        candidates.append(path_inside(manifest_dir, file_name, "class list"))
    with contextlib.suppress(FileNotFoundError):
        candidates.append(asset_path("data", file_name))
    for path in candidates:
        if path.is_file():
            return read_class_file(path)
    raise FileNotFoundError(f"class list {file_name!r} not found in {candidates}")


def read_class_file(path):
    """The non-empty stripped lines of a class list file (at most `MAX_CLASS_FILE_BYTES`)."""
    path = pathlib.Path(path)
    if path.stat().st_size > MAX_CLASS_FILE_BYTES:
        raise ValueError(f"class list {path} is over {MAX_CLASS_FILE_BYTES} bytes")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [n for n in names if n]


@contextlib.contextmanager
def transaction(manifest_path):
    """Yields the manifest at `manifest_path` (or an empty one) with its folder locked.

    The caller changes it and writes it back with `write` inside the block; a second
    publisher into the same manifest waits at the lock, then reads what the first wrote.
    """
    import fcntl

    manifest_path = pathlib.Path(manifest_path)
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(manifest_path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if manifest_path.exists():
            manifest = _load(manifest_path)
            check(manifest_path, manifest)
        else:
            manifest = {"format_version": FORMAT_VERSION, "entries": {}}
        yield manifest
    finally:
        os.close(fd)  # releases the lock


def write(manifest_path, manifest):
    """Replaces the manifest file atomically with `manifest`, entries sorted by name."""
    from reslstm_tf import files

    manifest["entries"] = dict(sorted(manifest["entries"].items()))
    with files.atomic_write(manifest_path, "w") as handle:
        handle.write(json.dumps(manifest, indent=2) + "\n")
