"""The flow-frame cache: known motion in, the right quantised flow out; resumes after SIGKILL."""

import os
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest

from reslstm_tf.data.flow_cache import (
    FlowCache,
    FlowCacheError,
    dequantize,
    quantize,
    video_flow,
)

SHIFT = 2  # pixels per frame, to the right


def _texture(height, width, seed=0):
    rng = np.random.default_rng(seed)
    noise = rng.random((height // 4, width // 4)).astype(np.float32)
    return cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)


def write_moving_video(path, frames=6, height=64, width=96, shift=SHIFT):
    """A smooth random texture moving `shift` pixels right per frame (lossless MJPG-free AVI)."""
    big = _texture(height, width + shift * frames)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10, (width, height))
    assert writer.isOpened()
    for i in range(frames):
        start = shift * (frames - i)  # the window moves left, so the content moves right
        window = big[:, start : start + width]
        gray = np.clip(window * 255, 0, 255).astype(np.uint8)
        writer.write(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def test_quantization_matches_the_denseflow_mapping_within_half_a_step():
    flow = np.array([-25.0, -20.0, -1.3, 0.0, 0.05, 7.7, 20.0, 31.0], np.float32)
    q = quantize(flow, bound=20.0)
    # Independent reference: the linear map of [-20, 20] onto 0..255, clipped.
    expected = np.round((np.clip(flow, -20, 20) + 20) / 40 * 255)
    np.testing.assert_array_equal(q, expected)
    back = dequantize(q) * 20.0
    inside = np.abs(flow) <= 20
    assert np.max(np.abs(back[inside] - flow[inside])) <= 20.0 / 255 + 1e-5


@pytest.mark.parametrize("method", ["farneback", "tvl1"])
def test_known_motion_gives_the_known_flow(tmp_path, method):
    path = write_moving_video(tmp_path / "moving.avi", frames=4)
    flow = video_flow(path, method=method, short_side=64, bound=20.0)
    assert flow.shape == (3, 64, 96, 2) and flow.dtype == np.uint8
    centre = dequantize(flow[:, 16:-16, 16:-16]) * 20.0  # pixels, away from the borders
    u, v = np.median(centre[..., 0]), np.median(centre[..., 1])
    assert abs(u - SHIFT) < 0.3, u
    assert abs(v) < 0.3, v


def test_fill_skips_cached_and_bad_videos_and_reads_back(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    good = [write_moving_video(videos / f"v{i}.avi", frames=3) for i in range(2)]
    (videos / "broken.avi").write_bytes(b"not a video")
    items = [(p.name, p) for p in good] + [("broken.avi", videos / "broken.avi")]
    cache = FlowCache(tmp_path / "flow", method="farneback", short_side=32)
    first = cache.fill(items, progress=False)
    assert first["computed"] == 2 and first["skipped"] == 0
    assert [vid for vid, _ in first["failed"]] == ["broken.avi"]
    assert "broken.avi" in first["failed"][0][1]
    again = cache.fill(items, progress=False)
    assert again["computed"] == 0 and again["skipped"] == 2
    flow = cache.read("v0.avi")
    assert flow.dtype == np.float32 and flow.shape == (2, 32, 48, 2)
    assert -1.0 <= flow.min() and flow.max() <= 1.0
    np.testing.assert_array_equal(
        cache.read("v0.avi", quantized=True), video_flow(good[0], "farneback", 32)
    )


def test_another_spec_and_escaping_ids_are_refused(tmp_path):
    cache = FlowCache(tmp_path / "flow", method="farneback", short_side=32)
    cache.fill([], progress=False)
    with pytest.raises(FlowCacheError, match="short_side: cache 32, asked 64"):
        FlowCache(tmp_path / "flow", method="farneback", short_side=64)
    for bad in ("../outside.avi", "/etc/passwd", "a/../../b.avi"):
        with pytest.raises(FlowCacheError, match="relative path"):
            cache.path_for(bad)


def test_sigkill_mid_fill_then_rerun_computes_each_video_once(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    paths = [write_moving_video(videos / f"v{i}.avi", frames=3) for i in range(4)]
    script = (
        "import sys, pathlib\n"
        "from reslstm_tf.data.flow_cache import FlowCache\n"
        "paths = sorted(pathlib.Path(sys.argv[1]).glob('*.avi'))\n"
        "s = FlowCache(sys.argv[2], method='farneback', short_side=32).fill(\n"
        "    [(p.name, p) for p in paths], progress=False)\n"
        "print(s['computed'], s['skipped'])\n"
    )
    env = dict(os.environ, RESLSTM_FAULT="flow_written:2")
    args = [sys.executable, "-c", script, str(videos), str(tmp_path / "flow")]
    killed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    env.pop("RESLSTM_FAULT")
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rerun.stdout.split() == ["2", "2"]
    leftovers = [p.name for p in (tmp_path / "flow").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    cache = FlowCache(tmp_path / "flow", method="farneback", short_side=32)
    for path in paths:
        np.testing.assert_array_equal(
            cache.read(path.name, quantized=True), video_flow(path, "farneback", 32)
        )
