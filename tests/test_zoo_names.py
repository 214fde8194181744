"""Zoo names: immutable tagged names, recorded aliases, and the readable list and card."""

import json
import re

import pytest

from reslstm_tf import files, zoo
from reslstm_tf.zoo import names, table
from reslstm_tf.zoo.publishing import free_name
from tests.cli.helpers import run_cli

RGB_DELTA = "2f264f5ecd90127723fc3540f8303d53082b589f987a6bced76cce4770d2a023"
# The immutability contract: what every tagged name loads, frozen from the manifest when tags
# were introduced. A tag's weights never change; a new model gets a new tag (add it here).
TAGGED_SHA256 = {
    "kinetics400_i3d.deepmind": {
        "weights": "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
    },
    "skateboard_lstm2.i3d112_ft": {
        "weights": "a31ae2255a892ed76938be59031b9a864e3f2277e1f5d01c5c7755191004e2f5",
        "rgb": RGB_DELTA,
    },
    "skateboard_lstm3.i3d112_ft": {
        "weights": "122f3c722e15cc9d8b95d45341cbdf2624cb9814c920e175e772e5eaa166fe80",
        "rgb": RGB_DELTA,
    },
    "skateboard_lstm3.i3d112_t4_ft_cv": {
        "weights": "c713c502de7c6ef65c67f479eb372e1f4f433592eb39482a166e1e4820ca3b97",
        "rgb": "ce9d7901bd02fa607b21887c0c0317314b9b38e61621b97960c53a87394d8216",
    },
    "skateboard_lstm3.i3d224_frozen": {
        "weights": "12ed8580af1aa121c919d9d0f76eaaceeefa35e6df63162baee3d30ecd515886"
    },
    "skateboard_lstm4.i3d112_ft": {
        "weights": "cb37ae1d6d4c0cd73eb0433a3d6a808418b70ddd419a2c5e8e640e988a4d0bf3",
        "rgb": RGB_DELTA,
    },
    "skateboard_res2.i3d112_ft": {
        "weights": "2dd05187d70680914d094c9ff7e5e7c1cb42ea19147c8471c38d72ea0df3d0ec",
        "rgb": RGB_DELTA,
    },
    "skateboard_res3.i3d112_ft": {
        "weights": "b17d390e3dcb9cfd2804ffa44039acc3799107b340a499d9abcb53b84dbfd913",
        "rgb": RGB_DELTA,
    },
    "skateboard_res4.i3d112_ft": {
        "weights": "33e67abea526ee16bd495c4103652c474f22e0c2d59936a953a86f8e8831054c",
        "rgb": RGB_DELTA,
    },
    "skateboard_twostream_res3.i3d112_ft": {
        "weights": "143164652216b64760e94f8e8d5dd1f01afc4291e626407a38a09596ddc03293",
        "rgb": RGB_DELTA,
        "flow": "2515521801ce0ff30aa1863cc0442c0d43b92034f0ed127b155f6943202dbe76",
    },
}
# Names that once loaded a model, and the tag that model now has.
FORMER_NAMES = {
    "skateboard_frozen_lstm3": "skateboard_lstm3.i3d224_frozen",
    "kinetics400_i3d": "kinetics400_i3d.deepmind",
}


def _packaged(monkeypatch):
    monkeypatch.delenv(zoo.MANIFEST_ENV, raising=False)


def _sha256s(entry):
    weights = entry["weights"]
    record = {"weights": weights.get("sha256") or weights.get("checkpoint_sha256")}
    return {**record, **{s: d["sha256"] for s, d in (entry.get("deltas") or {}).items()}}


def test_every_tagged_name_resolves_to_its_frozen_sha256(monkeypatch):
    _packaged(monkeypatch)
    tagged = [name for name in zoo.list() if names.is_tagged(name)]
    assert sorted(tagged) == sorted(TAGGED_SHA256), "a tag was added or removed"
    for name, expected in TAGGED_SHA256.items():
        entry = zoo.info(name)
        assert entry["name"] == name and "alias" not in entry
        assert _sha256s(entry) == expected, name


