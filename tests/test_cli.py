"""The thin CLIs: zoo list/info/publish, export, demo; flags map onto library functions."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from reslstm_tf import zoo
from reslstm_tf.cli.zoo import publish_from_files
from reslstm_tf.models import build_single_stream


def _cli(module, *args, env=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", f"reslstm_tf.cli.{module}", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_zoo_list_and_info():
    listed = _cli("zoo", "list")
    assert listed.returncode == 0, listed.stderr[-2000:]
    rows = listed.stdout.strip().splitlines()
    assert len(rows) == len(zoo.list())
    assert any(r.startswith("hmdb51_res3") and "not published" in r for r in rows)
    info = _cli("zoo", "info", "ucf101_twostream_res3")
    assert json.loads(info.stdout)["architecture"]["fusion"] == "product"
    bad = _cli("zoo", "info", "ucf101_rez3")
    assert bad.returncode != 0 and "Did you mean 'ucf101_res3'" in bad.stderr


def test_publish_from_files_then_load(tmp_path, monkeypatch):
    monkeypatch.setenv("RESLSTM_HOME", str(tmp_path / "home"))
    model = build_single_stream(3, "res2", feature_dim=8, units=8, num_steps=4)
    model.save(tmp_path / "model.keras")
    entry = {
        **zoo.info("hmdb51_res2"),
        "dataset": {"name": "lab", "classes": "hmdb51_classes.txt", "num_classes": 3},
        "architecture": {"kind": "single_stream", "preset": "res2", "units": 8, "num_steps": 4},
        "features": {"feature_dim": 8},
        "metrics": [{"top1": 0.5, "command": "x"}],
    }
    (tmp_path / "entry.json").write_text(json.dumps(entry))
    manifest = tmp_path / "zoo" / "manifest.json"
    published = publish_from_files(
        tmp_path / "model.keras", "lab_res2", tmp_path / "entry.json", manifest
    )
    monkeypatch.setenv("RESLSTM_ZOO_MANIFEST", str(manifest))
    x = np.random.default_rng(0).random((2, 4, 8)).astype("float32")
    loaded = zoo.load("lab_res2")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert published["weights"]["sha256"] == zoo.info("lab_res2")["weights"]["sha256"]


@pytest.mark.slow
def test_bad_flags_are_refused():
    result = _cli("demo", "--epochs=0")
    assert result.returncode != 0
    assert "flag --epochs=0: 0 is not a positive integer" in result.stderr
    result = _cli("zoo", "launch")
    assert result.returncode != 0
    assert "give one of list, info, publish. Received: ['launch']" in result.stdout + result.stderr


@pytest.mark.slow
def test_demo_runs():
    result = _cli("demo", "--epochs=1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "res3: training accuracy" in result.stdout


def test_flags_are_defined_at_run_time_only():
    from absl import flags

    import reslstm_tf.cli.classify  # noqa: F401
    import reslstm_tf.cli.export  # noqa: F401
    import reslstm_tf.cli.zoo  # noqa: F401

    assert "export_dir" not in flags.FLAGS and "entry_json" not in flags.FLAGS
    keras.backend.clear_session()
