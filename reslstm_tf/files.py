"""The local cache for converted weights and downloads, and sha256-verified file I/O."""

import contextlib
import errno
import hashlib
import os
import pathlib
import tempfile

CACHE_ENV = "RESLSTM_HOME"


def cache_dir(*parts):
    """Returns (and creates) a folder under $RESLSTM_HOME, default $KERAS_HOME/reslstm_tf."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
        root = os.path.join(keras_home, "reslstm_tf")
    path = pathlib.Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path, chunk_size=1 << 20):
    """Returns the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ChecksumError(ValueError):
    """A file's sha256 does not match the recorded one."""


def verify_sha256(path, expected):
    """Raises `ChecksumError` naming the file unless its sha256 equals `expected`."""
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(
            f"sha256 mismatch for {path}: expected {expected}, got {actual}. "
            "The file is corrupt or has been tampered with; delete it and fetch it again."
        )
    return actual


def _umask():
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode():
    """The mode the umask gives a new file (0666 less the umask)."""
    return 0o666 & ~_umask()


def file_mode(path):
    """The mode for a file written to `path`: the existing file's, else 0666 less the umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _temporary_sibling(path):
    """Creates an empty temporary file beside `path` with the mode `path` should have."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    # mkstemp creates 0600 files; the replaced file keeps its mode, a new one gets the umask's.
    os.fchmod(fd, file_mode(path))
    return fd, tmp_name


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Yields a temporary file that replaces `path` only if the block succeeds.

    The result has the replaced file's permission bits, or those the umask gives a new file.
    """
    path = pathlib.Path(path)
    fd, tmp_name = _temporary_sibling(path)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_path(path):
    """Returns a temporary sibling path for writers that need a file name (e.g. h5py).

    The file is created with the mode `path` should keep (see `atomic_write`); writers that
    delete and recreate it (h5py does not) get the umask's.
    """
    path = pathlib.Path(path)
    fd, tmp_name = _temporary_sibling(path)
    os.close(fd)
    return pathlib.Path(tmp_name)


class FolderBusyError(ValueError):
    """Another process holds the folder's lock.

    A ValueError: two jobs given one output folder is the user's mistake, which the
    command-line tools report in one line with exit status 2.
    """


def printable(text):
    """`text` with control characters escaped (a newline as ``\\n``), for one-line messages.

    A file name may hold any byte but ``/`` and NUL; printed as is, a name with a newline could
    forge a line of a report.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _open_lock_file(path, flags):
    """Opens a lock file without following a link and without truncating it.

    Raises:
        FolderBusyError: `path` is a symbolic link, not a regular file, or has other hard links
            (locking it would write into a file outside the folder).
    """
    import stat

    try:
        fd = os.open(path, flags | os.O_NOFOLLOW, 0o666 & ~_umask())
    except OSError as error:
        if error.errno == errno.ELOOP or os.path.islink(path):
            raise FolderBusyError(
                f"the lock file {printable(path)} is a symbolic link; refusing to follow it. "
                "Delete the link and run again"
            ) from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        raise FolderBusyError(
            f"the lock file {printable(path)} is not a plain file of its own (a device, a "
            "folder or a hard link); refusing to write to it. Delete it and run again"
        )
    return fd


def _retry_or_holder(fd, wait_s=2.0):
    """Retries a refused lock for a moment; returns None once taken, else the holder's record.

    A reader checking the lock (`lock_holder`) holds it shared for an instant, and a holder
    that has just taken it writes its record a moment later: both get `wait_s`.
    """
    import fcntl
    import time

    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            pass
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        if holder or time.monotonic() > deadline:
            return holder or "another process"
        time.sleep(0.02)


def lock_holder(folder, lock_name=".lock"):
    """Returns the record of the process holding `folder/lock_name`, or None when it is free.

    Readers call it to refuse a folder a writer is still writing; it never creates the file
    and holds the lock (shared) only for the instant of the test.
    """
    import fcntl

    path = pathlib.Path(folder) / lock_name
    try:
        fd = _open_lock_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            return printable(holder or "another process")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder, what="folder", wait=False, lock_name=".lock"):
    """Holds an exclusive lock on `folder` for the block, so two writers never share it.

    The lock is an advisory `flock` on `folder/.lock`: the operating system drops it when the
    holder exits or is killed, so a crashed job never leaves a stale lock behind. The file
    records the holder's pid and command line, for the error message. It is opened without
    following links and without truncation: a lock file that is a link (or another file's hard
    link) is refused, so locking never writes outside the folder.

    Args:
        folder: the folder to lock (created if missing).
        what: how the error names the folder, e.g. "feature cache" or "model_dir".
        wait: block until the lock is free instead of refusing.
        lock_name: the lock file's name inside `folder`.

    Raises:
        FolderBusyError: `wait` is False and another process holds the lock, or the lock file
            is a link.
    """
    import fcntl
    import sys

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / lock_name
    fd = _open_lock_file(path, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _retry_or_holder(fd)
            if holder is not None:
                raise FolderBusyError(
                    f"{what} {printable(repr(str(folder)))} is in use by {printable(holder)}; "
                    "wait for it to finish, or use another folder"
                ) from None
        with contextlib.suppress(OSError):  # only the error message needs it (a full disk)
            # Written before the old text is cut off, so a reader never sees it empty.
            record = f"pid {os.getpid()} ({' '.join(sys.argv)[:200]})\n".encode()
            os.pwrite(fd, record, 0)
            os.ftruncate(fd, len(record))
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):  # a finished holder leaves no record behind
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)
