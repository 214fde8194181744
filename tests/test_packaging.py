"""The licence and the model card ship: in the repository, in setup.py and in the wheel."""

import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest
import setuptools

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup_kwargs():
    """What setup.py passes to `setuptools.setup`, without building anything."""
    captured = {}
    patch = pytest.MonkeyPatch()
    patch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    try:
        source = (ROOT / "setup.py").read_text(encoding="utf-8")
        exec(compile(source, str(ROOT / "setup.py"), "exec"), {"__file__": str(ROOT / "setup.py")})
    finally:
        patch.undo()
    return captured


def test_the_apache_licence_is_at_the_top_and_in_setup_py(setup_kwargs):
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert licence == (ROOT / "reslstm_tf" / "samples" / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "END OF TERMS AND CONDITIONS" in licence
    assert setup_kwargs["license"] == "Apache-2.0"
    assert setup_kwargs["license_files"] == ["LICENSE"]
    shipped = [name for _, files in setup_kwargs["data_files"] for name in files]
    assert {"LICENSE", "MODEL_CARD.md"} <= set(shipped)
    assert all((ROOT / name).is_file() for name in shipped)


@pytest.mark.slow
def test_the_wheel_holds_the_licence_and_the_model_card(tmp_path):
    source = tmp_path / "source"  # a copy, so that the build leaves the working tree alone
    ignore = shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".*cache", ".hypothesis"
    )
    shutil.copytree(ROOT, source, ignore=ignore)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    result = subprocess.run(
        [*command, "-w", str(tmp_path / "wheel"), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("reslstm_tf-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE")
               for n in names), names  # fmt: skip
    docs = [n for n in names if "/data/share/doc/reslstm-tf/" in n]
    assert sorted(pathlib.PurePath(n).name for n in docs) == ["LICENSE", "MODEL_CARD.md"]
    assert "reslstm_tf/samples/LICENSE" in names
