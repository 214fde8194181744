"""The extraction library (`reslstm_tf.extract`) with an injected fake backbone, and its CLI."""

import dataclasses
import io
import json
import sys
import types

import cv2
import numpy as np
import pytest

from reslstm_tf import extract as extract_lib
from reslstm_tf.cli import extract as extract_cli
from reslstm_tf.clip_spec import ClipSpec, ClipSpecError, field_names
from reslstm_tf.data import datasets, sampling
from reslstm_tf.data import feature_cache as features
from reslstm_tf.extract import ExtractConfig, ExtractError, ExtractInputError, extract

# The clips MeanExtractor takes: segments of 4 frames of 16 x 16 pixels.
MEAN_CLIP = {"segment_len": 4, "frame_size": 16}


class MeanExtractor:
    """A fake backbone: the per-channel mean of each segment, feature_dim 3."""

    segment_len = 4
    frame_size = 16
    channels = 3
    feature_dim = 3

    def __init__(self):
        self.calls = 0

    def __call__(self, segments):
        self.calls += 1
        assert segments.ndim == 5 and segments.shape[1:] == (4, 16, 16, 3)
        return segments.mean(axis=(1, 2, 3))


def write_clip(path, count, level0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (24, 20))
    for i in range(count):
        writer.write(np.full((20, 24, 3), level0 + 3 * i, np.uint8))
    writer.release()


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "videos"
    for name in ("A", "B"):
        (root / name).mkdir(parents=True)
    write_clip(root / "A" / "a1.avi", 30, 10)
    write_clip(root / "A" / "a2.avi", 20, 50)
    write_clip(root / "B" / "b1.avi", 40, 90)
    (root / "B" / "broken.avi").write_bytes(b"\x00" * 100)
    return root, datasets.folder(root)


def test_extract_writes_features_and_reports_failures(dataset, tmp_path):
    root, videos = dataset
    out = tmp_path / "cache"
    extractor = MeanExtractor()
    config = ExtractConfig(
        data_dir=root, out_dir=out, clip=ClipSpec(num_segments=3, **MEAN_CLIP), batch_size=2
    )
    summary = extract(config, videos=videos, extractor=extractor, progress=False)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (3, 0, 1)
    failures = json.loads((out / "failures.json").read_text())["failures"]
    assert [f["id"] for f in failures] == ["B/broken.avi"]
    assert "broken.avi" in failures[0]["error"]
    records = {r["id"]: r for r in features.read_features(out)}
    assert set(records) == {"A/a1.avi", "A/a2.avi", "B/b1.avi"}
    b1 = records["B/b1.avi"]
    assert b1["label"] == 1 and b1["features"].shape == (3, 3)
    expected_idx = sampling.sample_segments(40, 3, 4, short="loop").indices
    np.testing.assert_array_equal(b1["frame_indices"], expected_idx)
    # flat grey frames: the mean of a segment is the mean grey level of its frames
    levels = (90 + 3 * expected_idx).mean(axis=1) / 127.5 - 1
    np.testing.assert_allclose(b1["features"][:, 0], levels, atol=0.03)
    assert b1["meta"] == {"class_name": "B"}


def test_extract_resumes_and_shards(dataset, tmp_path):
    root, videos = dataset
    out = tmp_path / "cache"
    config = ExtractConfig(data_dir=root, out_dir=out, clip=ClipSpec(num_segments=2, **MEAN_CLIP))

    def run(config, **changes):
        changed = dataclasses.replace(config, **changes)
        return extract(changed, videos=videos, extractor=MeanExtractor(), progress=False)

    first = run(config, limit=2)
    assert first["done"] == 2
    second = run(config)
    assert (second["skipped"], second["done"], second["failed"]) == (2, 1, 1)
    assert len(features.read_index(out)["ids"]) == 3
    with pytest.raises(features.FeatureCacheError, match="differs"):
        run(config, clip=config.clip.replace(num_segments=5))
    sharded = tmp_path / "sharded"
    for index in range(2):
        run(config, out_dir=sharded, num_shards=2, shard_index=index)
    assert sorted(features.read_index(sharded)["ids"]) == ["A/a1.avi", "A/a2.avi", "B/b1.avi"]


