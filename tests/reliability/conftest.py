"""Fixtures the reliability tests share."""

import json

import pytest

from reslstm_tf import files, zoo


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A lab manifest in tmp_path/lab, read through $RESLSTM_ZOO_MANIFEST, cache in home/."""
    monkeypatch.setenv(files.CACHE_ENV, str(tmp_path / "home"))
    monkeypatch.delenv(zoo.MIRROR_ENV, raising=False)
    manifest = tmp_path / "lab" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"format_version": 1, "entries": {}}))
    monkeypatch.setenv(zoo.MANIFEST_ENV, str(manifest))
    return manifest
