"""Split-file parsers against the official UCF-101 / HMDB-51 files and their known counts."""

import collections

import pytest

from reslstm_tf.assets import asset_path
from reslstm_tf.data import datasets
from reslstm_tf.data.datasets import SplitFileError

UCF_COUNTS = {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)}


@pytest.fixture(scope="module")
def ucf_dir(shared_data):
    return shared_data / "ucf101_splits"


@pytest.fixture(scope="module")
def hmdb_dir(shared_data):
    return shared_data / "hmdb51_splits"


@pytest.mark.parametrize("split", [1, 2, 3])
def test_ucf101_official_counts(ucf_dir, split):
    train = datasets.ucf101(ucf_dir, split, "train")
    test = datasets.ucf101(ucf_dir, split, "test")
    assert (len(train), len(test)) == UCF_COUNTS[split]
    assert not {i.path for i in train} & {i.path for i in test}
    assert train.num_classes == 101
    assert {i.label for i in train} == set(range(101)) == {i.label for i in test}
    for item in list(train)[:50] + list(test)[:50]:
        assert train.classes[item.label] == item.class_name
        assert item.path.startswith(item.class_name + "/") and item.path.endswith(".avi")
    assert len(datasets.ucf101(ucf_dir, split, "all")) == sum(UCF_COUNTS[split])


def test_ucf101_labels_match_trainlist(ucf_dir):
    # independent parse of the raw file: 1-based label column
    raw = [
        line.split()
        for line in (ucf_dir / "trainlist01.txt").read_text().splitlines()
        if line.strip()
    ]
    parsed = datasets.ucf101(ucf_dir, 1, "train").as_tuples()
    assert [(p, int(label) - 1) for p, label in raw] == [(p, label) for p, label, _ in parsed]


@pytest.mark.parametrize("split", [1, 2, 3])
def test_hmdb51_official_counts(hmdb_dir, split):
    train = datasets.hmdb51(hmdb_dir, split, "train")
    test = datasets.hmdb51(hmdb_dir, split, "test")
    assert (len(train), len(test)) == (3570, 1530)
    assert train.num_classes == 51
    per_train = collections.Counter(i.label for i in train)
    per_test = collections.Counter(i.label for i in test)
    assert set(per_train.values()) == {70} and set(per_test.values()) == {30}
    assert len(per_train) == len(per_test) == 51
    assert not {i.path for i in train} & {i.path for i in test}


def test_class_lists_match_official_files(ucf_dir, hmdb_dir):
    ucf = asset_path("data", "ucf101_classes.txt").read_text().split()
    class_ind = [
        line.split()[1]
        for line in (ucf_dir / "classInd.txt").read_text().splitlines()
        if line.strip()
    ]
    assert ucf == class_ind == datasets.load_class_names("ucf101")
    assert len(ucf) == 101
    hmdb = datasets.load_class_names("hmdb51")
    official = [
        line.strip()
        for line in (hmdb_dir / "class_list.txt").read_text().splitlines()
        if line.strip()
    ]
    assert hmdb == official and len(hmdb) == 51
    from_files = {p.name.rsplit("_test_split", 1)[0] for p in hmdb_dir.glob("*_test_split1.txt")}
    assert set(hmdb) == from_files


def test_skateboard_folder_dataset(shared_data):
    root = shared_data / "skateboard"
    listed = datasets.folder(root, root / "trainlist.txt", check_files=True)
    assert listed.classes == ["Kickflip", "Ollie"]
    counts = collections.Counter(i.class_name for i in listed)
    on_disk = {c: len(list((root / c).glob("*.mp4"))) for c in ("Kickflip", "Ollie")}
    assert counts == on_disk
    scanned = datasets.folder(root, classes=["Kickflip", "Ollie"])
    assert sorted(scanned.as_tuples()) == sorted(listed.as_tuples())


def _write(path, text, newline="\n"):
    path.write_bytes(text.replace("\n", newline).encode())
    return path


@pytest.fixture
def tiny_ucf(tmp_path):
    _write(tmp_path / "classInd.txt", "1 Jump\n2 Run\n", "\r\n")
    _write(
        tmp_path / "trainlist01.txt",
        "Jump/v_Jump_g01_c01.avi 1\n\nRun/v_Run_g01_c01.avi 2\n",
        "\r\n",
    )
    _write(tmp_path / "testlist01.txt", "Run/v_Run_g02_c01.avi\n")
    return tmp_path


def test_crlf_and_blank_lines(tiny_ucf):
    train = datasets.ucf101(tiny_ucf, 1, "train")
    assert train.as_tuples() == [
        ("Jump/v_Jump_g01_c01.avi", 0, "Jump"),
        ("Run/v_Run_g01_c01.avi", 1, "Run"),
    ]


@pytest.mark.parametrize(
    "line, message",
    [
        ("Walk/v_Walk_g01_c01.avi 1", "unknown class 'Walk'"),
        ("Jump/v_Jump_g01_c01.avi 2", "does not match"),
        ("no_slash_here 1", "expected"),
        ("Jump/a.avi 1 extra", "expected"),
    ],
)
def test_malformed_lines_name_file_and_line(tiny_ucf, line, message):
    _write(tiny_ucf / "trainlist01.txt", f"Jump/v_Jump_g01_c01.avi 1\n{line}\n")
    with pytest.raises(SplitFileError, match=message) as err:
        datasets.ucf101(tiny_ucf, 1, "train")
    assert err.value.line == 2 and "trainlist01.txt, line 2" in str(err.value)
    skipped = datasets.ucf101(tiny_ucf, 1, "train", on_error="skip")
    assert len(skipped) == 1 and len(skipped.problems) == 1
    assert skipped.problems[0].line == 2


