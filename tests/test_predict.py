"""Recognising a real video with the zoo: the cricket clip, the sample clip, bad files."""

import numpy as np
import pytest

from reslstm_tf import zoo
from reslstm_tf.data.video import VideoReadError
from reslstm_tf.predict import contact_sheet, predict_video, sample_video_path


@pytest.fixture(scope="module")
def i3d():
    return zoo.load("kinetics400_i3d")


@pytest.mark.slow
def test_cricket_clip_is_playing_cricket(i3d, shared_data):
    clip = shared_data / "kinetics_i3d" / "v_CricketShot_g04_c01_rgb.gif"
    ranked = zoo.predict(i3d, clip, top_k=5)
    assert ranked[0][0] == "playing cricket"
    assert ranked[0][1] > 0.5
    assert [p for _, p in ranked] == sorted((p for _, p in ranked), reverse=True)


@pytest.mark.slow
def test_sample_video_report_and_contact_sheet(i3d, tmp_path):
    import matplotlib.image

    prediction = predict_video(i3d, sample_video_path(), top_k=5, progress=False)
    assert len(prediction.segments) == 8 == len(prediction.thumbnails)
    assert prediction.thumbnails.shape[1:] == (224, 224, 3)
    # Segments are centred windows spread over the whole 250-frame clip, in order.
    starts = prediction.frame_indices[:, 0]
    assert np.all(np.diff(starts) > 0) and starts[0] < 32 and prediction.frame_indices.max() < 250
    total = sum(p for _, p in prediction.top_k)
    assert 0 < total <= 1 + 1e-6
    report = prediction.format()
    assert report.count("segment") == 8 and "whole video" in report
    sheet = contact_sheet(prediction, tmp_path / "sheet.png")
    image = matplotlib.image.imread(sheet)
    assert image.shape[0] > 500 and image.shape[1] > 500


def test_unreadable_video_is_named(i3d, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video")
    with pytest.raises(VideoReadError, match="broken.mp4"):
        predict_video(i3d, bad, progress=False)
    with pytest.raises(ValueError, match=r"top_k must be in \[1, 400\]"):
        predict_video(i3d, bad, top_k=0, progress=False)