def test_extractor_failure_is_isolated(dataset, tmp_path):
    root, videos = dataset

    class Flaky(MeanExtractor):
        def __call__(self, segments):
            out = super().__call__(segments)
            if np.any(out > 0.3):  # the brightest clip (b1) "crashes" the backbone
                raise RuntimeError("backbone exploded")
            return out

    config = ExtractConfig(
        data_dir=root, out_dir=tmp_path / "c", clip=ClipSpec(num_segments=2, **MEAN_CLIP)
    )
    summary = extract(config, videos=videos, extractor=Flaky(), progress=False)
    assert summary["done"] == 2 and summary["failed"] == 2


def test_extract_real_clips(shared_data, tmp_path):
    root = shared_data / "skateboard"
    videos = datasets.folder(root, root / "trainlist.txt")
    config = ExtractConfig(
        data_dir=root, out_dir=tmp_path, clip=ClipSpec(num_segments=4, **MEAN_CLIP), limit=4
    )
    summary = extract(config, videos=videos, extractor=MeanExtractor(), progress=False)
    assert summary["done"] == 4 and summary["failed"] == 0
    records = features.read_features(tmp_path)
    assert all(np.all(np.abs(r["features"]) <= 1) for r in records)


class C3DSizedMean(MeanExtractor):
    """MeanExtractor taking the C3D clips: 16 frames of 112 x 112 pixels."""

    segment_len = 16
    frame_size = 112

    def __call__(self, segments):
        assert segments.shape[1:] == (16, 112, 112, 3)
        return segments.mean(axis=(1, 2, 3))


def test_main_maps_flags(dataset, tmp_path, monkeypatch, capsys):
    root, _ = dataset
    made = {}

    def factory(**kwargs):
        made.update(kwargs)
        return C3DSizedMean()

    fake = types.ModuleType("reslstm_tf.backbones.extractor")
    fake.SegmentFeatureExtractor = factory
    monkeypatch.setitem(sys.modules, "reslstm_tf.backbones.extractor", fake)
    extract_cli.define_flags()
    flags = extract_cli.FLAGS
    try:
        flags(
            [
                "extract",
                "--dataset=folder",
                f"--data_dir={root}",
                f"--out_dir={tmp_path / 'o'}",
                "--segments=2",
                "--backbone=c3d",
                "--limit=3",
                "--precision=mixed_bfloat16",
            ]
        )
        extract_cli.main([])
    finally:
        flags.unparse_flags()
    assert made == {
        "backbone": "c3d",
        "modality": "rgb",
        "weights": "kinetics400",
        "segment_len": 16,
        "precision": "mixed_bfloat16",
    }
    assert "done 3, skipped 0" in capsys.readouterr().out
    metadata = features.read_index(tmp_path / "o")["metadata"]
    assert metadata["backbone"] == "c3d" and metadata["precision"] == "mixed_bfloat16"


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"short": "wrap"},
            "short must be one of 'loop', 'pad', 'overlap'. Received: short='wrap'",
        ),
        ({"num_segments": 0}, "num_segments must be a positive integer"),
        ({"shard_index": 2, "num_shards": 2}, r"shard_index must be in \[0, num_shards\)"),
        ({"data_dir": ""}, "data_dir and out_dir are required"),
        ({"split": 4}, "Received: split=4"),
        ({"limit": 0}, "Received: limit=0"),
    ],
)
def test_config_refuses_bad_settings(tmp_path, changes, message):
    clip = {k: v for k, v in changes.items() if k in field_names()}
    settings = {"data_dir": tmp_path, "out_dir": tmp_path / "o"}
    settings.update({k: v for k, v in changes.items() if k not in clip})
    with pytest.raises((ExtractInputError, ClipSpecError), match=message):
        ExtractConfig(clip=ClipSpec(**clip), **settings)


