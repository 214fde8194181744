"""Importing the library is as quiet as the tools, and the user's own log settings win."""

import os
import subprocess
import sys

import pytest

CODE = """
import logging, os, sys
import reslstm_tf
assert "tensorflow" not in sys.modules  # the package alone does not start TensorFlow
import reslstm_tf.predict
logging.warning("the user's own warning")
print(os.environ["TF_CPP_MIN_LOG_LEVEL"])
"""


def _import(level=None):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    return subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.slow
def test_importing_the_library_prints_nothing_but_the_users_logging():
    quiet = _import()
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stdout.strip() == "3"
    assert quiet.stderr == "WARNING:root:the user's own warning\n", quiet.stderr[-2000:]


@pytest.mark.slow
def test_the_users_log_level_wins():
    loud = _import("0")
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert loud.stdout.strip() == "0"
    assert "the user's own warning" in loud.stderr
    assert len(loud.stderr.strip().splitlines()) > 1, "level 0 showed no TensorFlow log"
    kept = _import("1")
    assert kept.returncode == 0 and kept.stdout.strip() == "1", kept.stderr[-2000:]
