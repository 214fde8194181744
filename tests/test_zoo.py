"""The zoo: registry, unpublished entries, verified download, cache, mirror and tampering."""

import json
import re

import keras
import numpy as np
import pytest

from reslstm_tf import files, zoo
from reslstm_tf.models import build_single_stream
from reslstm_tf.zoo import table

# Res-LSTM heads; the fine-tuned video classifiers are tested in test_zoo_video_classifier.py.
HEAD_KINDS = ("single_stream", "two_stream")
HEADS = [n for n in zoo.list() if zoo.info(n)["architecture"]["kind"] in HEAD_KINDS]


def test_registry_names_the_paper_models():
    names = set(zoo.list())
    for dataset in ("hmdb51", "ucf101"):
        for depth in (2, 3, 4):
            assert {f"{dataset}_res{depth}", f"{dataset}_lstm{depth}"} <= names
            assert f"{dataset}_twostream_res{depth}" in names
    # The I3D is published under a tagged name; its bare name is an alias to it.
    assert "kinetics400_i3d" in set(zoo.list(include_aliases=True))
    assert zoo.info("kinetics400_i3d")["name"] in names


@pytest.mark.slow
@pytest.mark.parametrize("name", HEADS)
def test_every_head_entry_builds_its_architecture(name):
    entry = zoo.info(name)
    model = zoo.load(name, weights=None)
    assert model.output_shape == (None, entry["dataset"]["num_classes"])
    assert len(zoo.class_names(name)) == entry["dataset"]["num_classes"]
    preset = entry["architecture"]["preset"]
    layer_name = "rgb_residual_lstm" if entry["architecture"]["kind"] == "two_stream" else None
    layer = model.get_layer(layer_name or "residual_lstm")
    assert layer.num_layers == int(preset[-1])
    assert layer.residual == preset.startswith("res")


def test_unpublished_entry_refuses_and_says_how():
    with pytest.raises(zoo.WeightsNotPublishedError) as error:
        zoo.load("hmdb51_res3")
    message = str(error.value)
    assert "no published weights" in message
    assert "reslstm-train --preset=res3" in message
    assert "weights=None" in message


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match=re.escape("Did you mean 'hmdb51_res3'")):
        zoo.load("hmdb_res3")
    with pytest.raises(ValueError, match="weights must be 'auto', None or a path"):
        zoo.load("hmdb51_res3", weights=3)


@pytest.fixture
def lab_zoo(tmp_path, monkeypatch):
    """A lab's own zoo: a manifest with one published entry, weights on a file:// mirror."""
    monkeypatch.setenv("RESLSTM_HOME", str(tmp_path / "home"))
    keras.utils.set_random_seed(0)
    model = build_single_stream(3, "res2", feature_dim=8, units=8, num_steps=4, name="lab_res2")
    base = zoo.info("hmdb51_res2")
    entry = {
        **base,
        "dataset": {**base["dataset"], "name": "lab", "num_classes": 3},
        "architecture": {"kind": "single_stream", "preset": "res2", "units": 8, "num_steps": 4},
        "features": {"feature_dim": 8},
        "metrics": [{"top1": 1.0, "split": "val", "command": "pytest"}],
    }
    manifest = tmp_path / "lab" / "manifest.json"
    mirror = tmp_path / "mirror"
    published = zoo.publish(model, "lab_res2", entry, manifest_path=manifest, weights_dir=mirror)
    monkeypatch.setenv("RESLSTM_ZOO_MANIFEST", str(manifest))
    monkeypatch.setenv("RESLSTM_ZOO_URL", mirror.as_uri())
    x = np.random.default_rng(0).random((2, 4, 8)).astype("float32")
    return model, x, mirror / published["weights"]["file"]


def test_published_weights_download_verify_and_cache(lab_zoo, monkeypatch):
    model, x, remote = lab_zoo
    assert "lab_res2" in zoo.published()
    loaded = zoo.load("lab_res2")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    cached = files.cache_dir("zoo") / f"{files.sha256_of(remote)}-{remote.name}"
    assert cached.is_file()  # cached under the sha256 its entry declares
    # No network: the verified cache is used.
    monkeypatch.delenv("RESLSTM_ZOO_URL")
    remote.unlink()
    again = zoo.load("lab_res2")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0))


def test_tampered_download_is_refused_and_nothing_kept(lab_zoo):
    _, _, remote = lab_zoo
    data = bytearray(remote.read_bytes())
    data[-100] ^= 0xFF
    remote.write_bytes(bytes(data))
    with pytest.raises(zoo.WeightsUnavailableError, match="sha256 mismatch"):
        zoo.load("lab_res2")
    assert list(files.cache_dir("zoo").iterdir()) == []


def test_tampered_cache_is_refused_and_refetched(lab_zoo, monkeypatch):
    model, x, remote = lab_zoo
    zoo.load("lab_res2")
    cached = files.cache_dir("zoo") / f"{files.sha256_of(remote)}-{remote.name}"
    cached.write_bytes(b"tampered")
    monkeypatch.delenv("RESLSTM_ZOO_URL")
    with pytest.raises(zoo.WeightsUnavailableError, match="not cached"):
        zoo.load("lab_res2")
    assert not cached.exists()
    monkeypatch.setenv("RESLSTM_ZOO_URL", remote.parent.as_uri())
    loaded = zoo.load("lab_res2")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_publish_records_sha256_and_metrics(lab_zoo, tmp_path):
    _, _, remote = lab_zoo
    manifest = json.loads((tmp_path / "lab" / "manifest.json").read_text())
    weights = manifest["entries"]["lab_res2"]["weights"]
    assert weights["sha256"] == files.sha256_of(remote)
    assert weights["file"] == f"lab_res2-{weights['sha256'][:8]}.weights.h5" == remote.name
    assert weights["bytes"] == remote.stat().st_size
    assert manifest["entries"]["lab_res2"]["metrics"][0]["command"] == "pytest"


