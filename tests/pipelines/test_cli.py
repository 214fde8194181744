"""`reslstm-beam`: help, one-line mistakes, and Beam's options kept apart from the tool's."""

import os
import subprocess
import sys

import pytest

from tests.conftest import require

require("apache_beam")


def _tool(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "reslstm_tf.cli.beam", *args],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "RESLSTM_FAULT"},
        timeout=300,
        cwd=cwd,
    )


@pytest.mark.slow
def test_help_lists_the_tools_flags_and_exits_0():
    result = _tool("--help")
    assert result.returncode == 0, result.stderr[-2000:]
    for flag in ("--runner", "--segments", "--weights", "--shard_size", "--config"):
        assert f"  {flag}" in result.stdout, flag
    assert "--num_shards" not in result.stdout  # the runner spreads the work
    assert "Try --helpfull" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (("extract",), "--data_dir and --out_dir are required"),
        (("convert", "--data_dir=x", "--out_dir=y"), "expected one command"),
        (("extract", "--data_dir=/no/such/folder", "--out_dir=out"), "does not exist"),
    ],
)
def test_a_mistake_is_one_line_with_exit_2(args, message, tmp_path):
    result = _tool(*args, "--", "--direct_running_mode=in_memory", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.strip().splitlines() if "reslstm-beam" in line]
    assert len(lines) == 1 and lines[0].startswith("reslstm-beam: error:"), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr
