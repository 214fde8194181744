"""Where a zoo file comes from, and why it can be trusted: plain names, capped, verified fetches.

A published file (weights, a delta) is looked up, in order: next to its manifest (small
files shipped in the wheel), in the cache (`$RESLSTM_HOME/zoo`, default
`$KERAS_HOME/reslstm_tf/zoo`), then downloaded from its record's `url` or from
`$RESLSTM_ZOO_URL/<file>` (a mirror or a lab's own zoo; `file://` works). Every file is
sha256-verified, from the cache as after a download, and downloads are written atomically.

A manifest is not trusted further than its checksums: entry names and file names must be
plain names (`check_plain_name`), every path built from them must stay inside its folder,
and a download stops at the record's declared `bytes` (plus `DOWNLOAD_MARGIN`).

Why not `keras.utils.get_file(file_hash=...)`: it checks the hash of a download, but joins
the file name to its cache folder unchecked, reads the response with no size limit, and
downloads under the final name, where a file that failed its hash check stays. The zoo needs
path containment, a size cap and atomic writes, so `download` streams the file itself.
"""

import os
import pathlib
import re
import urllib.error
import urllib.parse
import urllib.request

from reslstm_tf import files as cache

MIRROR_ENV = "RESLSTM_ZOO_URL"
# A download may exceed its record's declared `bytes` by this much before it is refused.
DOWNLOAD_MARGIN = 64 << 10
# The cap of a download whose record declares no size.
MAX_DOWNLOAD_BYTES = 2 << 30
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


def download(url, destination, expected_sha256, max_bytes=MAX_DOWNLOAD_BYTES):
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


def candidate_urls(record):
    """The places to download a file record from: `$RESLSTM_ZOO_URL/<file>`, then its `url`."""
    urls = []
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        urls.append(mirror.rstrip("/") + "/" + urllib.parse.quote(record["file"]))
    if record.get("url"):
        urls.append(record["url"])
    return urls


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
    shipped = path_inside(manifest_dir, record["file"], label)
    if shipped.is_file():
        cache.verify_sha256(shipped, expected)
        return shipped
    cached = path_inside(cache.cache_dir("zoo"), record["file"], label)
    declared = record.get("bytes")
    limit = declared + DOWNLOAD_MARGIN if isinstance(declared, int) else MAX_DOWNLOAD_BYTES
    if cached.is_file():
        try:
            cache.verify_sha256(cached, expected)
            return cached
        except cache.ChecksumError:
            cached.unlink()  # A corrupt or tampered cache entry is refused and refetched.
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
