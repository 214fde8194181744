"""`reslstm-classify`: with no argument it recognises the packaged cricket clip."""

import csv
import re

import pytest

from tests.cli.helpers import run_cli


@pytest.mark.slow
def test_main_job_classifies_the_sample_clip_as_playing_cricket(tmp_path):
    result = run_cli("classify", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    whole = result.stdout.split("whole video:")[1].strip().splitlines()[:5]
    percent, name = re.fullmatch(r"\s*([\d.]+)%\s+(.+)", whole[0]).groups()
    # Measured: 96.9%, the mean over the kinetics400_i3d entry's 8 segments of 32 frames.
    assert name == "playing cricket" and float(percent) > 95.0, result.stdout
    assert all(re.fullmatch(r"\s*[\d.]+%\s+\S.*", line) for line in whole), whole
    sheet = tmp_path / "cricket_kinetics400_i3d.png"
    assert f"contact sheet: {sheet.name}" in result.stdout and sheet.stat().st_size > 50_000


@pytest.mark.slow
def test_a_split_file_is_classified_into_a_csv_with_accuracy(tmp_path, shared_data):
    root = shared_data / "skateboard"
    (tmp_path / "split.txt").write_text("Kickflip/Kickflip2.mp4\nOllie/Ollie14.mp4\n")
    result = run_cli(
        "classify",
        "--model=skateboard_frozen_lstm3",
        f"--data_dir={root}",
        "split.txt",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
    assert [row["label"] for row in rows] == ["Kickflip", "Ollie"]
    assert all(row["class_1"] in ("Kickflip", "Ollie") and not row["error"] for row in rows)
    assert all(len(row["segment_top1"].split(";")) == 16 for row in rows)
    correct = sum(row["class_1"] == row["label"] for row in rows)
    assert f"accuracy: {correct / 2:.1%} ({correct}/2 labelled videos)" in result.stdout
    assert "classified 2 videos, failed 0" in result.stdout and "videos/s" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "make, expected",
    [
        (None, "missing.mp4 does not exist: give a video file, a folder of videos or a split"),
        ("folder", "empty_folder holds no videos"),
        ("empty", "cannot read video empty.mp4: file is empty (0 bytes); give a video OpenCV"),
        ("text", "cannot read video text.mp4: OpenCV/FFmpeg could not open it"),
    ],
)
def test_bad_inputs_end_in_one_line(tmp_path, make, expected):
    name = {None: "missing.mp4", "folder": "empty_folder", "empty": "empty.mp4"}.get(make)
    name = name or "text.mp4"
    if make == "folder":
        (tmp_path / name).mkdir()
    elif make:
        (tmp_path / name).write_text("" if make == "empty" else "not a video")
    result = run_cli("classify", name, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("reslstm-classify: error: ") and expected in line, line
    assert "Traceback" not in result.stderr
