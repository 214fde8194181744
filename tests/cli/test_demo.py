"""`reslstm-demo` from the shell: it runs, and refuses bad flags."""

import pytest

from tests.cli.helpers import run_cli


@pytest.mark.slow
def test_bad_flags_are_refused():
    result = run_cli("demo", "--epochs=0")
    assert result.returncode == 2
    assert "flag --epochs=0: 0 is not a positive integer" in result.stderr
    assert "Traceback" not in result.stderr
    assert run_cli("demo", "--help").returncode == 0


@pytest.mark.slow
def test_demo_runs():
    result = run_cli("demo", "--epochs=1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "res3: training accuracy" in result.stdout
