"""`extract(views=V)`: training-mode views of real clips, checked against `VideoClips`; resume."""

import dataclasses
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from reslstm_tf import extract as extract_lib
from reslstm_tf.cli import extract as extract_cli
from reslstm_tf.clip_spec import ClipSpec
from reslstm_tf.data import datasets
from reslstm_tf.data import feature_cache as features
from reslstm_tf.data.clips import VideoClips
from reslstm_tf.data.video import VideoReadError
from reslstm_tf.extract import ExtractConfig, ExtractInputError, extract
from tests.conftest import PROJECT_ROOT
from tests.data import views_job

CLIPS = ["Kickflip/Kickflip11.mp4", "Ollie/Ollie14.mp4", "Ollie/Ollie92.mp4"]


@pytest.fixture
def clips(shared_data, tmp_path):
    """(data folder, split file, video list) of three real skateboard clips."""
    root = shared_data / "skateboard"
    split_file = tmp_path / "three.txt"
    split_file.write_text("".join(f"{clip}\n" for clip in CLIPS))
    return root, split_file, datasets.folder(root, split_file)


@pytest.fixture(scope="module")
def i3d():
    """A random-weight I3D cutting 8-frame segments."""
    from reslstm_tf.backbones.extractor import SegmentFeatureExtractor

    return SegmentFeatureExtractor(
        "i3d", "rgb", weights=None, batch_size=4, jit_compile=False, segment_len=8
    )


def by_id(folder):
    return {record["id"]: record for record in features.read_features(folder)}


def test_views_are_train_mode_clips_of_video_clips_through_the_backbone(clips, i3d, tmp_path):
    root, _, videos = clips
    config = ExtractConfig(
        data_dir=root,
        out_dir=tmp_path / "views",
        clip=ClipSpec(num_segments=2, segment_len=8, frame_size=32),
        views=2,
        seed=5,
        batch_size=2,
    )
    summary = extract(config, videos=videos, extractor=i3d, progress=False)
    assert (summary["done"], summary["failed"]) == (3, 0)
    index = features.read_index(tmp_path / "views")
    assert index["num_views"] == 2
    assert index["metadata"]["views"] == 2 and index["metadata"]["view_seed"] == 5
    plain = dataclasses.replace(config, out_dir=tmp_path / "plain", views=0)
    extract(plain, videos=videos, extractor=i3d, progress=False)
    assert "views" not in features.read_index(tmp_path / "plain")["metadata"]
    centred, records = by_id(tmp_path / "plain"), by_id(tmp_path / "views")
    # the independent reference: fine-tuning's train-mode clips, view v = epoch v
    reference = VideoClips(videos, root, num_segments=2, segment_len=8, frame_size=32, seed=5)
    for position, clip_id in enumerate(CLIPS):
        record = records[clip_id]
        assert record["views"].shape == (2, 2, 1024)
        assert record["meta"] == {"class_name": clip_id.split("/")[0], "view_index": position}
        # the centred view is the one an extraction without views stores
        np.testing.assert_array_equal(record["features"], centred[clip_id]["features"])
        scale = np.abs(record["features"]).max()  # random weights: features of ~1e-2
        for view in range(2):
            (clip,) = reference.load(position, "train", epoch=view)
            expected = i3d(clip)
            np.testing.assert_allclose(
                record["views"][view], expected, rtol=1e-5, atol=1e-5 * scale
            )
        stacked = [record["features"], *record["views"]]
        for a in range(3):  # the views differ from each other and from the centred one
            for b in range(a):
                assert np.abs(stacked[a] - stacked[b]).max() > 0.05 * scale


def test_flow_views_are_train_mode_flow_clips_of_video_clips(clips, tmp_path):
    from reslstm_tf.backbones.extractor import SegmentFeatureExtractor

    root, _, videos = clips
    flow_i3d = SegmentFeatureExtractor(
        "i3d", "flow", weights=None, batch_size=4, jit_compile=False, segment_len=4
    )
    config = ExtractConfig(
        data_dir=root,
        out_dir=tmp_path,
        clip=ClipSpec(
            modality="flow", flow_method="farneback", num_segments=2, segment_len=4, frame_size=32
        ),
        views=3,
        seed=1,
        limit=2,
    )
    assert extract(config, videos=videos, extractor=flow_i3d, progress=False)["done"] == 2
    records = by_id(tmp_path)
    reference = VideoClips(
        videos,
        root,
        modality="flow",
        flow_method="farneback",
        num_segments=2,
        segment_len=4,
        frame_size=32,
        seed=1,
    )
    for position, clip_id in enumerate(CLIPS[:2]):
        for view in range(3):
            (clip,) = reference.load(position, "train", epoch=view)
            expected = flow_i3d(clip)
            np.testing.assert_allclose(
                records[clip_id]["views"][view], expected, rtol=1e-5, atol=1e-5
            )


