"""Shared pytest fixtures: the real data beside the project, and test tiers."""

import os
import pathlib

import pytest

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _shared_data_dir():
    """Returns the real-data folder: $RESLSTM_SHARED_DATA or ../shared/data."""
    override = os.environ.get("RESLSTM_SHARED_DATA")
    if override:
        return pathlib.Path(override)
    return PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
    """Path to the real data; skips where absent, but fails under CI."""
    path = _shared_data_dir()
    if not path.is_dir():
        message = (
            f"real data folder {path} not found (set RESLSTM_SHARED_DATA or "
            "place shared/data beside the project)"
        )
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the real-data tests")
        pytest.skip(message)
    return path


def require(module):
    """Imports `module`; fails under CI (which installs the test extra), skips elsewhere."""
    try:
        return __import__(module)
    except ImportError:
        message = f"{module} is not installed (it is in the test extra)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the export tests")
        pytest.skip(message)


@pytest.fixture(autouse=True)
def _forget_tool_flags():
    """Removes the flags a test defined by running a tool in-process, whatever order tests run in.

    The tools define their flags when run (`reslstm_tf.cli`); a tool's flag left behind would
    keep its default in the next test that defines another tool's flag of the same name.
    """
    yield
    from absl import flags

    leaked = [
        name
        for name in list(flags.FLAGS)
        if (flags.FLAGS.find_module_defining_flag(name) or "").startswith("reslstm_tf")
    ]
    if leaked:
        flags.FLAGS.unparse_flags()
        for name in leaked:
            if name in flags.FLAGS:  # a flag's short name goes with its long one
                delattr(flags.FLAGS, name)
