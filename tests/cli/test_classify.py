"""`reslstm-classify`: with no argument it recognises the packaged cricket clip."""

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
def test_more_than_one_video_is_refused(tmp_path):
    result = run_cli("classify", "a.mp4", "b.mp4", cwd=tmp_path)
    assert result.returncode != 0
    assert "give at most one video path. Received: ['a.mp4', 'b.mp4']" in result.stderr
