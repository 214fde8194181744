"""The zoo trusts no manifest further than its checks, and publishing loses and deletes nothing.

* Two `reslstm-zoo publish` processes into one manifest, the first paused between reading the
  manifest and writing it: both entries are in the manifest, no weights file is orphaned.
* Publishing deletes only files it wrote (content-addressed, content matching the name) that
  no entry names: never the manifest or a class list an old entry names.
* A model with a NaN weight is refused in one line naming the variable.
* Class lists, cached files, sizes and the manifest itself are bounded and contained.
* A download killed mid-way leaves a partial file that the next fetch removes.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import keras
import numpy as np
import pytest

from reslstm_tf import files, zoo
from reslstm_tf.models import build_single_stream
from reslstm_tf.zoo import fetch
from reslstm_tf.zoo import manifest as manifests

ARCH = {"kind": "single_stream", "preset": "res2", "units": 8, "num_steps": 4}
SHA = "ab" * 32


def _entry():
    base = zoo.info("hmdb51_res2")
    return {
        **base,
        "dataset": {**base["dataset"], "name": "lab", "num_classes": 3},
        "architecture": ARCH,
        "features": {"feature_dim": 8},
    }


def _model(seed=0, name="lab_res2"):
    keras.utils.set_random_seed(seed)
    return build_single_stream(3, "res2", feature_dim=8, units=8, num_steps=4, name=name)


def _set_entry(manifest, name, **fields):
    data = json.loads(manifest.read_text())
    data["entries"][name] = {**_entry(), **fields}
    manifest.write_text(json.dumps(data))


# --- two publishers, one manifest --------------------------------------------------------------

# Runs `reslstm-zoo publish`; as process "a" it pauses at its first sha256 (its weights are
# saved, the manifest was read before) until the file `go` exists; as "b" it marks its start.
_PUBLISHER = textwrap.dedent(
    """
    import pathlib, sys, time
    from reslstm_tf import files, zoo
    from reslstm_tf.cli import zoo as cli
    role, folder = sys.argv[1], pathlib.Path(sys.argv[2])
    if role == "a":
        original = files.sha256_of
        def paused(path, *args, **kwargs):
            (folder / "a_paused").touch()
            deadline = time.monotonic() + 120
            while not (folder / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            files.sha256_of = original
            return original(path, *args, **kwargs)
        files.sha256_of = paused
    else:
        publish_files = zoo.publish_files
        def started(*args, **kwargs):
            (folder / "b_started").touch()
            return publish_files(*args, **kwargs)
        zoo.publish_files = started
    sys.argv = ["reslstm-zoo", "publish", *sys.argv[3:]]
    cli.run()
    """
)


def _publisher(role, tmp_path, manifest, name):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("RESLSTM_FAULT", None)
    args = [f"--model={tmp_path / 'model.keras'}", f"--name={name}"]
    args += [f"--entry_json={tmp_path / 'entry.json'}", f"--manifest={manifest}"]
    command = [sys.executable, "-c", _PUBLISHER, role, str(tmp_path), *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(path, process, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
def test_two_publishers_into_one_manifest_keep_both_entries(lab, tmp_path):
    _model().save(tmp_path / "model.keras")
    (tmp_path / "entry.json").write_text(json.dumps(_entry()))
    first = _publisher("a", tmp_path, lab, "lab_a")
    _wait_for(tmp_path / "a_paused", first)
    second = _publisher("b", tmp_path, lab, "lab_b")
    _wait_for(tmp_path / "b_started", second)
    try:  # without a lock b reads, writes and exits now; with it b waits for a
        second.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    (tmp_path / "go").touch()
    for process in (first, second):
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    entries = json.loads(lab.read_text())["entries"]
    assert sorted(entries) == ["lab_a", "lab_b"]
    named = sorted(entry["weights"]["file"] for entry in entries.values())
    on_disk = sorted(p.name for p in lab.parent.iterdir() if p.name != "manifest.json")
    assert on_disk == named  # no orphaned weights file
    assert [zoo.weights_path(name).name for name in ("lab_a", "lab_b")] == named


# --- publishing deletes only its own files ---------------------------------------------------


def test_publish_never_deletes_a_file_it_did_not_write(lab):
    (lab.parent / "lab_classes.txt").write_text("a\nb\nc\n")
    record = {"sha256": SHA, "bytes": 10}
    _set_entry(
        lab,
        "lab_res2",
        weights={"file": "manifest.json", **record},
        deltas={"rgb": {"file": "lab_classes.txt", **record}},
    )
    zoo.publish(_model(), "lab_res2", _entry(), manifest_path=lab)
    assert (lab.parent / "lab_classes.txt").read_text() == "a\nb\nc\n"
    assert "lab_res2" in json.loads(lab.read_text())["entries"]
    # its own replaced file is still deleted
    old = zoo.info("lab_res2")["weights"]["file"]
    zoo.publish(_model(1), "lab_res2", _entry(), manifest_path=lab)
    assert not (lab.parent / old).exists()
    assert (lab.parent / "lab_classes.txt").exists()


def test_publish_refuses_non_finite_weights_in_one_line(lab):
    model = _model()
    kernel = model.weights[0]
    value = keras.ops.convert_to_numpy(kernel).copy()
    value.flat[3] = np.nan
    kernel.assign(value)
    with pytest.raises(ValueError, match=f"variable {kernel.path} holds 1 non-finite") as error:
        zoo.publish(model, "lab_res2", _entry(), manifest_path=lab)
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in lab.parent.iterdir()) == ["manifest.json"]


# --- class lists, cached files, shadowing ----------------------------------------------------


@pytest.mark.parametrize("classes", ["../victim/secret.txt", "ABSOLUTE"])
def test_a_class_list_outside_the_manifest_folder_is_refused(lab, tmp_path, classes):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "secret.txt").write_text("password1\n")
    classes = str(victim / "secret.txt") if classes == "ABSOLUTE" else classes
    _set_entry(lab, "lab_res2", dataset={**_entry()["dataset"], "classes": classes})
    with pytest.raises(ValueError, match="classes must be a plain name"):
        zoo.class_names("lab_res2")
    with pytest.raises(ValueError, match="plain name"):
        zoo.read_class_names(classes, lab.parent)
    (lab.parent / "link.txt").symlink_to(victim / "secret.txt")
    with pytest.raises(ValueError, match="resolves outside"):
        zoo.read_class_names("link.txt", lab.parent)


def test_an_entry_with_a_wrong_hash_never_deletes_another_entrys_cached_file(lab, tmp_path):
    mirror = tmp_path / "mirror"
    good = zoo.publish(_model(), "lab_res2", _entry(), manifest_path=lab, weights_dir=mirror)
    weights = good["weights"]
    _set_entry(lab, "lab_res2", weights={**weights, "url": (mirror / weights["file"]).as_uri()})
    cached = zoo.weights_path("lab_res2")
    assert cached.parent == files.cache_dir("zoo")
    _set_entry(lab, "lab_evil", weights={**weights, "sha256": SHA})
    with pytest.raises(zoo.WeightsUnavailableError):
        zoo.weights_path("lab_evil")
    assert cached.is_file() and files.sha256_of(cached) == weights["sha256"]
    (mirror / weights["file"]).unlink()  # no source left: the cached copy must serve
    assert zoo.weights_path("lab_res2") == cached


def test_a_lab_manifest_shadowing_a_built_in_entry_warns_naming_both(lab):
    built_in = zoo.info("kinetics400_i3d")["name"]
    _set_entry(lab, built_in, description="a lab's own I3D")
    with pytest.warns(UserWarning, match=f"{built_in!r} of .*manifest.json replaces") as seen:
        entry = zoo.info("kinetics400_i3d")
    assert entry["description"] == "a lab's own I3D"  # the lab's wins
    message = str(seen[0].message)
    assert str(lab) in message and str(zoo.default_manifest_path().parent) in message
    _set_entry(lab, "lab_res2")
    with warnings.catch_warnings():  # an entry of its own name: no warning
        warnings.simplefilter("error")
        data = json.loads(lab.read_text())
        del data["entries"][built_in]
        lab.write_text(json.dumps(data))
        zoo.info("lab_res2")


def test_a_lab_entry_named_as_a_built_in_alias_warns_naming_both(lab):
    assert zoo.info("kinetics400_i3d")["name"] != "kinetics400_i3d"  # an alias of a tag
    _set_entry(lab, "kinetics400_i3d", description="a lab's own I3D")
    with pytest.warns(UserWarning, match="'kinetics400_i3d' of .* replaces the alias of") as seen:
        entry = zoo.info("kinetics400_i3d")
    assert entry["description"] == "a lab's own I3D"  # the lab's wins
    assert str(zoo.default_manifest_path().parent) in str(seen[0].message)


# --- sizes ---------------------------------------------------------------------------------


def test_a_file_over_the_size_ceiling_is_refused_before_any_download(lab, monkeypatch):
    monkeypatch.setattr(fetch, "MAX_FILE_BYTES", 1 << 20, raising=False)
    weights = {"file": "big.weights.h5", "sha256": SHA, "bytes": 2 << 20}
    _set_entry(lab, "lab_big", weights={**weights, "url": "file:///dev/zero"})
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"bytes must be in \[1, 1048576\]. Received: 2097152"):
        zoo.weights_path("lab_big")
    assert time.monotonic() - start < 2
    assert list(files.cache_dir("zoo").iterdir()) == []


def test_download_refuses_a_non_positive_limit(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"x" * 100)
    for limit in (0, -1, True, fetch.MAX_DOWNLOAD_BYTES + 1):
        with pytest.raises(ValueError, match="max_bytes must be in"):
            fetch.download(source.as_uri(), tmp_path / "out.bin", SHA, max_bytes=limit)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.bin"]


@pytest.mark.slow
def test_a_download_killed_mid_way_leaves_a_partial_that_the_next_fetch_removes(lab, tmp_path):
    source = tmp_path / "lab_big.weights.h5"
    source.write_bytes(os.urandom(3 << 20))
    record = {"file": source.name, "sha256": files.sha256_of(source), "bytes": 3 << 20}
    _set_entry(lab, "lab_big", weights={**record, "url": source.as_uri()})
    code = "import sys; from reslstm_tf import zoo; zoo.weights_path('lab_big')"
    env = dict(os.environ, RESLSTM_FAULT="zoo_download_chunk:2", TF_CPP_MIN_LOG_LEVEL="2")
    killed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (partial,) = files.cache_dir("zoo").iterdir()
    assert partial.name.endswith(".partial") and partial.stat().st_size >= 1 << 20
    assert zoo.weights_path("lab_big").is_file()  # a later fetch: the partial is gone
    assert [p.name for p in files.cache_dir("zoo").iterdir()] == [fetch.cache_name(record)]


# --- malformed manifests ---------------------------------------------------------------------

_GOOD = {"format_version": 1, "entries": {}}


def _bad_entry(**fields):
    entry = {**_entry(), **fields}
    return {"format_version": 1, "entries": {"lab_bad": entry}}


MALFORMED = {
    "a list": ([], "format_version"),
    "entries a list": ({"format_version": 1, "entries": []}, "'entries' must be an object"),
    "an empty entry": ({"format_version": 1, "entries": {"x": {}}}, "needs an object"),
    "an entry a string": ({"format_version": 1, "entries": {"x": "y"}}, "must be an object"),
    "no sha256": (_bad_entry(weights={"file": "a.weights.h5"}), "sha256 must be 64"),
    "num_classes 1e9": (
        _bad_entry(dataset={"classes": "a.txt", "num_classes": 1e9}),
        "num_classes must be an integer in",
    ),
    "bytes 10**15": (
        _bad_entry(weights={"file": "a.weights.h5", "sha256": SHA, "bytes": 10**15}),
        "bytes must be an integer in",
    ),
    "bytes negative": (
        _bad_entry(weights={"file": "a.weights.h5", "sha256": SHA, "bytes": -1}),
        "bytes must be an integer in",
    ),
    "bytes a bool": (
        _bad_entry(weights={"file": "a.weights.h5", "sha256": SHA, "bytes": True}),
        "bytes must be an integer in",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED) + ["200k deep", "over the size cap"])
def test_a_malformed_manifest_is_one_line_naming_it(lab, monkeypatch, case):
    if case == "200k deep":
        lab.write_text("[" * 200_000 + "]" * 200_000)
        expected = "nested too deeply"
    elif case == "over the size cap":
        monkeypatch.setattr(manifests, "MAX_MANIFEST_BYTES", 200_000, raising=False)
        lab.write_text(json.dumps(_GOOD) + " " * 300_000)
        expected = "bytes, over the 200000 allowed"
    else:
        manifest, expected = MALFORMED[case]
        lab.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=expected) as error:
        zoo.list()
    message = str(error.value)
    assert message.startswith(f"zoo manifest {lab}") and "\n" not in message


def test_an_absurd_num_classes_is_refused_before_any_layer_is_built(lab, monkeypatch):
    _set_entry(lab, "lab_huge", dataset={"classes": "a.txt", "num_classes": 10**9})
    built = []
    monkeypatch.setattr(keras.layers.Dense, "build", lambda *a: built.append(a))
    with pytest.raises(ValueError, match=r"num_classes must be an integer in \[1, 100000\]"):
        zoo.build("lab_huge")
    assert built == []