def test_republish_writes_a_new_file_and_deletes_the_old(lab_zoo, tmp_path):
    model, x, remote = lab_zoo
    model.layers[-1].set_weights([w + 1 for w in model.layers[-1].get_weights()])
    manifest = tmp_path / "lab" / "manifest.json"
    entry = zoo.info("lab_res2")
    new = zoo.publish(model, "lab_res2", entry, manifest_path=manifest, weights_dir=remote.parent)
    assert new["weights"]["file"] != remote.name
    assert sorted(p.name for p in remote.parent.iterdir()) == [new["weights"]["file"]]
    loaded = zoo.load("lab_res2")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_bad_manifest_is_named(tmp_path, monkeypatch):
    bad = tmp_path / "manifest.json"
    bad.write_text("{not json")
    monkeypatch.setenv("RESLSTM_ZOO_MANIFEST", str(bad))
    with pytest.raises(ValueError, match=re.escape(f"zoo manifest {bad} is not valid JSON")):
        zoo.list()


def test_publish_files_then_load(tmp_path, monkeypatch):
    monkeypatch.setenv("RESLSTM_HOME", str(tmp_path / "home"))
    model = build_single_stream(3, "res2", feature_dim=8, units=8, num_steps=4)
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    (run / "eval_test").mkdir()
    (run / "eval_test" / "metrics.json").write_text(json.dumps({"top1": 0.25}))
    entry = {
        **zoo.info("hmdb51_res2"),
        "dataset": {"name": "lab", "classes": "hmdb51_classes.txt", "num_classes": 3},
        "architecture": {"kind": "single_stream", "preset": "res2", "units": 8, "num_steps": 4},
        "features": {"feature_dim": 8},
        "metrics": [{"top1": 0.5, "command": "x"}],
    }
    (tmp_path / "entry.json").write_text(json.dumps(entry))
    manifest = tmp_path / "zoo" / "manifest.json"
    published = zoo.publish_files(
        None, "lab_res2", tmp_path / "entry.json", manifest, model_dir=run
    )
    assert published["metrics"][-1] == {"top1": 0.25, "source": "reslstm-eval, split test"}
    monkeypatch.setenv("RESLSTM_ZOO_MANIFEST", str(manifest))
    x = np.random.default_rng(0).random((2, 4, 8)).astype("float32")
    loaded = zoo.load("lab_res2")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert published["weights"]["sha256"] == zoo.info("lab_res2")["weights"]["sha256"]
    with pytest.raises(FileNotFoundError, match="is .* a reslstm-train model_dir"):
        zoo.publish_files(None, "x", tmp_path / "entry.json", manifest, model_dir=tmp_path)


def test_publish_refuses_an_entry_declaring_other_features_than_the_run_trained_on(tmp_path):
    model = build_single_stream(3, "res2", feature_dim=8, units=8, num_steps=4)
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    trained = {"backbone": "i3d", "weights": "kinetics400", "segment_len": 8, "frame_size": 224}
    (run / "train_config.json").write_text(json.dumps({"feature_spec": {"rgb": trained}}))
    declared = {"backbone": "i3d", "backbone_weights": "kinetics400", "segment_len": 32}
    entry = {
        **zoo.info("hmdb51_res2"),
        "architecture": {"kind": "single_stream", "preset": "res2", "units": 8, "num_steps": 4},
        "features": {"rgb": {**declared, "frame_size": 224}, "feature_dim": 8},
    }
    (tmp_path / "entry.json").write_text(json.dumps(entry))
    manifest = tmp_path / "zoo" / "manifest.json"
    with pytest.raises(ValueError, match=r"segment_len: 8 \(training\) vs 32") as refused:
        zoo.publish_files(None, "lab", tmp_path / "entry.json", manifest, model_dir=run)
    assert "frame_size" not in str(refused.value) and "weights" not in str(refused.value)
    assert not manifest.exists()
    entry["features"]["rgb"]["segment_len"] = 8
    (tmp_path / "entry.json").write_text(json.dumps(entry))
    published = zoo.publish_files(None, "lab", tmp_path / "entry.json", manifest, model_dir=run)
    assert published["features"]["rgb"]["segment_len"] == 8


def test_format_list_has_a_line_per_entry():
    lines = table.format_list(header=False).splitlines()
    assert len(lines) == len(zoo.list())
    assert any(line.startswith("kinetics400_i3d") and "published" in line for line in lines)


def test_build_uses_the_manifest_architecture():
    model = zoo.build("hmdb51_twostream_res2")
    assert model.name == "hmdb51_twostream_res2"
    assert set(model.input) == {"rgb", "flow"} and model.output_shape == (None, 51)
    assert model.get_layer("fusion").method == "product"


def test_published_weights_get_the_umask_mode_not_mkstemp_0600(tmp_path):
    import os
    import stat

    model = build_single_stream(3, "res2", feature_dim=8, units=8, num_steps=4, name="lab_res2")
    base = zoo.info("hmdb51_res2")
    entry = {**base, "dataset": {**base["dataset"], "name": "lab", "num_classes": 3},
             "architecture": {"kind": "single_stream", "preset": "res2", "units": 8,
                              "num_steps": 4}, "features": {"feature_dim": 8}}  # fmt: skip
    previous = os.umask(0o022)
    try:
        published = zoo.publish(model, "lab_res2", entry, manifest_path=tmp_path / "m.json")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / published["weights"]["file"]).stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o644