def test_the_packaged_files_of_every_tag_match_their_sha256(monkeypatch):
    _packaged(monkeypatch)
    folder = zoo.default_manifest_path().parent
    for name, expected in TAGGED_SHA256.items():
        entry = zoo.info(name)
        records = {"weights": entry["weights"], **(entry.get("deltas") or {})}
        for key, record in records.items():
            if "file" in record:
                assert files.sha256_of(folder / record["file"]) == expected[key], (name, key)


def test_every_published_entry_has_a_tag_and_every_tag_is_published(monkeypatch):
    _packaged(monkeypatch)
    for name in zoo.list():
        assert names.is_tagged(name) == bool(zoo.info(name).get("weights")), name


def test_delta_files_are_named_after_their_content(monkeypatch):
    _packaged(monkeypatch)
    for name in TAGGED_SHA256:
        for stream, delta in (zoo.info(name).get("deltas") or {}).items():
            assert delta["file"] == f"i3d-{stream}-delta-{delta['sha256'][:8]}.npz", name
            assert zoo.delta_path(name, stream).name == delta["file"]


def test_aliases_resolve_and_keep_their_history(monkeypatch):
    _packaged(monkeypatch)
    table_ = zoo.aliases()
    for alias, record in table_.items():
        assert not names.is_tagged(alias)
        assert record["target"] == record["history"][-1]["target"]
        entry = zoo.info(alias)
        assert entry["name"] == record["target"] and entry["alias"] == alias
    for old, tag in FORMER_NAMES.items():
        assert zoo.info(old)["name"] == tag
    # skateboard_lstm3 changed meaning twice: the history says from what, when and why.
    history = table_["skateboard_lstm3"]["history"]
    assert [h["target"] for h in history] == [
        "skateboard_lstm3.i3d224_frozen",
        "skateboard_lstm3.i3d112_ft",
        "skateboard_lstm3.i3d112_t4_ft_cv",
    ]
    assert all(h["why"] and re.fullmatch(r"\d{4}-\d\d-\d\d", h["date"]) for h in history)
    assert "skateboard_lstm3" in names.former_aliases_of("skateboard_lstm3.i3d224_frozen", table_)
    assert set(table_) <= set(zoo.list(include_aliases=True))
    assert not set(table_) & set(zoo.list())


def test_model_card_records_every_alias_change(monkeypatch):
    _packaged(monkeypatch)
    card = (zoo.default_manifest_path().parent.parent / "MODEL_CARD.md").read_text()
    for alias, record in zoo.aliases().items():
        for change in record["history"]:
            assert f"`{alias}` → `{change['target']}`" in card, (alias, change["target"])


def test_alias_tables_are_checked():
    with pytest.raises(names.AliasError, match="history ends at"):
        names.check_aliases({"a": {"target": "a.x", "history": [{"target": "a.y"}]}})
    with pytest.raises(names.AliasError, match="needs a 'target' and a 'history'"):
        names.check_aliases({"a": {"target": "a.x"}})
    loop = {"a": {"target": "b"}, "b": {"target": "a"}}
    assert names.resolve("a", {}, loop) is None
    assert names.resolve("a", {"c.t": {}}, {"a": {"target": "b"}, "b": {"target": "c.t"}}) == "c.t"


def test_unknown_names_suggest_aliases_too(monkeypatch):
    _packaged(monkeypatch)
    with pytest.raises(zoo.UnknownEntryError, match="Did you mean 'skateboard_frozen_lstm3'"):
        zoo.info("skateboard_frozn_lstm3")


def test_list_rows_carry_accuracy_protocol_size_and_input(monkeypatch):
    _packaged(monkeypatch)
    rows = {row["name"]: row for row in table.rows()}
    assert len(rows) == len(zoo.list())
    frozen = rows["skateboard_lstm3.i3d224_frozen"]
    assert frozen["accuracy"] == "77.8 ± 9.7 %"
    assert frozen["protocol"] == "5-fold CV x 3 seeds"
    assert frozen["size"] == "4.8 MB"
    assert frozen["input"] == "rgb 16x16 @224"
    assert frozen["aliases"] == "skateboard_frozen_lstm3"
    assert rows["skateboard_twostream_res3.i3d112_ft"]["input"] == "rgb+flow:farneback 4x16 @112"
    assert rows["hmdb51_twostream_res3"]["protocol"].endswith("not reproduced")
    assert rows["hmdb51_res3"]["status"] == "not published"
    published = {row["name"] for row in table.rows(published_only=True)}
    assert published == set(zoo.published()) == set(TAGGED_SHA256)
    text = table.format_list()
    assert text.splitlines()[0].split() == [title for _, title in table.COLUMNS]
    assert "(finetuned_features)" not in text


