"""A video listed twice in a split file: reported at the repeat, naming the first listing."""

import pytest

from reslstm_tf.data import datasets
from reslstm_tf.data.datasets import SplitFileError


def _write(path, text):
    path.write_text(text)
    return path


def test_ucf101_repeats_name_the_file_and_line_of_the_first_listing(tmp_path):
    _write(tmp_path / "classInd.txt", "1 Jump\n2 Run\n")
    _write(tmp_path / "trainlist01.txt", "Jump/a.avi 1\nRun/b.avi 2\n")
    _write(tmp_path / "testlist01.txt", "Run/c.avi\nJump/a.avi\n")
    with pytest.raises(
        SplitFileError, match=r"testlist01.txt, line 2: video Jump/a.avi already listed at "
        r"trainlist01.txt line 1"
    ):  # fmt: skip
        datasets.ucf101(tmp_path, 1, "all")
    kept = datasets.ucf101(tmp_path, 1, "all", on_error="skip")
    assert kept.as_tuples() == [("Jump/a.avi", 0, "Jump"), ("Run/b.avi", 1, "Run"),
                                ("Run/c.avi", 1, "Run")]  # fmt: skip
    assert [p.line for p in kept.problems] == [2]


def test_folder_repeats_name_the_line_of_the_first_listing(tmp_path):
    for name in ("A", "B"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "v.mp4").write_bytes(b"x")
    split = _write(tmp_path / "list.txt", "A/v.mp4\nB/v.mp4\nA/v.mp4\n")
    with pytest.raises(
        SplitFileError, match=r"list.txt, line 3: video A/v.mp4 already listed at line 1$"
    ):
        datasets.folder(tmp_path, split, check_files=True)
    kept = datasets.folder(tmp_path, split, on_error="skip")
    assert kept.as_tuples() == [("A/v.mp4", 0, "A"), ("B/v.mp4", 1, "B")]
    assert [p.line for p in kept.problems] == [3]
