"""The zoo against crashes and hostile manifests, with real processes and real files.

* `reslstm-zoo publish` killed by SIGKILL after writing the new weights and after replacing
  the manifest: the entry always loads, with the old weights or the new, and a rerun
  publishes the new ones and leaves only their file.
* A manifest whose `weights.file` climbs out of the cache (`../../victim/planted.txt` with a
  `file://` url; `../../victim/important.txt` with a wrong sha256) or whose cached file is
  a link outside: refused, nothing outside the cache is written, read into it or deleted.
* A download longer than its entry's declared `bytes` (`file:///dev/zero`): stopped just past
  the declared size, refused, nothing left in the cache.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from reslstm_tf import files, zoo
from reslstm_tf.models import build_single_stream

ARCH = {"kind": "single_stream", "preset": "res2", "units": 8, "num_steps": 4}


def _entry():
    base = zoo.info("hmdb51_res2")
    return {
        **base,
        "dataset": {**base["dataset"], "name": "lab", "num_classes": 3},
        "architecture": ARCH,
        "features": {"feature_dim": 8},
    }


def _model(seed):
    keras.utils.set_random_seed(seed)
    return build_single_stream(3, "res2", feature_dim=8, units=8, num_steps=4, name="lab_res2")


def _set_entry(manifest, name, weights):
    data = json.loads(manifest.read_text())
    data["entries"][name] = {**_entry(), "weights": weights}
    manifest.write_text(json.dumps(data))


# --- publish killed mid-way ------------------------------------------------------------------


def _publish_process(manifest, model_path, entry_json, fault=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("RESLSTM_FAULT", None)
    if fault:
        env["RESLSTM_FAULT"] = fault
    command = [
        sys.executable, "-m", "reslstm_tf.cli.zoo", "publish", f"--model={model_path}",
        "--name=lab_res2", f"--entry_json={entry_json}", f"--manifest={manifest}",
    ]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def _predict(x):
    return zoo.load("lab_res2").predict(x, verbose=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "point, loads", [("publish_weights_written", "old"), ("publish_manifest_written", "new")]
)
def test_publish_killed_leaves_an_entry_that_loads(lab, tmp_path, point, loads):
    x = np.random.default_rng(0).random((2, 4, 8)).astype("float32")
    old, new = _model(0), _model(1)
    zoo.publish(old, "lab_res2", _entry(), manifest_path=lab)
    old_file = zoo.info("lab_res2")["weights"]["file"]
    new.save(tmp_path / "new.keras")
    (tmp_path / "entry.json").write_text(json.dumps(_entry()))
    expected = {"old": old.predict(x, verbose=0), "new": new.predict(x, verbose=0)}

    killed = _publish_process(lab, tmp_path / "new.keras", tmp_path / "entry.json", point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    np.testing.assert_allclose(_predict(x), expected[loads])  # verified, loads
    assert (lab.parent / old_file).is_file()  # nothing deleted before the manifest moved on

    rerun = _publish_process(lab, tmp_path / "new.keras", tmp_path / "entry.json")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    np.testing.assert_allclose(_predict(x), expected["new"])
    new_file = zoo.info("lab_res2")["weights"]["file"]
    assert new_file != old_file
    assert sorted(p.name for p in lab.parent.iterdir()) == sorted(["manifest.json", new_file])


# --- paths out of the cache --------------------------------------------------------------------


def _victim(tmp_path):
    """tmp_path/victim, which `../../victim` from the cache folder tmp_path/home/zoo reaches."""
    victim = tmp_path / "victim"
    victim.mkdir()
    return victim


def test_weights_file_climbing_out_of_the_cache_is_not_written(lab, tmp_path):
    victim = _victim(tmp_path)
    payload = tmp_path / "payload.txt"
    payload.write_text("planted")
    _set_entry(
        lab,
        "lab_evil",
        {
            "file": "../../victim/planted.txt",
            "sha256": files.sha256_of(payload),
            "bytes": payload.stat().st_size,
            "url": payload.as_uri(),
        },
    )
    with pytest.raises(ValueError, match=r"must be a plain name.*'\.\./\.\./victim/planted\.txt'"):
        zoo.weights_path("lab_evil")
    assert not (victim / "planted.txt").exists()
    assert sorted(victim.iterdir()) == []


def test_weights_file_with_a_wrong_sha256_outside_the_cache_is_not_deleted(lab, tmp_path):
    victim = _victim(tmp_path)
    (victim / "important.txt").write_text("keep me")
    files.cache_dir("zoo")
    assert (files.cache_dir("zoo") / "../../victim/important.txt").resolve().is_file()
    _set_entry(
        lab, "lab_evil", {"file": "../../victim/important.txt", "sha256": "0" * 64, "bytes": 7}
    )
    with pytest.raises(ValueError, match="must be a plain name"):
        zoo.weights_path("lab_evil")
    assert (victim / "important.txt").read_text() == "keep me"


def test_cached_link_to_a_file_outside_is_refused_and_kept(lab, tmp_path):
    victim = _victim(tmp_path)
    (victim / "important.txt").write_text("keep me")
    (files.cache_dir("zoo") / "lab_evil.weights.h5").symlink_to(victim / "important.txt")
    _set_entry(lab, "lab_evil", {"file": "lab_evil.weights.h5", "sha256": "0" * 64, "bytes": 7})
    with pytest.raises(ValueError, match="resolves outside"):
        zoo.weights_path("lab_evil")
    assert (victim / "important.txt").read_text() == "keep me"


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "..", "/abs", ""])
def test_entry_names_must_be_plain(lab, name):
    with pytest.raises(ValueError, match="plain name"):
        zoo.publish(None, name, _entry(), manifest_path=lab)
    data = json.loads(lab.read_text())
    data["entries"][name] = _entry()
    lab.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"zoo manifest {lab}: entry name must be a plain"):
        zoo.list()


# --- downloads past their size ---------------------------------------------------------------


def test_download_stops_at_the_declared_size(lab, tmp_path):
    _set_entry(
        lab,
        "lab_zero",
        {
            "file": "lab_zero.weights.h5",
            "sha256": "0" * 64,
            "bytes": 1000,
            "url": "file:///dev/zero",
        },
    )
    start = time.monotonic()
    with pytest.raises(zoo.WeightsUnavailableError, match=r"sent more than 66536 bytes"):
        zoo.weights_path("lab_zero")
    assert time.monotonic() - start < 5
    assert list(files.cache_dir("zoo").iterdir()) == []