def test_bad_split_file_and_empty_list(dataset, tmp_path):
    root, _ = dataset
    config = ExtractConfig(data_dir=root, out_dir=tmp_path / "o", split_file=tmp_path / "no.txt")
    with pytest.raises(ExtractInputError, match="no.txt"):
        extract(config, extractor=MeanExtractor(), progress=False)
    (tmp_path / "bad.txt").write_text("missing.avi\n")  # not <Class>/<video>
    config = dataclasses.replace(config, split_file=tmp_path / "bad.txt")
    with pytest.raises(ExtractError, match=r"the video list is empty \(1 split-file lines"):
        extract(config, extractor=MeanExtractor(), progress=False)
    assert not (tmp_path / "o").exists()  # nothing was written


def test_report_names_failures_and_skipped_lines():
    summary = {
        "done": 2,
        "skipped": 1,
        "failed": 3,
        "failures": [{"id": f"v{i}.avi", "error": "VideoReadError: empty"} for i in range(3)],
        "problems": ["trainlist.txt:4: A/gone.avi does not exist"],
        "seconds": 1.25,
        "failures_file": "cache/failures.json",
    }
    out = io.StringIO()
    extract_cli.report(summary, limit=2, file=out)
    assert out.getvalue().splitlines() == [
        "failed: v0.avi: VideoReadError: empty",
        "failed: v1.avi: VideoReadError: empty",
        "... and 1 more failures",
        "skipped split line: trainlist.txt:4: A/gone.avi does not exist",
        "done 2, skipped 1 (already cached), failed 3 (see cache/failures.json), 1.2 s",
    ]
    out = io.StringIO()
    extract_cli.report({**summary, "failed": 0, "failures": [], "problems": []}, file=out)
    assert out.getvalue() == "done 2, skipped 1 (already cached), failed 0, 1.2 s\n"


def test_segment_features_cuts_the_segments_extraction_cuts():
    # 10 frames whose pixels all hold the frame index; K=3 windows of 4 > 10 frames, so
    # 'overlap' centres them on the parts' centres 10 // 6, 30 // 6, 50 // 6 = 1, 5, 8,
    # clipped into the video: starts 0, 3, 6. A segment's mean is its middle index.
    frames = np.broadcast_to(
        np.arange(10, dtype="float32")[:, None, None, None] / 10, (10, 16, 16, 3)
    )
    feats = extract_lib.segment_features(MeanExtractor(), frames, 3, short="overlap")
    np.testing.assert_allclose(feats[:, 0], [0.15, 0.45, 0.75], atol=1e-5)
    looped = extract_lib.segment_features(MeanExtractor(), frames, 3, short="loop")
    # loop: windows 0-3, 4-7, 8-11 -> 8, 9, 0, 1
    np.testing.assert_allclose(looped[:, 0], [0.15, 0.55, 0.45], atol=1e-5)
    with pytest.raises(ValueError, match="rank 4"):
        extract_lib.segment_features(MeanExtractor(), frames[0], 3, short="loop")


def test_clip_memory_is_estimated_from_the_header_before_decoding(tmp_path):
    from reslstm_tf.data.video import VideoReadError

    config = extract_lib.ExtractConfig(
        data_dir="d", out_dir="o", clip=ClipSpec(num_segments=32, segment_len=32, frame_size=224)
    )
    normal = types.SimpleNamespace(width=1920, height=1080, frame_count=300)
    extract_lib.check_clip_memory("normal.mp4", normal, config)  # 300 frames: 100 MiB
    wide = types.SimpleNamespace(width=4096, height=256, frame_count=0)  # 16:1, count unknown
    with pytest.raises(VideoReadError, match=r"its 1024 frames of 4096x256 .* need 3\.0 GiB"):
        extract_lib.check_clip_memory("wide.mp4", wide, config)
    extract_lib.check_clip_memory("wide.mp4", wide, config, max_bytes=4 << 30)
    few = types.SimpleNamespace(width=4096, height=256, frame_count=100)  # 100 frames read
    extract_lib.check_clip_memory("few.mp4", few, config)
