"""Where a zoo file comes from, and why it can be trusted: plain names, capped, verified fetches.

A published file (weights, a delta) is looked up, in order: next to its manifest (small
files shipped in the wheel), in the cache (`$RESLSTM_HOME/zoo`, default
`$KERAS_HOME/reslstm_tf/zoo`), then downloaded from its record's `url` or from
`$RESLSTM_ZOO_URL/<file>` (a mirror or a lab's own zoo; `file://` works). Every file is
sha256-verified, from the cache as after a download, and downloads are written atomically.

The cache is content-addressed: a file is cached as `<sha256>-<file>`, the sha256 its record
declares, so an entry can only ever read, or delete on a mismatch, the file of its own hash;
an entry naming another entry's file with a wrong hash never touches that file. (A file
cached under its plain name by an older version is still used when it verifies, and never
deleted.)

Sizes are bounded: a record's `bytes` must be in [1, `MAX_FILE_BYTES`] (1 GiB; the largest
zoo file is 50 MB), a download reads fixed-size chunks and stops at the declared size plus
`DOWNLOAD_MARGIN`, and no download ever goes past `MAX_DOWNLOAD_BYTES`. A download is
written to `.<name>.<random>.partial`, which its process holds an `flock` on; a later fetch
deletes the partial files whose lock is free (their process died, e.g. killed mid-download).

A manifest is not trusted further than its checksums: entry names and file names must be
plain names (`check_plain_name`), every path built from them must stay inside its folder,
and a download stops at the record's declared `bytes` (plus `DOWNLOAD_MARGIN`).

Why not `keras.utils.get_file(file_hash=...)`: it checks the hash of a download, but joins
the file name to its cache folder unchecked, reads the response with no size limit, and
downloads under the final name, where a file that failed its hash check stays. The zoo needs
path containment, a size cap and atomic writes, so `download` streams the file itself.
"""

import contextlib
import os
import pathlib
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from reslstm_tf import files as cache
from reslstm_tf.faults import fault_point

MIRROR_ENV = "RESLSTM_ZOO_URL"
# A download may exceed its record's declared `bytes` by this much before it is refused.
DOWNLOAD_MARGIN = 64 << 10
# The largest zoo file a record may declare, and the cap of one that declares no size.
MAX_FILE_BYTES = 1 << 30
# The hard ceiling of any download, whatever its caller asks for.
MAX_DOWNLOAD_BYTES = 4 << 30
_CHUNK = 1 << 20
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


class WeightsUnavailableError(RuntimeError):
    """The weights are published but neither cached nor reachable."""


class DownloadTooLargeError(ValueError):
    """A download went past the size its manifest entry declares."""


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


def path_inside(folder, file_name, what):
    """`folder/file_name`, refused unless it resolves (links followed) inside `folder`."""
    folder = pathlib.Path(folder)
    path = folder / check_plain_name(what, file_name)
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"{what} {file_name!r} resolves outside {folder}: refused")
    return path


def _copy_capped(response, out, limit, url):
    """Copies `response` into `out` in fixed-size chunks; raises past `limit` bytes."""
    declared = response.headers.get("Content-Length") if response.headers else None
    if declared and declared.isdigit() and int(declared) > limit:
        raise DownloadTooLargeError(f"{url} announces {declared} bytes, over the {limit} allowed")
    copied = 0
    while chunk := response.read(max(1, min(_CHUNK, limit + 1 - copied))):
        copied += len(chunk)
        if copied > limit:
            raise DownloadTooLargeError(
                f"{url} sent more than {limit} bytes, the size its manifest entry declares "
                "plus a margin: refused and deleted"
            )
        out.write(chunk)
        fault_point("zoo_download_chunk")


def remove_stale_partials(folder):
    """Deletes the `.partial` downloads in `folder` whose process is gone (lock free)."""
    import fcntl

    for path in pathlib.Path(folder).glob(".*.partial"):
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live download
                if os.path.samestat(os.fstat(fd), os.lstat(path)):
                    path.unlink()
            finally:
                os.close(fd)


