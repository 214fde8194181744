"""The Beam flow pipeline fills the flow cache FlowCache.fill fills, on real clips."""

import numpy as np
import pytest

from tests.conftest import require

require("apache_beam")

from reslstm_tf.data.flow_cache import FlowCache  # noqa: E402
from reslstm_tf.pipelines.extract import pipeline_options  # noqa: E402
from reslstm_tf.pipelines.flow import run_flow  # noqa: E402


@pytest.mark.slow
def test_beam_flow_cache_equals_fill_and_lists_bad_videos(shared_data, tmp_path):
    clips = sorted((shared_data / "skateboard" / "Ollie").glob("*.mp4"))[:2]
    items = [(f"Ollie/{clip.name}", str(clip)) for clip in clips]
    bad = tmp_path / "notes.mp4"
    bad.write_text("a text file renamed\n")
    expected = FlowCache(tmp_path / "fill", method="farneback", short_side=48)
    expected.fill(items, progress=False)
    ours = FlowCache(tmp_path / "beam", method="farneback", short_side=48)
    options = pipeline_options("direct", ["--direct_running_mode=in_memory"])
    summary = run_flow(ours, [*items, ("Ollie/notes.mp4", str(bad))], options)
    assert summary["computed"] == 2 and summary["failed"] == 1
    assert summary["failures"][0]["id"] == "Ollie/notes.mp4"
    assert "VideoReadError" in summary["failures"][0]["error"]
    for video_id, _ in items:
        np.testing.assert_array_equal(
            ours.read(video_id, quantized=True), expected.read(video_id, quantized=True)
        )
    assert (tmp_path / "beam" / "spec.json").read_text() == (
        tmp_path / "fill" / "spec.json"
    ).read_text()
    again = run_flow(ours, items, options)
    assert again["skipped"] == 2 and again["computed"] == 0
