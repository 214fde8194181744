"""Video lists of UCF-101, HMDB-51 and one-folder-per-class datasets, from split files.

Every loader returns a `VideoList`: the (relative path, label, class name) items of one
split and subset, and the class list. Paths are relative to the dataset's video folder
(``data_dir``) and use ``/``:

* UCF-101: ``<data_dir>/<Class>/v_<Class>_gXX_cYY.avi`` (the layout of ``UCF101.rar``);
  split files ``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt`` (``ucfTrainTestlist``).
* HMDB-51: ``<data_dir>/<class>/<video>.avi`` (``hmdb51_org.rar`` with its per-class rars
  extracted); split files ``<class>_test_split<N>.txt`` (``testTrainMulti_7030_splits``),
  lines ``<video>.avi <id>``, id 1 = train, 2 = test, 0 = unused.
* folder: ``<data_dir>/<Class>/<video>.<ext>``; optional split file with lines
  ``<Class>/<video>.<ext>`` (an optional trailing integer label is ignored).

Labels are 0-based indices into the class list (UCF-101's 1-based ``classInd.txt`` shifted
by one; HMDB-51 in the order of the project's ``data/hmdb51_classes.txt``, the standard
``class_list.txt`` order). Split files may have CRLF line endings, trailing spaces and blank
lines. Malformed lines raise `SplitFileError` naming file and line, or, with
``on_error='skip'``, are skipped and listed in `VideoList.problems`. Malformed lines include
text that is not UTF-8 and video paths that would leave the data folder (absolute paths,
``..`` or empty components, control characters).

Errors: whatever a split file holds, the parsers raise only `SplitFileError` for its
content (a `ValueError`); `FileNotFoundError` for a missing folder and `ValueError` for a bad
argument (``split``, ``subset``, ``on_error``) come from the arguments. The fuzz tests in
``tests/reliability/test_fuzz.py`` check this on arbitrary and mutated split files.
"""

import dataclasses
import logging
import os
import pathlib
import re

from reslstm_tf.assets import asset_path
from reslstm_tf.checks import check_choice

SUBSETS = ("train", "test", "all")
SPLITS = (1, 2, 3)
ON_ERROR = ("raise", "skip")
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")

logger = logging.getLogger(__name__)


class SplitFileError(ValueError):
    """A split or class file is missing or malformed, or names a missing video.

    Attributes:
        path: the offending file.
        line: 1-based line number, or None for whole-file problems.
    """

    def __init__(self, path, message, line=None):
        self.path = str(path)
        self.line = line
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


@dataclasses.dataclass(frozen=True)
class VideoItem:
    """One video of a split: path relative to the data folder, 0-based label, class name."""

    path: str
    label: int
    class_name: str


@dataclasses.dataclass
class VideoList:
    """The videos of one split and subset.

    Attributes:
        items: the `VideoItem`s, in split-file order.
        classes: class names; ``classes[item.label] == item.class_name``.
        problems: `SplitFileError`s that were skipped (``on_error='skip'``).
    """

    items: list
    classes: list
    problems: list = dataclasses.field(default_factory=list)

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __getitem__(self, index):
        return self.items[index]

    @property
    def num_classes(self):
        """The number of classes."""
        return len(self.classes)

    def as_tuples(self):
        """Returns the items as (path, label, class_name) tuples."""
        return [(i.path, i.label, i.class_name) for i in self.items]


