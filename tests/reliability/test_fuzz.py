"""Fuzzing the video reader and the split-file parsers with hypothesis.

Inputs are real files mutated (bit flips, truncations, insertions, overwritten and deleted
ranges: a real H.264 mp4, an MJPEG avi made from a real frame, the official split files) or
arbitrary text and bytes. Every call must succeed or raise one of the documented errors:

* video reader (`reslstm_tf.data.video`: `probe`, `count_frames`, `read_frames`; and
  `reslstm_tf.data.pipeline.load_clip`): `VideoReadError` (with its subclass
  `VideoTooShortError`). Files whose header declares frames over
  `reslstm_tf.extract.MAX_FRAME_PIXELS` are refused with `VideoReadError` by
  `check_frame_size` before decoding, as `reslstm-extract` does (the reader itself would
  decode them: gigabytes per frame). Each example must also finish within
  `EXAMPLE_SECONDS` (a hang is a failure).
* split parsers (`reslstm_tf.data.datasets`: `ucf101`, `hmdb51`, `folder`, with
  ``on_error`` 'raise' and 'skip', with and without ``check_files``): `SplitFileError`.

Anything else (IndexError, ZeroDivisionError, UnicodeDecodeError, a leaked `cv2.error`,
MemoryError, ...) is a bug. The CI run is short; the long run is a setting::

    RESLSTM_FUZZ_EXAMPLES=20000 nice python -m pytest -q -s tests/reliability/test_fuzz.py

(examples per test; add ``-p no:cacheprovider`` to keep no state). Failing examples are
printed with a ``@reproduce_failure`` blob and kept in hypothesis' example database.
"""

import os
import pathlib
import shutil
import tempfile
import time

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reslstm_tf.data import datasets, video
from reslstm_tf.data.datasets import SplitFileError
from reslstm_tf.data.pipeline import load_clip
from reslstm_tf.data.video import VideoReadError
from reslstm_tf.extract import check_frame_size
from tests.reliability import corpus

EXAMPLES = int(os.environ.get("RESLSTM_FUZZ_EXAMPLES", "0")) or None
EXAMPLE_SECONDS = 60.0
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def examples(ci):
    """max_examples: `ci` in CI, or $RESLSTM_FUZZ_EXAMPLES for a long run."""
    return EXAMPLES or ci


# --- mutations -----------------------------------------------------------------------------


def mutations(span=1 << 20, header=2048):
    """A strategy of edit lists; offsets (taken modulo the file size) favour the header."""
    offset = st.one_of(st.integers(0, header - 1), st.integers(0, span - 1))
    chunk = st.binary(min_size=1, max_size=64)
    edit = st.one_of(
        st.tuples(st.just("flip"), offset, st.integers(0, 7)),
        st.tuples(st.just("set"), offset, st.integers(0, 255)),
        st.tuples(st.just("insert"), offset, chunk),
        st.tuples(st.just("overwrite"), offset, chunk),
        st.tuples(st.just("delete"), offset, st.integers(1, 4096)),
        st.tuples(st.just("truncate"), st.integers(0, span - 1)),
    )
    return st.lists(edit, min_size=1, max_size=8)


def mutate(data, edits):
    """Applies the edits of `mutations` to bytes."""
    out = bytearray(data)
    for kind, *args in edits:
        if not out:
            break
        position = args[0] % len(out)
        if kind == "flip":
            out[position] ^= 1 << args[1]
        elif kind == "set":
            out[position] = args[1]
        elif kind == "insert":
            out[position:position] = args[1]
        elif kind == "overwrite":
            out[position : position + len(args[1])] = args[1]
        elif kind == "delete":
            del out[position : position + args[1]]
        else:  # truncate
            del out[position:]
    return bytes(out)


# --- the video reader ----------------------------------------------------------------------


class _Seeds(dict):
    """The seed files; a short repr keeps failure reports readable."""

    def __repr__(self):
        return f"<seeds: {', '.join(self)}>"


