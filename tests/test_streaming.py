"""Streaming: T steps equal the full sequence; `stream_video` and its report on a real clip."""

import keras
import numpy as np
import pytest

from reslstm_tf.data.video import VideoReadError, probe, read_frames, to_float, transform_frames
from reslstm_tf.models import build_single_stream
from reslstm_tf.predict import load_classifier
from reslstm_tf.streaming import (
    StreamEvent,
    StreamingClassifier,
    draw_strip,
    run_stream,
    stream_report,
    stream_video,
    summarize,
    verdict,
)
from tests import numpy_reference as ref


@pytest.mark.parametrize("preset, feature_dim", [("res3", 16), ("res2", 24), ("lstm2", 24)])
def test_steps_equal_the_full_sequence(preset, feature_dim):
    keras.utils.set_random_seed(0)
    model = build_single_stream(5, preset, feature_dim=feature_dim, units=16, num_steps=None)
    x = np.random.default_rng(0).random((3, 9, feature_dim)).astype("float32")
    streamed = keras.ops.convert_to_numpy(run_stream(model, x))
    for t in (1, 4, 9):
        full = ref.softmax(keras.ops.convert_to_numpy(model(x[:, :t])))
        assert np.max(np.abs(streamed[:, t - 1] - full)) < 1e-5


def test_traced_step_matches_eager_and_checks_shapes():
    model = build_single_stream(4, "res2", feature_dim=8, units=8, num_steps=None)
    stream = StreamingClassifier(model)
    serve = stream.tf_function()
    x = np.random.default_rng(1).random((2, 8)).astype("float32")
    states = stream.initial_states(2)
    eager, eager_states = stream.step(x, states)
    traced = serve(x, states)
    np.testing.assert_allclose(traced["probabilities"].numpy(), eager, atol=1e-6)
    np.testing.assert_allclose(traced["states"].numpy(), eager_states, atol=1e-6)
    assert traced["states"].shape == (2, 2, 2, 8)
    with pytest.raises(ValueError, match=r"features must have shape \(batch, 8\)"):
        stream.step(np.zeros((2, 5), "float32"), states)


@pytest.fixture(scope="module")
def cricket(shared_data):
    return shared_data / "kinetics_i3d" / "v_CricketShot_g04_c01_rgb.gif"


@pytest.fixture(scope="module")
def i3d():
    return load_classifier("kinetics400_i3d")


@pytest.mark.slow
def test_stream_follows_the_clip_and_matches_offline_i3d(cricket, i3d):
    events = list(stream_video(cricket, i3d, segment_len=16, frame_size=224, realtime=False))
    assert [e.index for e in events] == [0, 1, 2, 3]  # 79 frames: 4 full windows of 16.
    assert events[-1].ranked[0][0] == "playing cricket"
    # The first event equals I3D on the same 16 frames decoded and cropped offline.
    frames = transform_frames(  # as extraction: the short side to 256, the centre 224
        read_frames(cricket, np.arange(16)), short_side=256, crop_size=224, as_float=False
    )
    logits = i3d.model.predict_on_batch(to_float(frames)[None])[0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    assert events[0].ranked[0] == pytest.approx(
        (i3d.class_names[int(p.argmax())], p.max()), abs=1e-4
    )
    assert all(e.compute_ms > 0 and e.latency_ms >= e.compute_ms for e in events)
    assert events[-1].end_s == pytest.approx(64 / probe(cricket).fps, rel=1e-6)


@pytest.mark.slow
def test_stream_report_prints_a_summary_and_strip(cricket, i3d, tmp_path, capsys):
    events, summary = stream_report(
        str(cricket),
        i3d,
        segment_len=16,
        frame_size=224,
        realtime=False,
        max_segments=3,
        strip=tmp_path / "strip.png",
    )
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("segment ")]
    assert len(lines) == len(events) == summary["segments"] == 3
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


def test_bad_sources_and_settings(i3d, tmp_path):
    with pytest.raises(VideoReadError, match="could not be opened: it does not exist"):
        next(stream_video(str(tmp_path / "missing.mp4"), i3d))
    with pytest.raises(VideoReadError, match="camera 97 could not be opened: no camera"):
        next(stream_video(97, i3d))
    with pytest.raises(ValueError, match="needs segment_len >= 9 and frame_size >= 193"):
        next(stream_video(str(tmp_path / "x.mp4"), i3d, segment_len=4))
    with pytest.raises(ValueError, match="hop must be a positive integer. Received: hop=-1"):
        next(stream_video(str(tmp_path / "x.mp4"), i3d, hop=-1))
    with pytest.raises(TypeError, match=r"reslstm_tf.predict.load_classifier\("):
        next(stream_video(str(tmp_path / "x.mp4"), "kinetics400_i3d"))


