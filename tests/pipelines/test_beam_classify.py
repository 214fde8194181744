"""The Beam classification pipeline writes reslstm-classify's predictions.csv, on real clips."""

import csv
import os
import subprocess
import sys

import keras
import pytest

from tests.conftest import require

require("apache_beam")

from reslstm_tf.backbones.extractor import feature_model  # noqa: E402
from reslstm_tf.models import build_single_stream  # noqa: E402
from reslstm_tf.pipelines.classify import ClassifierSource, run_classify  # noqa: E402
from reslstm_tf.pipelines.extract import pipeline_options  # noqa: E402
from reslstm_tf.predict import predict_videos  # noqa: E402
from reslstm_tf.predict.batch import write_predictions  # noqa: E402


@pytest.mark.slow
def test_beam_predictions_csv_equals_reslstm_classifys(shared_data, tmp_path):
    keras.utils.set_random_seed(0)
    build_single_stream(2, "res2", units=8, num_steps=4).save(tmp_path / "head.keras")
    weights = tmp_path / "i3d.weights.h5"  # one backbone for every worker
    feature_model("i3d", "rgb", weights=None).save_weights(weights)
    source = ClassifierSource(
        os.fspath(tmp_path / "head.keras"),
        classes=("Kickflip", "Ollie"),
        spec={"segment_len": 4, "frame_size": 32, "backbone_weights": os.fspath(weights)},
        top_k=2,
    )
    videos = [
        *sorted((shared_data / "skateboard" / "Kickflip").glob("*.mp4"))[:2],
        *sorted((shared_data / "skateboard" / "Ollie").glob("*.mp4"))[:2],
    ]
    bad = tmp_path / "notes.mp4"
    bad.write_text("a text file renamed\n")
    videos = [os.fspath(v) for v in [videos[0], bad, *videos[1:]]]
    with pytest.warns(UserWarning, match="1 of 5 videos could not be classified"):
        expected = predict_videos(source.load(), videos, progress=False)
    write_predictions(expected, tmp_path / "classify.csv", 2)
    options = pipeline_options(
        "direct", ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    )
    summary = run_classify(source, videos, tmp_path / "beam.csv", options)
    assert summary["classified"] == 4 and [f[0] for f in summary["failures"]] == [str(bad)]
    ours = (tmp_path / "beam.csv").read_text()
    assert ours == (tmp_path / "classify.csv").read_text()


@pytest.mark.slow
def test_reslstm_beam_classify_writes_the_csv_and_names_the_bad_video(shared_data, tmp_path):
    keras.utils.set_random_seed(0)
    build_single_stream(2, "res2", units=8, num_steps=4).save(tmp_path / "head.keras")
    (tmp_path / "classes.txt").write_text("Kickflip\nOllie\n")
    clip = sorted((shared_data / "skateboard" / "Ollie").glob("*.mp4"))[0]
    bad = tmp_path / "notes.mp4"
    bad.write_text("a text file renamed\n")
    out = tmp_path / "predictions.csv"
    command = [
        sys.executable,
        "-m",
        "reslstm_tf.cli.beam",
        "classify",
        os.fspath(clip),
        os.fspath(bad),
        f"--model={tmp_path / 'head.keras'}",
        f"--classes={tmp_path / 'classes.txt'}",
        "--segment_len=4",
        "--frame_size=32",
        "--weights=none",
        "--top_k=2",
        f"--out={out}",
        "--direct_running_mode=in_memory",  # not the tool's: passed to Beam
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "classified 1 videos, failed 1" in result.stdout
    rows = list(csv.DictReader(out.open()))
    assert [row["video"] for row in rows] == [os.fspath(clip), os.fspath(bad)]
    assert rows[0]["class_1"] in ("Kickflip", "Ollie") and rows[0]["error"] == ""
    assert "could not open it" in rows[1]["error"]