def test_missing_inputs(tiny_ucf, tmp_path):
    with pytest.raises(SplitFileError, match="trainlist02.txt: split file not found"):
        datasets.ucf101(tiny_ucf, 2, "train")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        datasets.ucf101(tmp_path / "nowhere", 1)
    with pytest.raises(FileNotFoundError, match="data_dir"):
        datasets.ucf101(tiny_ucf, 1, data_dir=tmp_path / "no_videos")
    with pytest.raises(ValueError, match="Received: split=4"):
        datasets.ucf101(tiny_ucf, 4)
    with pytest.raises(ValueError, match="Received: subset='val'"):
        datasets.ucf101(tiny_ucf, 1, "val")


def test_check_files(tiny_ucf, tmp_path):
    videos = tmp_path / "videos"
    (videos / "Jump").mkdir(parents=True)
    (videos / "Jump" / "v_Jump_g01_c01.avi").write_bytes(b"x")
    with pytest.raises(SplitFileError, match=r"line 3: video Run/v_Run_g01_c01.avi not found"):
        datasets.ucf101(tiny_ucf, 1, "train", data_dir=videos, check_files=True)
    partial = datasets.ucf101(
        tiny_ucf, 1, "train", data_dir=videos, check_files=True, on_error="skip"
    )
    assert [i.path for i in partial] == ["Jump/v_Jump_g01_c01.avi"]
    assert len(partial.problems) == 1


def test_hmdb51_bad_lines(tmp_path, hmdb_dir):
    for path in hmdb_dir.glob("*_test_split1.txt"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    target = tmp_path / "wave_test_split1.txt"
    lines = target.read_text().splitlines()
    lines[4] = "broken_line_without_id"
    target.write_text("\n".join(lines) + "\n")
    with pytest.raises(SplitFileError, match=r"wave_test_split1.txt, line 5: expected"):
        datasets.hmdb51(tmp_path, 1, "train")
    result = datasets.hmdb51(tmp_path, 1, "all", on_error="skip")
    assert len(result) == 3570 + 1530 - 1 and len(result.problems) == 1
    (tmp_path / "fly_test_split1.txt").write_text("a.avi 1\n")
    with pytest.raises(SplitFileError, match="unknown class 'fly'"):
        datasets.hmdb51(tmp_path, 1, "train")
    with pytest.raises(SplitFileError, match="split file for class 'brush_hair' not found"):
        datasets.hmdb51(tmp_path, 2, "train")


def test_folder_split_errors(tmp_path):
    for name in ("A", "B"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "v.mp4").write_bytes(b"x")
    split = _write(tmp_path / "list.txt", "A/v.mp4\nC/v.mp4\n")
    with pytest.raises(SplitFileError, match="list.txt, line 2: unknown class 'C'"):
        datasets.folder(tmp_path, split, classes=["A", "B"])
    _write(split, "A/v.mp4\nB/w.mp4\n")
    with pytest.raises(SplitFileError, match="line 2: video B/w.mp4 not found"):
        datasets.folder(tmp_path, split, check_files=True)
    assert datasets.folder(tmp_path).as_tuples() == [("A/v.mp4", 0, "A"), ("B/v.mp4", 1, "B")]


def test_a_typo_in_a_class_folder_is_a_bad_line_not_a_class(tmp_path):
    # Before: classes [Kickflip, Nonexist, Ollie, kickflip] and a 4-class model trained.
    for name in ("Kickflip", "Ollie"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "v.mp4").write_bytes(b"x")
    split = _write(
        tmp_path / "list.txt", "Kickflip/v.mp4\nNonexist/x.mp4\nOllie/v.mp4\nkickflip/K102.mp4\n"
    )
    with pytest.raises(SplitFileError, match="line 2: video Nonexist/x.mp4 not found: no class"):
        datasets.folder(tmp_path, split)
    kept = datasets.folder(tmp_path, split, on_error="skip")
    assert kept.classes == ["Kickflip", "Ollie"]
    assert [item.path for item in kept] == ["Kickflip/v.mp4", "Ollie/v.mp4"]
    assert [p.line for p in kept.problems] == [2, 4]
    assert "no class folder 'kickflip'" in str(kept.problems[1])


def test_classes_that_differ_only_in_case_are_refused(tmp_path):
    for name in ("Kickflip", "kickflip", "Ollie"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "v.mp4").write_bytes(b"x")
    if len({p.name for p in tmp_path.iterdir()}) < 3:
        pytest.skip("a case-insensitive file system")
    split = _write(tmp_path / "list.txt", "Kickflip/v.mp4\nkickflip/v.mp4\nOllie/v.mp4\n")
    for kwargs in ({"split_file": split, "on_error": "skip"}, {}):
        with pytest.raises(SplitFileError, match="'Kickflip' and 'kickflip' differ only in case"):
            datasets.folder(tmp_path, **kwargs)
