"""Online recognition over a real clip: reslstm-stream and `stream_video`."""

import numpy as np
import pytest

from reslstm_tf import zoo
from reslstm_tf.cli.stream import draw_strip, stream, summarize
from reslstm_tf.data.video import VideoReadError, probe, read_frames, to_float, transform_frames
from reslstm_tf.streaming import StreamEvent, stream_video


@pytest.fixture(scope="module")
def cricket(shared_data):
    return shared_data / "kinetics_i3d" / "v_CricketShot_g04_c01_rgb.gif"


@pytest.mark.slow
def test_stream_follows_the_clip_and_matches_offline_i3d(cricket, tmp_path):
    model = zoo.load("kinetics400_i3d")
    events = list(stream_video(cricket, model, segment_len=16, frame_size=224, realtime=False))
    assert [e.index for e in events] == [0, 1, 2, 3]  # 79 frames: 4 full windows of 16.
    assert events[-1].ranked[0][0] == "playing cricket"
    # The first event equals I3D on the same 16 frames decoded and cropped offline.
    frames = transform_frames(
        read_frames(cricket, np.arange(16)), short_side=224, crop_size=224, as_float=False
    )
    logits = model.predict_on_batch(to_float(frames)[None])[0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    names = zoo.class_names("kinetics400_i3d")
    assert events[0].ranked[0] == pytest.approx((names[int(p.argmax())], p.max()), abs=1e-4)
    assert all(e.compute_ms > 0 and e.latency_ms >= e.compute_ms for e in events)
    assert events[-1].end_s == pytest.approx(64 / probe(cricket).fps, rel=1e-6)


@pytest.mark.slow
def test_stream_cli_summary_and_strip(cricket, tmp_path, capsys):
    events, summary = stream(
        str(cricket), segment_len=16, frame_size=224, realtime=False, strip=tmp_path / "strip.png"
    )
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("segment ")]
    assert len(lines) == len(events) == summary["segments"] == 4
    assert "real time" in out and (tmp_path / "strip.png").stat().st_size > 10_000


def _event(compute_ms, latency_ms, fps=25.0):
    return StreamEvent(
        0, 0.0, 0.64, [("a", 1.0)], latency_ms, compute_ms, np.zeros((4, 4, 3), np.uint8), 0, fps
    )


def test_summary_says_whether_it_keeps_up(tmp_path):
    fast = summarize([_event(100, 120), _event(300, 320)], hop=16)  # budget 640 ms
    assert fast["realtime_factor"] == pytest.approx(640 / 200)
    assert fast["keeps_up"] and fast["latency_ms_mean"] == pytest.approx(220)
    slow = summarize([_event(900, 950)], hop=16)
    assert not slow["keeps_up"]
    assert draw_strip([_event(1, 1)] * 3, tmp_path / "s.png").is_file()


def test_bad_sources_and_settings(tmp_path):
    with pytest.raises(VideoReadError, match="could not be opened"):
        next(stream_video(str(tmp_path / "missing.mp4"), "kinetics400_i3d"))
    with pytest.raises(ValueError, match="needs segment_len >= 9 and frame_size >= 193"):
        next(stream_video(str(tmp_path / "x.mp4"), "kinetics400_i3d", segment_len=4))