@pytest.fixture(scope="module")
def seeds(shared_data, tmp_path_factory):
    """Real files to mutate: the source mp4 and a 6-frame MJPEG avi of its real frames."""
    clip = shared_data / "skateboard" / corpus.SOURCE_CLIP
    capture = cv2.VideoCapture(os.fspath(clip))
    frames = [capture.read()[1] for _ in range(6)]
    capture.release()
    avi = tmp_path_factory.mktemp("seeds") / "real_frames.avi"
    small = [cv2.resize(f, (114, 64), interpolation=cv2.INTER_AREA) for f in frames]
    writer = cv2.VideoWriter(os.fspath(avi), cv2.VideoWriter_fourcc(*"MJPG"), 10, (114, 64))
    for frame in small:
        writer.write(frame)
    writer.release()
    return _Seeds({"mp4": clip.read_bytes(), "avi": avi.read_bytes()})


def read_everything(path):
    """Every public reader function on one file; returns what decoded (for the checks)."""
    info = check_frame_size(path)  # header only; refuses huge declared frames
    probed = video.probe(path)
    assert probed.width > 0 and probed.height > 0
    count = video.count_frames(path)
    assert count >= 1
    wanted = [0, count // 2, count - 1, info.frame_count + 3]
    frames = video.read_frames(path, wanted, on_missing="loop")
    assert frames.shape[0] == len(wanted) and frames.dtype == np.uint8
    try:
        video.read_frames(path, [count - 1, count + 5])  # on_missing="error"
    except video.VideoTooShortError as error:
        assert error.decoded_frames >= 1
        if error.decoded_frames > error.max_index:  # known reader bug, see test_bad_inputs
            event("read_frames: VideoTooShortError with more frames decoded than asked for")
    try:
        clip, sample = load_clip(path, 2, 2, frame_size=16)
    except video.VideoTooShortError as error:
        if error.decoded_frames > error.max_index:  # known reader bug, see test_bad_inputs
            event("load_clip: VideoTooShortError with more frames decoded than asked for")
        raise
    assert clip.shape == (2, 2, 16, 16, 3) and np.all(np.abs(clip) <= 1)
    return sample.num_frames


def check_video_bytes(data, folder, suffix):
    """Writes `data` and reads it; fails on anything but success or `VideoReadError`."""
    path = pathlib.Path(folder) / f"fuzzed{suffix}"
    path.write_bytes(data)
    start = time.monotonic()
    try:
        frames = read_everything(path)
        event(f"decoded ({'all' if frames >= 56 else 'part'})")
    except VideoReadError as error:
        assert str(path) in str(error)  # documented: names the file
        event(f"{type(error).__name__}: {error.problem[:40]}"[:60])
    finally:
        elapsed = time.monotonic() - start
        path.unlink()
    assert elapsed < EXAMPLE_SECONDS, f"reading took {elapsed:.0f} s"


EDITS = mutations()


@pytest.mark.parametrize("kind", ["mp4", "avi"])
@settings(FUZZ, max_examples=examples(120))
@given(edits=EDITS)
def test_fuzz_video_reader(seeds, kind, tmp_path, edits):
    check_video_bytes(mutate(seeds[kind], edits), tmp_path, f".{kind}")


@settings(FUZZ, max_examples=examples(50))
@given(data=st.binary(min_size=1, max_size=4096), suffix=st.sampled_from([".mp4", ".avi"]))
def test_fuzz_video_reader_arbitrary_bytes(tmp_path, data, suffix):
    check_video_bytes(data, tmp_path, suffix)


# --- the split parsers ---------------------------------------------------------------------


def parse_all(kind, split_dir, data_dir):
    """Runs one parser in every mode; returns the lists it gave."""
    out = []
    for on_error in ("raise", "skip"):
        for check_files in (False, True):
            try:
                if kind == "ucf101":
                    for subset in ("train", "test"):
                        out.append(
                            datasets.ucf101(
                                split_dir, 1, subset, data_dir=data_dir,
                                check_files=check_files, on_error=on_error,
                            )
                        )  # fmt: skip
                elif kind == "hmdb51":
                    out.append(
                        datasets.hmdb51(
                            split_dir, 1, "all", data_dir=data_dir, check_files=check_files,
                            on_error=on_error,
                        )
                    )  # fmt: skip
                else:
                    out.append(
                        datasets.folder(
                            data_dir, split_dir / "list.txt", check_files=check_files,
                            on_error=on_error,
                        )
                    )  # fmt: skip
            except SplitFileError as error:
                assert error.path and error.path in str(error)
                if on_error == "skip":  # only whole-file problems raise when skipping
                    assert error.line is None or kind == "ucf101", error
    for videos in out:
        for item in videos:
            assert videos.classes[item.label] == item.class_name
            parts = item.path.split("/")
            assert len(parts) == 2 and ".." not in parts and "" not in parts, item.path
    return out


@pytest.fixture(scope="module")
def split_seeds(shared_data, tmp_path_factory):
    """Real split files (HMDB-51: one class's file, to keep examples fast) and a data folder."""
    data_dir = tmp_path_factory.mktemp("split_data")
    (data_dir / "Kickflip").mkdir()
    (data_dir / "Kickflip" / "Kickflip1.mp4").write_bytes(b"x")
    ucf = shared_data / "ucf101_splits"
    hmdb = shared_data / "hmdb51_splits"
    lines = (ucf / "trainlist01.txt").read_bytes().split(b"\r\n")
    return _Seeds(
        {
            "data_dir": data_dir,
            "classInd.txt": (ucf / "classInd.txt").read_bytes(),
            "trainlist01.txt": b"\r\n".join(lines[::40]),  # every class, 239 lines
            "testlist01.txt": b"\r\n".join(
                (ucf / "testlist01.txt").read_bytes().split(b"\r\n")[::40]
            ),
            "hmdb": (hmdb / "brush_hair_test_split1.txt").read_bytes(),
            "folder": (shared_data / "skateboard" / "trainlist.txt").read_bytes(),
        }
    )


def _split_dir(seeds, kind, contents):
    """A fresh split folder holding `contents` ({file name: bytes})."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix=f"fuzz_{kind}_"))
    if kind == "ucf101":
        for name in ("classInd.txt", "trainlist01.txt", "testlist01.txt"):
            (folder / name).write_bytes(contents.get(name, seeds[name]))
    elif kind == "hmdb51":
        (folder / "brush_hair_test_split1.txt").write_bytes(contents["hmdb"])
    else:
        (folder / "list.txt").write_bytes(contents["folder"])
    return folder


def check_split(seeds, kind, contents):
    folder = _split_dir(seeds, kind, contents)
    try:
        if kind == "hmdb51":
            classes = ["brush_hair"]
            videos = datasets.hmdb51(folder, 1, "all", classes=classes, on_error="skip")
            assert videos.classes == classes
            try:
                datasets.hmdb51(folder, 1, "all", classes=classes, data_dir=seeds["data_dir"],
                                check_files=True)  # fmt: skip
            except SplitFileError as error:
                assert str(folder) in str(error)
        else:
            parse_all(kind, folder, seeds["data_dir"])
    finally:
        shutil.rmtree(folder)


SPLIT_FILES = {"ucf101": "trainlist01.txt", "hmdb51": "hmdb", "folder": "folder"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ucf101", "hmdb51", "folder"])
@settings(FUZZ, max_examples=examples(150))
@given(edits=EDITS)
def test_fuzz_split_parsers_mutated(split_seeds, kind, edits):
    name = SPLIT_FILES[kind]
    check_split(split_seeds, kind, {name: mutate(split_seeds[name], edits)})


@settings(FUZZ, max_examples=examples(100))
@given(edits=EDITS)
def test_fuzz_ucf101_class_file_mutated(split_seeds, edits):
    seed = split_seeds["classInd.txt"]
    check_split(split_seeds, "ucf101", {"classInd.txt": mutate(seed, edits)})


LINE_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("Kickflip/Ollie.mp4 .\\0123456789\t\r\n\x00\x0b\x0c\x1c\x85")),
        st.characters(),
    ),
    max_size=200,
)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ucf101", "hmdb51", "folder"])
@settings(FUZZ, max_examples=examples(150))
@given(
    text=LINE_TEXT,
    raw=st.binary(max_size=200),
    encode=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "raw"]),
)
def test_fuzz_split_parsers_arbitrary(split_seeds, kind, text, raw, encode):
    data = raw if encode == "raw" else text.encode(encode, errors="replace")
    check_split(split_seeds, kind, {SPLIT_FILES[kind]: data})
