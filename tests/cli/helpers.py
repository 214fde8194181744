"""Runs a CLI module in a subprocess, as a user's shell would."""

import os
import subprocess
import sys


def run_cli(module, *args, env=None, cwd=None, timeout=600):
    """Runs `python -m reslstm_tf.cli.<module> args...`; returns the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", f"reslstm_tf.cli.{module}", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