@pytest.mark.slow
def test_a_short_clip_streams_the_segments_extraction_cuts(shared_data):
    """A 1 s clip gives the head's 16 overlapping segments, ending at predict_video's answer."""
    from reslstm_tf.predict import VideoPredictor, predict_video

    clip = shared_data / "skateboard" / "Kickflip" / "Kickflip2.mp4"  # 30 frames
    predictor = VideoPredictor("skateboard_frozen_lstm3", top_k=2)
    events = list(stream_video(clip, predictor.classifier, top_k=2, realtime=False))
    assert len(events) == predictor.num_segments == 16
    offline = predict_video(predictor, clip)
    streamed = dict(events[-1].ranked)
    for name, p in offline.top_k:
        assert streamed[name] == pytest.approx(p, abs=1e-4)
    assert max(streamed.values()) > 0.6  # a confident answer, not 0.50/0.50


@pytest.mark.slow
def test_a_fine_tuned_video_classifier_streams_through_its_own_backbone(shared_data):
    """An end-to-end RGB classifier streams its segments and ends at predict_video's answer."""
    import keras

    from reslstm_tf.predict import load_classifier, predict_video
    from reslstm_tf.video_classifier import build_video_classifier

    keras.utils.set_random_seed(3)
    model = build_video_classifier(
        2, "rgb", preset="res2", num_segments=3, segment_len=8, frame_size=32,
        backbone_weights=None, units=8,
    )  # fmt: skip
    classifier = load_classifier(model, classes=["a", "b"])
    clip = shared_data / "skateboard" / "Kickflip" / "Kickflip2.mp4"  # 30 frames
    events = list(stream_video(clip, classifier, top_k=2, realtime=False))
    assert len(events) == 3
    offline = dict(predict_video(classifier, clip, top_k=2).top_k)
    for name, p in events[-1].ranked:
        assert offline[name] == pytest.approx(p, abs=1e-4)
    two_stream = build_video_classifier(
        2, "two_stream", preset="res2", num_segments=3, segment_len=8, frame_size=32,
        backbone_weights=None, units=8, level="mid",
    )  # fmt: skip
    with pytest.raises(ValueError, match="two-stream"):
        list(stream_video(clip, load_classifier(two_stream, classes=["a", "b"]), realtime=False))


def _events(latencies, compute_ms=800.0, paced=True, fps=25.0):
    return [
        StreamEvent(
            i,
            1.28 * i,
            1.28 * (i + 1),
            [("a", 1.0)],
            latency,
            compute_ms,
            np.zeros((4, 4, 3), np.uint8),
            0,
            fps,
            paced,
        )  # fmt: skip
        for i, latency in enumerate(latencies)
    ]


def test_the_verdict_is_latency_against_the_segment_duration():
    # Compute alone fits the 1280 ms a segment of 32 frames at 25 fps spans, but the
    # latency grows from 1.6 s to 7.9 s: recognition falls behind from the first segment.
    growing = _events([1600, 3200, 4800, 6400, 7900])
    summary = summarize(growing, hop=32)
    assert summary["realtime_factor"] > 1 and not summary["keeps_up"]
    assert summary["behind_from"] == 1
    line = verdict(summary, growing)
    assert line.startswith("falls behind real time from segment 1 (at 1.3 s)"), line
    assert "from 1600 ms to 7900 ms" in line and "keeps up" not in line
    later = _events([300, 400, 1500, 2800, 4100])
    summary = summarize(later, hop=32)
    assert summary["behind_from"] == 3 and "from segment 3 (at 3.8 s)" in verdict(summary, later)
    steady = _events([850, 820, 900, 840], compute_ms=800.0)
    summary = summarize(steady, hop=32)
    assert summary["keeps_up"] and summary["behind_from"] is None
    assert verdict(summary, steady).startswith("keeps up with real time: p95 latency")
    unpaced = _events([900, 5000, 9000], compute_ms=800.0, paced=False)
    summary = summarize(unpaced, hop=32)
    assert summary["keeps_up"] and summary["behind_from"] is None
    assert verdict(summary, unpaced).startswith("would keep up with real time")
    slow = summarize(_events([2000], compute_ms=2000.0, paced=False), hop=32)
    assert verdict(slow, None).startswith("would NOT keep up")
