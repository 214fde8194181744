"""The docs say what the tools print: the recognition tools, the report's per-segment top-3."""

import pathlib
import re

import numpy as np

from reslstm_tf.cli.demo import verdict
from reslstm_tf.predict import VideoPrediction

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_names_the_recognition_tools():
    scripts = re.findall(r'"(reslstm-[a-z]+)=', (ROOT / "setup.py").read_text(encoding="utf-8"))
    for name in ("reslstm-classify", "reslstm-stream", "reslstm-demo"):
        assert name in scripts and name in README, name


def test_the_readme_says_how_many_classes_a_segment_line_shows():
    ranked = [(f"class {i}", 0.1) for i in range(5)]
    report = VideoPrediction(
        "v.mp4", "m", ranked, [ranked], np.arange(4)[None], None, 25.0
    ).format()
    (segment,) = [line for line in report.splitlines() if "segment" in line]
    assert segment.count("class ") == 3
    assert report.count("%  class") == 5  # the whole video's top-5
    text = " ".join(README.split())
    assert "top-3 Kinetics-400 actions per segment and the top-5 for the whole video" in text


def test_the_demo_ends_in_a_verdict():
    good = verdict({"res3": 0.625, "lstm3": 0.25}, 5, 5)
    assert good.startswith("verdict: the install trains: res3 fits the synthetic features")
    assert "62.5% (chance 20%)" in good and "lstm3 to 25.0% in 5 epochs" in good
    weak = verdict({"res3": 0.3, "lstm3": 0.2}, 5, 1)
    assert weak.startswith("verdict: inconclusive: res3 reached 30.0% (chance 20%) in 1 epochs")
    assert "reslstm-demo" in README and "verdict" in README