def load_class_names(name):
    """Returns a class list shipped with the project: 'ucf101', 'hmdb51'.

    Args:
        name: 'ucf101' or 'hmdb51'.

    Returns:
        The class names, index = label.
    """
    check_choice("name", name, ("ucf101", "hmdb51"))
    text = asset_path("data", f"{name}_classes.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _check_dir(path, what):
    """Returns `path` as a Path, raising FileNotFoundError if it is not a folder."""
    if path is None:
        raise ValueError(f"{what} is required")
    path = pathlib.Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {os.fspath(path)} does not exist or is not a folder")
    return path


def _read_lines(path, collector=None):
    """Yields (line number, stripped text) of the non-blank lines of a text file.

    Lines end with LF, CRLF or CR. A line that is not UTF-8 is reported to `collector`
    (skipped with ``on_error='skip'``), or raises `SplitFileError` without one.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise SplitFileError(path, "split file not found")
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark
        data = data[3:]
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            message = f"not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1})"
            if collector is None:
                raise SplitFileError(path, message, number) from None
            collector.report(path, message, number)
            continue
        text = line.strip()
        if text:
            yield number, text


_NUMBER = re.compile(r"[0-9]+")


def _is_number(text):
    """Whether `text` is a non-negative decimal integer in ASCII digits."""
    return _NUMBER.fullmatch(text) is not None


def _path_problem(rel, components):
    """Returns why `rel` is not a safe relative path of `components` parts, or None."""
    parts = rel.split("/")
    if components is not None and len(parts) != components:
        return None  # the caller reports the wrong shape itself
    if any(ord(c) < 32 or ord(c) == 127 for c in rel):
        return f"video path {rel!r} holds control characters"
    if any(part in ("", ".", "..") for part in parts) or rel.startswith("/"):
        return f"video path {rel!r} is not a plain relative path inside the data folder"
    return None


class _Collector:
    """Raises or records split-file problems according to `on_error`."""

    def __init__(self, on_error):
        check_choice("on_error", on_error, ON_ERROR)
        self.on_error = on_error
        self.problems = []

    def report(self, path, message, line=None):
        error = SplitFileError(path, message, line)
        if self.on_error == "raise":
            raise error
        logger.warning("skipping: %s", error)
        self.problems.append(error)


def _check_video(collector, data_dir, rel_path, split_path, line):
    """Reports a missing video file; returns whether it exists."""
    if not (data_dir / rel_path).is_file():
        collector.report(split_path, f"video {rel_path} not found under {data_dir}", line)
        return False
    return True


class _Listing:
    """The videos a split file lists, each once: repeats and missing files are reported."""

    def __init__(self, collector, data_dir, check_files):
        self.collector, self.data_dir, self.check_files = collector, data_dir, check_files
        self.items, self.seen = [], {}

    def add(self, item, path, number, where):
        """Adds `item`, read at line `number` of `path`, unless listed before or missing.

        `where` names the line in the message about a later repeat of the same video.
        """
        rel, collector = item.path, self.collector
        if rel in self.seen:
            collector.report(path, f"video {rel} already listed at {self.seen[rel]}", number)
        elif not self.check_files or _check_video(collector, self.data_dir, rel, path, number):
            self.seen[rel] = where
            self.items.append(item)


def ucf101_classes(split_dir):
    """Reads UCF-101's ``classInd.txt`` (``<1-based index> <Class>``) into a name list."""
    path = pathlib.Path(split_dir) / "classInd.txt"
    names = {}
    for number, text in _read_lines(path):
        parts = text.split()
        if len(parts) != 2 or not _is_number(parts[0]):
            raise SplitFileError(
                path, f"expected '<index> <ClassName>'. Received: {text!r}", number
            )
        index = int(parts[0])
        if index in names:
            raise SplitFileError(path, f"class index {index} appears twice", number)
        if parts[1] in names.values() or _path_problem(parts[1], 1):
            raise SplitFileError(
                path, f"class name {parts[1]!r} is repeated or not a folder name", number
            )
        names[index] = parts[1]
    if sorted(names) != list(range(1, len(names) + 1)):
        raise SplitFileError(path, f"class indices must be 1..{len(names)} without gaps")
    return [names[i] for i in range(1, len(names) + 1)]


def _official_split_args(split, subset, split_dir, data_dir, check_files, on_error):
    """Checks the arguments both official readers take; returns (split_dir, data_dir, collector)."""
    check_choice("split", split, SPLITS)
    check_choice("subset", subset, SUBSETS)
    split_dir = _check_dir(split_dir, "split_dir")
    data_dir = _check_dir(data_dir, "data_dir") if (data_dir is not None or check_files) else None
    return split_dir, data_dir, _Collector(on_error)


def ucf101(
    split_dir, split=1, subset="train", *, data_dir=None, check_files=False, on_error="raise"
):
    """Lists the UCF-101 videos of an official split.

    Args:
        split_dir: the folder with ``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``.
        split: 1, 2 or 3.
        subset: 'train', 'test' or 'all' (train then test).
        data_dir: the video folder (``<Class>/<video>.avi``); needed for `check_files`.
        check_files: report videos missing from `data_dir`.
        on_error: 'raise' a `SplitFileError` or 'skip' the line and record the problem.

    Returns:
        A `VideoList` with 101 classes.
    """
    split_dir, data_dir, collector = _official_split_args(
        split, subset, split_dir, data_dir, check_files, on_error
    )
    classes = ucf101_classes(split_dir)
    lookup = {name: i for i, name in enumerate(classes)}
    lookup_lower = {name.lower(): i for i, name in enumerate(classes)}
    parts = ("train", "test") if subset == "all" else (subset,)
    listing = _Listing(collector, data_dir, check_files)
    for part in parts:
        path = split_dir / f"{part}list0{split}.txt"
        for number, text in _read_lines(path, collector):
            fields = text.split()
            expected = (
                "'<Class>/<video>.avi <label>'" if part == "train" else ("'<Class>/<video>.avi'")
            )
            rel = fields[0].replace("\\", "/")
            if len(fields) not in (1, 2) or rel.count("/") != 1:
                collector.report(path, f"expected {expected}. Received: {text!r}", number)
                continue
            problem = _path_problem(rel, 2)
            if problem:
                collector.report(path, problem, number)
                continue
            folder = rel.split("/")[0]
            label = lookup.get(folder, lookup_lower.get(folder.lower()))
            if label is None:
                collector.report(path, f"unknown class {folder!r} (not in classInd.txt)", number)
                continue
            if len(fields) == 2:
                if not _is_number(fields[1]) or int(fields[1]) != label + 1:
                    collector.report(
                        path,
                        f"label {fields[1]!r} does not match class {folder!r} "
                        f"(classInd.txt index {label + 1})",
                        number,
                    )
                    continue
            item = VideoItem(rel, label, classes[label])
            listing.add(item, path, number, f"{path.name} line {number}")
    return VideoList(listing.items, classes, collector.problems)


_HMDB_NAME = re.compile(r"^(?P<cls>.+)_test_split(?P<split>[123])\.txt$")


def hmdb51(
    split_dir,
    split=1,
    subset="train",
    *,
    data_dir=None,
    check_files=False,
    on_error="raise",
    classes=None,
):
    """Lists the HMDB-51 videos of an official split (testTrainMulti_7030_splits).

    Args:
        split_dir: the folder with the 153 ``<class>_test_split<N>.txt`` files.
        split: 1, 2 or 3.
        subset: 'train' (id 1), 'test' (id 2) or 'all' (both; id 0 videos are never used).
        data_dir: the video folder (``<class>/<video>.avi``); needed for `check_files`.
        check_files: report videos missing from `data_dir`.
        on_error: 'raise' a `SplitFileError` or 'skip' the line and record the problem.
        classes: the class order (default: the project's ``data/hmdb51_classes.txt``).

    Returns:
        A `VideoList` with 51 classes.
    """
    split_dir, data_dir, collector = _official_split_args(
        split, subset, split_dir, data_dir, check_files, on_error
    )
    classes = list(classes) if classes is not None else load_class_names("hmdb51")
    wanted_ids = {"train": ("1",), "test": ("2",), "all": ("1", "2")}[subset]
    found = {}
    for path in sorted(split_dir.iterdir()):
        match = _HMDB_NAME.match(path.name)
        if match and int(match["split"]) == split:
            found[match["cls"]] = path
    unknown = sorted(set(found) - set(classes))
    for name in unknown:
        collector.report(found[name], f"unknown class {name!r} (not one of the 51 classes)")
    items = []
    for label, name in enumerate(classes):
        path = found.get(name, split_dir / f"{name}_test_split{split}.txt")
        if name not in found:
            collector.report(path, f"split file for class {name!r} not found")
            continue
        for number, text in _read_lines(path, collector):
            fields = text.split()
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                collector.report(
                    path, f"expected '<video>.avi <0|1|2>'. Received: {text!r}", number
                )
                continue
            if fields[1] not in wanted_ids:
                continue
            problem = _path_problem(fields[0].replace("\\", "/"), 1)
            if problem or "/" in fields[0] or "\\" in fields[0]:
                collector.report(
                    path, problem or f"expected a file name. Received: {fields[0]!r}", number
                )
                continue
            rel = f"{name}/{fields[0]}"
            if check_files and not _check_video(collector, data_dir, rel, path, number):
                continue
            items.append(VideoItem(rel, label, name))
    return VideoList(items, classes, collector.problems)


def _class_folder_problem(entry, data_dir):
    """A split line's entry, turned into a bad line if its class folder does not exist.

    A typo in a class folder (``Nonexist/x.mp4``, ``kickflip/`` for ``Kickflip/``) would
    otherwise become a class of its own.
    """
    number, rel, problem = entry
    if rel is None or (data_dir / rel.split("/")[0]).is_dir():
        return entry
    name = rel.split("/")[0]
    return number, None, f"video {rel} not found: no class folder {name!r} under {data_dir}"


def _check_case(classes, where):
    """Returns `classes`; raises `SplitFileError` if two names differ only in case."""
    seen = {}
    for name in classes:
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            raise SplitFileError(
                where,
                f"classes {other!r} and {name!r} differ only in case; rename one folder (or "
                "fix the split file) so that each class has one name",
            )
    return classes


def folder(
    data_dir,
    split_file=None,
    *,
    classes=None,
    extensions=VIDEO_EXTENSIONS,
    check_files=False,
    on_error="raise",
):
    """Lists a one-folder-per-class dataset, optionally restricted to a split file.

    Args:
        data_dir: the folder holding one sub-folder of videos per class.
        split_file: optional text file of ``<Class>/<video>`` lines (an optional trailing
            label is ignored; labels come from the class list).
        classes: class names in label order; default: the sorted class names found in
            the split file (a line whose class folder does not exist is a bad line, not a
            class), or without one the sorted sub-folders that hold videos. Names that differ
            only in case are refused (`SplitFileError`).
        extensions: video file extensions to list when no split file is given.
        check_files: with a split file, report listed videos missing from `data_dir`.
        on_error: 'raise' a `SplitFileError` or 'skip' the line and record the problem.

    Returns:
        A `VideoList`.
    """
    data_dir = _check_dir(data_dir, "data_dir")
    collector = _Collector(on_error)
    extensions = tuple(e.lower() for e in extensions)
    if split_file is None:
        if classes is None:
            classes = sorted(
                p.name
                for p in data_dir.iterdir()
                if p.is_dir() and any(v.suffix.lower() in extensions for v in p.iterdir())
            )
        if not classes:
            raise FileNotFoundError(
                f"no classes found: data_dir {os.fspath(data_dir)} has no sub-folder with "
                f"videos ({', '.join(extensions)})"
            )
        classes = _check_case(list(classes), data_dir)
        items = []
        for label, name in enumerate(classes):
            class_dir = data_dir / name
            if not class_dir.is_dir():
                raise FileNotFoundError(f"class folder {os.fspath(class_dir)} not found")
            for video in sorted(class_dir.iterdir()):
                if video.is_file() and video.suffix.lower() in extensions:
                    items.append(VideoItem(f"{name}/{video.name}", label, name))
        return VideoList(items, classes, collector.problems)

    path = pathlib.Path(split_file)
    entries = []  # (line number, relative path or None, problem or None)
    for number, text in _read_lines(path, collector):
        fields = text.split()
        rel = fields[0].replace("\\", "/")
        if len(fields) not in (1, 2) or rel.count("/") != 1:
            problem = f"expected '<Class>/<video>' [label]. Received: {text!r}"
        else:
            problem = _path_problem(rel, 2)
        entries.append((number, None if problem else rel, problem))
    if classes is None:  # the classes of the well-formed lines whose class folder exists
        entries = [_class_folder_problem(entry, data_dir) for entry in entries]
        classes = sorted({rel.split("/")[0] for _, rel, _ in entries if rel is not None})
        if not classes and not any(problem for _, _, problem in entries):
            raise SplitFileError(path, "lists no videos ('<Class>/<video>' lines)")
    classes = _check_case(list(classes), path)
    lookup = {name: i for i, name in enumerate(classes)}
    listing = _Listing(collector, data_dir, check_files)
    for number, rel, problem in entries:
        if problem:
            collector.report(path, problem, number)
            continue
        name = rel.split("/")[0]
        if name not in lookup:
            collector.report(
                path, f"unknown class {name!r}; known classes: {', '.join(classes)}", number
            )
            continue
        listing.add(VideoItem(rel, lookup[name], name), path, number, f"line {number}")
    return VideoList(listing.items, classes, collector.problems)


def load_dataset(
    name,
    *,
    data_dir=None,
    split_dir=None,
    split=1,
    subset="train",
    split_file=None,
    check_files=False,
    on_error="raise",
):
    """Dispatches to `ucf101`, `hmdb51` or `folder` by name.

    Args:
        name: 'ucf101', 'hmdb51' or 'folder'.
        data_dir: the video folder.
        split_dir: the split-file folder (ucf101/hmdb51; default: `data_dir`).
        split: 1, 2 or 3 (ucf101/hmdb51).
        subset: 'train', 'test' or 'all' (ucf101/hmdb51).
        split_file: the list file of a 'folder' dataset (optional).
        check_files: report missing videos.
        on_error: 'raise' or 'skip'.

    Returns:
        A `VideoList`.
    """
    check_choice("name", name, ("ucf101", "hmdb51", "folder"))
    if name == "folder":
        return folder(data_dir, split_file, check_files=check_files, on_error=on_error)
    loader = ucf101 if name == "ucf101" else hmdb51
    return loader(
        split_dir if split_dir is not None else data_dir,
        split,
        subset,
        data_dir=data_dir,
        check_files=check_files,
        on_error=on_error,
    )