def _locked_partial(destination):
    """Creates `.<name>.<random>.partial` beside `destination`, locked; returns (fd, path)."""
    import fcntl

    while True:
        fd, name = tempfile.mkstemp(
            dir=destination.parent, prefix=f".{destination.name}.", suffix=".partial"
        )
        fcntl.flock(fd, fcntl.LOCK_EX)
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(name)):  # no cleaner took it first
                os.fchmod(fd, cache.file_mode(destination))
                return fd, pathlib.Path(name)
        os.close(fd)


def download(url, destination, expected_sha256, max_bytes=MAX_DOWNLOAD_BYTES):
    """Downloads `url` (http(s) or file://) atomically to `destination` and verifies it.

    At most `max_bytes` (in [1, `MAX_DOWNLOAD_BYTES`]) are read, in fixed-size chunks; past
    that the download stops with `DownloadTooLargeError` and, as on any failure, nothing is
    left behind. Stale partial downloads of dead processes in the folder are deleted first.
    """
    if isinstance(max_bytes, bool) or not 0 < max_bytes <= MAX_DOWNLOAD_BYTES:
        raise ValueError(f"max_bytes must be in [1, {MAX_DOWNLOAD_BYTES}]. Received: {max_bytes!r}")
    destination = pathlib.Path(destination)
    remove_stale_partials(destination.parent)
    fd, tmp = _locked_partial(destination)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            _copy_capped(response, out, max_bytes, url)
        cache.verify_sha256(tmp, expected_sha256)
        os.replace(tmp, destination)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.close(fd)


def candidate_urls(record):
    """The places to download a file record from: `$RESLSTM_ZOO_URL/<file>`, then its `url`."""
    urls = []
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        urls.append(mirror.rstrip("/") + "/" + urllib.parse.quote(record["file"]))
    if record.get("url"):
        urls.append(record["url"])
    return urls


def cache_name(record):
    """The content-addressed cache name of a file record: `<sha256>-<file>`."""
    return f"{record['sha256']}-{record['file']}"


def _check_record_size(label, record):
    """The download limit of a record: its declared `bytes` plus the margin, bounded."""
    declared = record.get("bytes")
    if declared is None:
        return MAX_FILE_BYTES
    if isinstance(declared, bool) or not isinstance(declared, int):
        raise ValueError(f"{label}: bytes must be an integer. Received: {declared!r}")
    if not 0 < declared <= MAX_FILE_BYTES:
        raise ValueError(f"{label}: bytes must be in [1, {MAX_FILE_BYTES}]. Received: {declared}")
    return declared + DOWNLOAD_MARGIN


def verified_file(name, manifest_dir, record, what):
    """Returns the sha256-verified local path of a file record of zoo entry `name`.

    Args:
        name: the entry's name (for the messages).
        manifest_dir: the folder of the entry's manifest (files shipped beside it).
        record: {"file", "sha256"[, "bytes", "url"]}.
        what: what the file is, e.g. "weights" or "rgb delta".

    Raises:
        reslstm_tf.files.ChecksumError: a file shipped beside the manifest fails its check.
        WeightsUnavailableError: the file is neither cached nor fetchable.
    """
    expected = record["sha256"]
    label = f"zoo entry {name!r}: {what} file"
    limit = _check_record_size(label, record)
    shipped = path_inside(manifest_dir, record["file"], label)
    if shipped.is_file():
        cache.verify_sha256(shipped, expected)
        return shipped
    folder = cache.cache_dir("zoo")
    legacy = path_inside(folder, record["file"], label)
    if legacy.is_file() and cache.sha256_of(legacy) == expected:
        return legacy  # cached by an older version under its plain name: used, never deleted
    cached = path_inside(folder, cache_name(record), label)
    if cached.is_file():
        try:
            cache.verify_sha256(cached, expected)
            return cached
        except cache.ChecksumError:
            cached.unlink()  # Named by this hash only: a corrupt or tampered copy, refetched.
    errors = []
    for url in candidate_urls(record):
        try:
            download(url, cached, expected, limit)
            return cached
        except (urllib.error.URLError, OSError, ValueError) as error:
            errors.append(f"{url}: {error}")
    raise WeightsUnavailableError(
        f"{what} {record['file']} of zoo entry {name!r} are not cached in "
        f"{cached.parent} and could not be fetched"
        + (": " + "; ".join(errors) if errors else f" (no url; set ${MIRROR_ENV})")
    )