def test_info_card_is_short_text(monkeypatch):
    _packaged(monkeypatch)
    card = table.format_info("skateboard_lstm3")
    assert card.splitlines()[0] == "skateboard_lstm3.i3d112_t4_ft_cv  (alias 'skateboard_lstm3')"
    assert "82.2 ± 3.2 %" in card and "rgb 4x16 @112" in card and "licence" in card
    assert len(card.splitlines()) < 20
    unpublished = table.format_info("hmdb51_res3")
    assert "reslstm-train --preset=res3" in unpublished


@pytest.mark.slow
def test_cli_list_published_and_info_json():
    listed = run_cli("zoo", "list", "--published")
    assert listed.returncode == 0, listed.stderr[-2000:]
    rows = listed.stdout.strip().splitlines()  # piped: rows alone, no header
    assert [row.split()[0] for row in rows] == sorted(TAGGED_SHA256)
    text = run_cli("zoo", "info", "skateboard_frozen_lstm3", "--nojson")
    assert text.stdout.startswith("skateboard_lstm3.i3d224_frozen  (alias")
    machine = run_cli("zoo", "info", "skateboard_frozen_lstm3", "--json")
    assert json.loads(machine.stdout)["weights"]["sha256"].startswith("12ed8580")


def test_a_published_tag_is_never_published_again_nor_an_alias_shadowed(tmp_path):
    import keras

    from reslstm_tf.models import build_single_stream

    keras.utils.set_random_seed(0)
    model = build_single_stream(3, "res2", feature_dim=8, units=8, num_steps=4)
    base = zoo.info("hmdb51_res2")
    entry = {**base, "dataset": {**base["dataset"], "name": "lab", "num_classes": 3},
             "architecture": {"kind": "single_stream", "preset": "res2", "units": 8,
                              "num_steps": 4}, "features": {"feature_dim": 8}}  # fmt: skip
    manifest = tmp_path / "m.json"
    zoo.publish(model, "lab_res2.v1", entry, manifest_path=manifest)
    record = json.loads(manifest.read_text())
    record["aliases"] = {"lab_res2": {"target": "lab_res2.v1", "history": [
        {"target": "lab_res2.v1", "date": "2026-12-06", "why": "first publication"}]}}  # fmt: skip
    manifest.write_text(json.dumps(record))
    before = sorted(p.name for p in tmp_path.iterdir())
    model.layers[-1].set_weights([w + 1 for w in model.layers[-1].get_weights()])
    with pytest.raises(ValueError, match=r"'lab_res2.v1' is a published tag .* another tag"):
        zoo.publish(model, "lab_res2.v1", entry, manifest_path=manifest)
    with pytest.raises(ValueError, match=r"'lab_res2' is an alias of 'lab_res2.v1'"):
        zoo.publish(model, "lab_res2", entry, manifest_path=manifest)
    assert json.loads(manifest.read_text()) == record  # nothing changed, nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    zoo.publish(model, "lab_res2.v2", entry, manifest_path=manifest)  # a new tag is fine
    # A publisher naming models by recipe takes the next free tag (reslstm-study's reruns).
    assert free_name("lab_res2.new", manifest) == "lab_res2.new"
    assert free_name("lab_res2.v1", manifest) == "lab_res2.v1_2"
    zoo.publish(model, "lab_res2.ft_cv", entry, manifest_path=manifest)
    zoo.publish(model, "lab_res2.ft_cv2", entry, manifest_path=manifest)
    assert free_name("lab_res2.ft_cv", manifest) == "lab_res2.ft_cv3"
