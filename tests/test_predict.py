"""Recognising a real video: the packaged cricket clip, DeepMind's gif, the report, bad files."""

import numpy as np
import pytest

from reslstm_tf import zoo
from reslstm_tf.data.video import VideoReadError, probe
from reslstm_tf.predict import (
    Classifier,
    contact_sheet,
    load_classifier,
    predict_video,
    sample_video_path,
)


@pytest.fixture(scope="module")
def i3d():
    return load_classifier("kinetics400_i3d")


def test_sample_clip_ships_with_its_licence():
    clip = sample_video_path()
    info = probe(clip)
    assert (info.frame_count, info.width, info.height) == (79, 224, 224)
    assert clip.stat().st_size < 1_000_000
    assert "Apache License" in (clip.parent / "LICENSE").read_text(encoding="utf-8")
    assert "google-deepmind/kinetics-i3d" in (clip.parent / "NOTICE").read_text(encoding="utf-8")


@pytest.mark.slow
def test_sample_clip_is_playing_cricket_with_a_report_and_contact_sheet(i3d, tmp_path):
    import matplotlib.image

    prediction = predict_video(i3d, sample_video_path(), top_k=5, progress=False)
    # Measured: 0.969 as the mean of the entry's 8 segments of 32 frames (0.990 as one
    # 79-frame segment); every segment alone ranks cricket first (0.87 at worst).
    name, p = prediction.top_k[0]
    assert name == "playing cricket" and p > 0.95, prediction.top_k
    assert all(ranked[0][0] == "playing cricket" for ranked in prediction.segments)
    probabilities = [q for _, q in prediction.top_k]
    assert probabilities == sorted(probabilities, reverse=True)
    assert len(prediction.segments) == 8 == len(prediction.thumbnails)
    assert prediction.thumbnails.shape[1:] == (224, 224, 3)
    # Centred 32-frame windows spread over the whole 79-frame clip, in order.
    starts = prediction.frame_indices[:, 0]
    assert np.all(np.diff(starts) >= 0) and starts[0] == 0 and prediction.frame_indices.max() == 78
    report = prediction.format()
    assert report.count("segment") == 8 and "whole video" in report
    assert "playing cricket" in report.splitlines()[-5]
    sheet = contact_sheet(prediction, tmp_path / "sheet.png")
    image = matplotlib.image.imread(sheet)
    assert image.shape[0] > 500 and image.shape[1] > 500


@pytest.mark.slow
def test_deepmind_gif_is_playing_cricket(i3d, shared_data):
    clip = shared_data / "kinetics_i3d" / "v_CricketShot_g04_c01_rgb.gif"
    prediction = predict_video(i3d, clip, top_k=5, progress=False)
    name, p = prediction.top_k[0]
    assert name == "playing cricket" and p > 0.93, prediction.top_k  # Measured 0.954.


def test_unreadable_video_is_named(i3d, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video")
    with pytest.raises(VideoReadError, match="broken.mp4"):
        predict_video(i3d, bad, progress=False)
    with pytest.raises(ValueError, match=r"top_k must be in \[1, 400\]"):
        predict_video(i3d, bad, top_k=0, progress=False)


def test_classifier_needs_a_zoo_entry(i3d):
    assert isinstance(i3d, Classifier) and load_classifier(i3d) is i3d
    assert i3d.takes_frames and len(i3d.class_names) == 400 and i3d.spec["num_segments"] == 8
    with pytest.raises(ValueError, match="a zoo entry name or a model from reslstm_tf.zoo.load"):
        load_classifier(object())
    with pytest.raises(ValueError, match="needs optical flow features too"):
        load_classifier(zoo.load("hmdb51_twostream_res2", weights=None))
    head = load_classifier(zoo.load("hmdb51_res2", weights=None))
    assert not head.takes_frames and len(head.class_names) == 51
