"""The whole workflow on real clips: extract -> train -> eval -> publish -> zoo.load -> predict."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from reslstm_tf import zoo
from reslstm_tf.data import feature_cache
from reslstm_tf.predict import predict_video


def _run(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-m", f"reslstm_tf.cli.{module}", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"{module} {args}:\n{result.stderr[-3000:]}"
    return result


def _check_evaluation(model_dir, test_cache, test_items):
    """Checks the evaluation of each test video against the saved model, recomputed here."""
    import keras

    from reslstm_tf.data.feature_cache import read_features
    from reslstm_tf.data.feature_sets import select_steps
    from reslstm_tf.runs import RunDir

    run = RunDir(model_dir)
    outputs = run.eval_dir("test")
    metrics = outputs.metrics()
    probs, labels = outputs.predictions()
    records = read_features(test_cache)  # the order reslstm-eval read them in
    assert sorted(r["id"] for r in records) == sorted(test_items)
    classes = run.config()["class_names"]
    assert classes == ["Kickflip", "Ollie"]
    for record, label in zip(records, labels):
        assert record["id"].split("/")[0] == classes[label], (record["id"], label)
    model = keras.saving.load_model(run.model_file)
    steps = model.inputs[0].shape[1]  # the cached segments read at the model's T steps
    features = select_steps(np.stack([r["features"] for r in records]), steps)
    logits = model.predict(features, verbose=0)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert metrics["num_videos"] == 4
    assert metrics["top1"] == pytest.approx(np.mean(np.argmax(probs, axis=1) == labels))
    return metrics


def _check_classify_reads_the_run(model_dir, clips, test_cache):
    """Classifying videos with a run's model.keras cuts them as the run's features were cut.

    Its probabilities equal reslstm-eval's on the cached features of the same videos, with
    no class list given (the run's); a setting that would cut the clips otherwise is refused.
    """
    from reslstm_tf.predict import load_classifier, predict_videos
    from reslstm_tf.runs import RunDir

    run = RunDir(model_dir)
    classifier = load_classifier(str(run.model_file))
    assert (classifier.spec.num_segments, classifier.spec.segment_len) == (4, 8)
    assert classifier.spec.short == "overlap" and classifier.class_names == ["Kickflip", "Ollie"]
    probs, _ = run.eval_dir("test").predictions()
    ids = [r["id"] for r in feature_cache.read_features(test_cache)]  # eval's order
    batch = predict_videos(classifier, [str(clips / i) for i in ids], progress=False)
    got = np.stack([p.probabilities for p in batch.predictions])
    np.testing.assert_allclose(got, probs, atol=1e-4)
    with pytest.raises(ValueError, match=r"num_segments=8 \(the run's rgb clips: 4\)"):
        load_classifier(str(run.model_file), spec={"num_segments": 8})


@pytest.mark.slow
def test_recipe_from_videos_to_a_published_entry(shared_data, tmp_path, monkeypatch):
    clips = shared_data / "skateboard"
    lines = (clips / "trainlist.txt").read_text().split()
    kick = [x for x in lines if x.startswith("Kickflip/")]
    ollie = [x for x in lines if x.startswith("Ollie/")]
    splits = {"train": kick[:3] + ollie[:3], "test": kick[3:5] + ollie[3:5]}
    for subset, items in splits.items():
        (tmp_path / f"{subset}.txt").write_text("\n".join(items) + "\n")
        _run(
            "extract",
            "--dataset=folder",
            f"--data_dir={clips}",
            f"--split_file={tmp_path / f'{subset}.txt'}",
            "--segments=4",
            "--segment_len=8",
            "--short=overlap",
            f"--out_dir={tmp_path / 'features' / subset / 'rgb'}",
        )
    model_dir = tmp_path / "run"
    _run(
        "train",
        "--preset=res2",
        "--units=32",
        f"--features_dir={tmp_path / 'features'}",
        "--split=train",
        "--epochs=3",
        "--batch_size=2",
        f"--model_dir={model_dir}",
    )
    _run(
        "eval",
        f"--model_dir={model_dir}",
        f"--features_dir={tmp_path / 'features'}",
        "--split=test",
    )
    metrics = _check_evaluation(model_dir, tmp_path / "features" / "test" / "rgb", splits["test"])
    _check_classify_reads_the_run(model_dir, clips, tmp_path / "features" / "test" / "rgb")

    (tmp_path / "skate_classes.txt").write_text("Kickflip\nOllie\n")
    entry = {
        "description": "end-to-end test entry",
        "dataset": {"name": "skate", "classes": "skate_classes.txt", "num_classes": 2},
        "architecture": {"kind": "single_stream", "preset": "res2", "units": 32, "num_steps": 4},
        "features": {
            "rgb": {
                "backbone": "i3d",
                "feature_dim": 1024,
                "num_segments": 4,
                "segment_len": 8,
                "frame_size": 224,
                "resize_short_side": 256,
                "short": "overlap",
            }
        },
        "metrics": [],
    }
    (tmp_path / "entry.json").write_text(json.dumps(entry))
    manifest = tmp_path / "zoo" / "manifest.json"
    _run(
        "zoo",
        "publish",
        f"--model_dir={model_dir}",
        "--name=skate_res2",
        f"--entry_json={tmp_path / 'entry.json'}",
        f"--manifest={manifest}",
    )
    (manifest.parent / "skate_classes.txt").write_text("Kickflip\nOllie\n")
    monkeypatch.setenv("RESLSTM_ZOO_MANIFEST", str(manifest))
    assert zoo.info("skate_res2")["metrics"][0]["top1"] == metrics["top1"]
    ranked = predict_video("skate_res2", clips / splits["test"][0], top_k=2, progress=False).top_k
    assert sorted(name for name, _ in ranked) == ["Kickflip", "Ollie"]
    assert np.isclose(sum(p for _, p in ranked), 1.0, atol=1e-5)
