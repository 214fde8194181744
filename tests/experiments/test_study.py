"""The study on 8 real skateboard clips: every recipe runs, features are I3D's, it resumes."""

import json
import pathlib

import numpy as np
import pytest

from reslstm_tf.clip_spec import PRESETS
from reslstm_tf.experiments.config import head_options
from reslstm_tf.experiments.study import (
    StudyConfig,
    finetune_train_options,
    plan_study,
    run_study,
)


@pytest.fixture(scope="module")
def study(shared_data, tmp_path_factory):
    root = shared_data / "skateboard"
    names = [line for line in (root / "trainlist.txt").read_text().split() if line]
    few = [n for n in names if n.startswith("Kickflip")][:4]
    few += [n for n in names if n.startswith("Ollie")][:4]
    out = tmp_path_factory.mktemp("study")
    split = out / "few.txt"
    split.write_text("\n".join(few) + "\n")
    config = StudyConfig(
        data_dir=str(root), split_file=str(split), out_dir=str(out / "out"),
        flow_methods=("farneback",),
        clip=PRESETS["cpu_small"].replace(num_segments=2, segment_len=8, frame_size=64),
        frozen_clips=(PRESETS["cpu_small"].replace(num_segments=3, segment_len=8, frame_size=96),),
        tta_offsets=(0.0, 0.25),
        views=1, folds=2, seeds=1, depths=(2,), head_train=head_options(epochs=1, batch_size=4),
        finetune_train=finetune_train_options(epochs=1, batch_size=2), progress=False,
    )  # fmt: skip
    return config, run_study(config)


