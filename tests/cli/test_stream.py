"""`reslstm-stream` from the shell: the sample clip by default, segment by segment."""

import pytest

from tests.cli.helpers import run_cli


@pytest.mark.slow
def test_stream_plays_the_sample_clip(tmp_path):
    result = run_cli(
        "stream", "--norealtime", "--segment_len=16", "--max_segments=2", "--strip=strip.png",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("segment ")]
    assert len(lines) == 2 and all("playing cricket" in line for line in lines), result.stdout
    assert "real time" in result.stdout and (tmp_path / "strip.png").is_file()


@pytest.mark.slow
def test_a_missing_file_is_named_in_one_line(tmp_path):
    result = run_cli("stream", str(tmp_path / "gone.mp4"), "--norealtime")
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("reslstm-stream: error: cannot read video ") and "gone.mp4" in line
    assert "could not be opened: it does not exist" in line and "Traceback" not in result.stderr
