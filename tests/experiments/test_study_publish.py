"""Publishing the study's CV-best recipe: a new immutable tag, the alias moved with history."""

import json

import pytest

from reslstm_tf import zoo


def _entry(name):
    base = zoo.info("hmdb51_res2")
    return {**base, "dataset": {**base["dataset"], "name": name, "num_classes": 3},
            "architecture": {"kind": "single_stream", "preset": "res2", "units": 8,
                             "num_steps": 4}, "features": {"feature_dim": 8}}  # fmt: skip


def _model(seed):
    import keras

    from reslstm_tf.models import build_single_stream

    keras.utils.set_random_seed(seed)
    return build_single_stream(3, "res2", feature_dim=8, units=8, num_steps=4)


def test_study_entries_are_named_by_head_clip_spec_and_recipe():
    from reslstm_tf.experiments.study_publish import cv_name, recipe_tag

    entry = {"recipe": "frozen", "clip": "i3d224_t16", "arch": "lstm", "depth": 3}
    assert cv_name("skateboard", entry) == "skateboard_lstm3.i3d224_t16_frozen_cv"
    fine = dict(entry, recipe="finetuned_features", clip="i3d112_t4", arch="res", depth=2)
    assert cv_name("skateboard", fine) == "skateboard_res2.i3d112_t4_ft_cv"
    assert recipe_tag(dict(entry, recipe="frozen_aug")) == "frozenaug_cv"


def test_a_new_tag_is_published_and_the_alias_moves_with_its_history(tmp_path):
    from reslstm_tf.zoo.publishing import move_alias

    manifest = tmp_path / "m.json"
    zoo.publish(_model(0), "lab_res2.v1", _entry("lab"), manifest_path=manifest)
    first = move_alias("lab_res2", "lab_res2.v1", "first publication", manifest,
                       date="2026-12-01", version="0.1.0")  # fmt: skip
    assert first == {"target": "lab_res2.v1", "history": [
        {"target": "lab_res2.v1", "date": "2026-12-01", "version": "0.1.0",
         "why": "first publication"}]}  # fmt: skip
    zoo.publish(_model(1), "lab_res2.v2_cv", _entry("lab"), manifest_path=manifest)
    moved = move_alias("lab_res2", "lab_res2.v2_cv", "CV-best", manifest, date="2026-12-06")
    record = json.loads(manifest.read_text())
    assert record["aliases"]["lab_res2"] == moved
    assert [h["target"] for h in moved["history"]] == ["lab_res2.v1", "lab_res2.v2_cv"]
    assert moved["history"][-1]["why"] == "CV-best" and moved["history"][-1]["version"]
    assert set(record["entries"]) == {"lab_res2.v1", "lab_res2.v2_cv"}  # both tags kept
    # a tag is never published again; an alias is never shadowed by an entry
    before = manifest.read_text()
    with pytest.raises(ValueError, match="is a published tag"):
        zoo.publish(_model(2), "lab_res2.v2_cv", _entry("lab"), manifest_path=manifest)
    with pytest.raises(ValueError, match="is an alias of 'lab_res2.v2_cv'"):
        zoo.publish(_model(2), "lab_res2", _entry("lab"), manifest_path=manifest)
    with pytest.raises(ValueError, match="already points at"):
        move_alias("lab_res2", "lab_res2.v2_cv", "again", manifest)
    with pytest.raises(ValueError, match="no such entry"):
        move_alias("lab_res2", "lab_res2.v3", "missing", manifest)
    with pytest.raises(ValueError, match="is an entry, not an alias"):
        move_alias("lab_res2.v1", "lab_res2.v2_cv", "rename", manifest)
    assert manifest.read_text() == before