def _rows(config):
    with open(f"{config.out_dir}/runs.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.mark.slow
def test_every_planned_run_has_one_result_and_the_report_is_written(study):
    config, report = study
    planned = {run[0] for run in plan_study(config).runs}
    rows = _rows(config)
    assert {row["key"] for row in rows} == planned and len(rows) == len(planned)
    recipes = {row["recipe"] for row in rows}
    assert recipes == {"logreg", "frozen", "frozen_aug", "finetuned", "finetuned_features",
                       "mid_product", "late_product", "late_sum"}  # fmt: skip
    assert all(0.0 <= row["val_accuracy"] <= 1.0 and row["n_val"] == 4 for row in rows)
    assert {row["clip"] for row in rows} == {"i3d64_t2_l8", "i3d96_t3_l8"}
    assert {row["recipe"] for row in rows if row["clip"] == "i3d96_t3_l8"} == {"logreg", "frozen"}
    tta = [row for row in rows if "tta_probabilities" in row]
    assert {row["recipe"] for row in tta} == {"logreg", "frozen", "frozen_aug", "finetuned",
                                              "finetuned_features"}  # fmt: skip
    assert all(row["tta_views"] == 4 and row["clip"] == "i3d64_t2_l8" for row in tta)
    assert report["runs"] == len(planned)
    assert set(report["clips"]) == {"i3d64_t2_l8", "i3d96_t3_l8"}
    for name in ("results.md", "results.json", "depth.png"):
        assert pathlib.Path(config.out_dir, name).stat().st_size


@pytest.mark.slow
def test_frozen_features_equal_the_whole_pretrained_i3d_on_the_centred_clip(study):
    from reslstm_tf.backbones.extractor import feature_model
    from reslstm_tf.data import datasets
    from reslstm_tf.training import finetune as ft

    config, _ = study
    frozen = np.load(f"{config.out_dir}/features/rgb_frozen.npy")
    ft_config = config.finetune_config("rgb")
    videos = datasets.load_dataset("folder", data_dir=config.data_dir,
                                   split_file=config.split_file)  # fmt: skip
    clips = ft.prepare_clips(ft_config, videos)
    i3d = feature_model("i3d", "rgb", "kinetics400")
    for index in (0, 5):
        (clip,) = clips.load(index, "eval")
        expected = np.asarray(i3d(clip, training=False))  # (T, 1024): segments as a batch
        np.testing.assert_allclose(frozen[0, index], expected, atol=1e-4)
    assert not np.allclose(frozen[0], frozen[1], atol=1e-3)  # the training view differs


@pytest.mark.slow
def test_late_fusion_is_the_product_of_the_stored_stream_probabilities(study):
    config, _ = study
    rows = {row["key"]: row for row in _rows(config)}
    labels = np.array([0] * 4 + [1] * 4)
    from reslstm_tf.experiments.splits import stratified_folds

    folds = stratified_folds(labels, 2, 0)
    for fold in range(2):
        probs = [
            np.load(f"{config.out_dir}/finetuned/{s}_fold{fold}_seed0.npz")["val_probabilities"]
            for s in ("rgb", "farneback")
        ]
        expected = np.mean((probs[0] * probs[1]).argmax(-1) == labels[folds[fold]])
        key = f"late_product|i3d64_t2_l8|rgb+farneback|res3|fold{fold}|seed0"
        assert rows[key]["val_accuracy"] == pytest.approx(expected)


@pytest.mark.slow
def test_a_finished_study_resumes_without_running_or_computing_anything(study):
    config, _ = study
    before = _rows(config)
    views = sorted(pathlib.Path(config.out_dir, "views").rglob("*.npy"))
    stamps = [p.stat().st_mtime_ns for p in views]
    run_study(config)
    assert _rows(config) == before
    assert [p.stat().st_mtime_ns for p in views] == stamps


@pytest.mark.slow
def test_publishing_selects_by_cv_and_the_entries_load_and_predict(
    study, tmp_path, shared_data, monkeypatch
):
    import shutil

    from reslstm_tf import zoo
    from reslstm_tf.cli.study import publish_study
    from reslstm_tf.predict import predict_video

    config, report = study
    manifest = tmp_path / "manifest.json"
    shutil.copy(zoo.default_manifest_path(), manifest)
    dataset = {"name": "skatetest", "title": "t", "classes": "skateboard_classes.txt",
               "num_classes": 2}  # fmt: skip
    published = publish_study(config, dataset, str(manifest), "test")
    chosen = report["selection"]["best_recurrent"]
    best = max((e for e in report["summary"] if e["recipe"] in ("frozen", "frozen_aug",
                "finetuned_features")), key=lambda e: e["mean"])  # fmt: skip
    assert chosen["mean"] == best["mean"]
    (name,) = published
    assert (
        name
        == f"skatetest_{chosen['arch']}{chosen['depth']}.{chosen['clip']}_"
        + {"frozen": "frozen", "frozen_aug": "frozenaug", "finetuned_features": "ft"}[
            chosen["recipe"]
        ]
        + "_cv"
    )
    metric = published[name]["metrics"][0]
    assert metric["mean"] == pytest.approx(chosen["mean"], abs=1e-4)
    assert metric["ci95"][0] <= metric["mean"] <= metric["ci95"][1]
    assert metric["vs_logreg"]["pairs"] >= 2 and published[name]["clip"]["tag"] == chosen["clip"]
    zoo_manifest = json.loads(manifest.read_text())
    assert set(published) <= set(zoo_manifest["entries"])
    alias = name.split(".")[0]
    assert zoo_manifest["aliases"][alias]["target"] == name
    monkeypatch.setenv("RESLSTM_ZOO_MANIFEST", str(manifest))
    clip = shared_data / "skateboard" / "Ollie" / "Ollie14.mp4"
    probabilities = [p for _, p in predict_video(alias, clip, top_k=2).top_k]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_resuming_with_settings_that_change_finished_runs_is_refused(study):
    import dataclasses

    from reslstm_tf.experiments.config import AblationError

    config, _ = study
    longer = dataclasses.replace(config.head_train, epochs=2)
    with pytest.raises(AblationError, match="head_train.epochs: 1 -> 2"):
        run_study(dataclasses.replace(config, head_train=longer))
    with pytest.raises(AblationError, match="clip.frame_size: 64 -> 96"):
        run_study(dataclasses.replace(config, clip=config.clip.replace(frame_size=96)))


def test_an_earlier_flat_study_config_reads_as_the_config_it_describes():
    from reslstm_tf.experiments.study import StudyConfig

    record = {
        "data_dir": "v", "split_file": "v/list.txt", "out_dir": "o",
        "flow_methods": ["farneback"], "num_segments": 4, "segment_len": 16, "frame_size": 112,
        "short": "overlap", "head_epochs": 15, "head_batch_size": 16, "head_learning_rate": 1e-3,
        "finetune_epochs": 8, "finetune_batch_size": 8, "finetune_learning_rate": 3e-4,
        "depths": [2, 3, 4],
    }  # fmt: skip
    config = StudyConfig.from_record(record)
    # that study had no further clip specs and no test-time views
    expected = StudyConfig(data_dir="v", split_file="v/list.txt", out_dir="o",
                           flow_methods=("farneback",), depths=(2, 3, 4), frozen_clips=(),
                           tta_offsets=())  # fmt: skip
    assert config == expected and config.clip == PRESETS["cpu_small"]
    assert StudyConfig.from_record(expected.to_record()) == expected