def test_a_failing_view_fails_its_video_which_a_rerun_completes(clips, tmp_path, monkeypatch):
    root, _, videos = clips
    config = ExtractConfig(
        data_dir=root,
        out_dir=tmp_path,
        clip=ClipSpec(num_segments=2, frame_size=32, segment_len=8),
        views=2,
    )
    load = VideoClips.load

    def failing(self, index, mode="eval", epoch=0):
        if index == 1 and epoch == 1:
            raise VideoReadError("Ollie/Ollie14.mp4", "truncated")
        return load(self, index, mode, epoch)

    monkeypatch.setattr(VideoClips, "load", failing)
    extractor = views_job.ProjectionExtractor()
    summary = extract(config, videos=videos, extractor=extractor, progress=False)
    assert (summary["done"], summary["failed"]) == (2, 1)
    assert summary["failures"][0]["id"] == CLIPS[1]
    assert summary["failures"][0]["error"].startswith("view 1: VideoReadError")
    assert sorted(features.read_index(tmp_path)["ids"]) == [CLIPS[0], CLIPS[2]]
    monkeypatch.setattr(VideoClips, "load", load)
    again = extract(config, videos=videos, extractor=extractor, progress=False)
    assert (again["done"], again["skipped"], again["failed"]) == (1, 2, 0)
    assert by_id(tmp_path)[CLIPS[1]]["views"].shape == (2, 2, 6)


def _job(root, split_file, out_dir, fault=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("RESLSTM_FAULT", None)
    if fault:
        env["RESLSTM_FAULT"] = fault
    command = [sys.executable, "-m", "tests.data.views_job", str(root), str(split_file)]
    return subprocess.run(
        [*command, str(out_dir)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_an_extraction_with_views_killed_mid_batch_resumes_to_the_uninterrupted_cache(
    clips, tmp_path
):
    root, split_file, _ = clips
    out = tmp_path / "killed"
    # decode steps: batch [0, 1]: centred, view 0, view 1; batch [2]: centred (4), view 0 (5)
    killed = _job(root, split_file, out, fault="extract_decoded:5")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # the first batch is cached with its views; the third video, half done, is not
    assert sorted(features.read_index(out, partial=True)["ids"]) == CLIPS[:2]
    with pytest.raises(features.FeatureCacheError, match="not sealed"):
        features.read_index(out)  # a killed run's cache is refused until it is finished
    resumed = _job(root, split_file, out)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split() == ["1", "2", "0"]  # done, skipped, failed
    config = views_job.config(root, split_file, tmp_path / "whole")
    extract(config, extractor=views_job.ProjectionExtractor(), progress=False)
    whole, got = by_id(tmp_path / "whole"), by_id(out)
    assert sorted(got) == sorted(whole) == sorted(CLIPS)
    assert len(features.read_index(out)["ids"]) == 3
    for clip_id in CLIPS:
        for key in ("features", "views"):
            np.testing.assert_allclose(got[clip_id][key], whole[clip_id][key], atol=1e-6)


def test_views_and_seed_flags_reach_the_config(tmp_path, monkeypatch):
    made = {}

    def fake_extract(config):
        made["config"] = config
        return {"done": 1, "skipped": 0, "failed": 0, "failures": [], "seconds": 0.0,
                "failures_file": "f.json"}  # fmt: skip

    monkeypatch.setattr(extract_lib, "extract", fake_extract)
    extract_cli.define_flags()
    flags = extract_cli.FLAGS
    try:
        flags(
            [
                "extract",
                f"--data_dir={tmp_path}",
                f"--out_dir={tmp_path / 'o'}",
                "--views=3",
                "--seed=4",
            ]
        )
        assert extract_cli.main([]) == 0
    finally:
        flags.unparse_flags()
    assert (made["config"].views, made["config"].seed) == (3, 4)


@pytest.mark.parametrize("name", ["views", "seed"])
def test_negative_views_or_seed_are_refused(tmp_path, name):
    with pytest.raises(ExtractInputError, match=f"{name} must be a non-negative integer"):
        ExtractConfig(data_dir=tmp_path, out_dir=tmp_path / "o", **{name: -1})
