"""The feature-extraction tool with an injected fake backbone (no real weights needed)."""

import json
import sys
import types

import cv2
import numpy as np
import pytest

from reslstm_tf.cli import extract as extract_cli
from reslstm_tf.data import datasets, features, sampling


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
    summary = extract_cli.extract(
        videos, root, out, extractor, num_segments=3, batch_size=2, progress=False
    )
    assert (summary["done"], summary["skipped"], summary["failed"]) == (3, 0, 1)
    failures = json.loads((out / "failures.json").read_text())["failures"]
    assert [f["id"] for f in failures] == ["B/broken.avi"]
    assert "broken.avi" in failures[0]["error"]
    records = {r["id"]: r for r in features.read_features(out)}
    assert set(records) == {"A/a1.avi", "A/a2.avi", "B/b1.avi"}
    b1 = records["B/b1.avi"]
    assert b1["label"] == 1 and b1["features"].shape == (3, 3)
    expected_idx = sampling.sample_segments(40, 3, 4).indices
    np.testing.assert_array_equal(b1["frame_indices"], expected_idx)
    # flat grey frames: the mean of a segment is the mean grey level of its frames
    levels = (90 + 3 * expected_idx).mean(axis=1) / 127.5 - 1
    np.testing.assert_allclose(b1["features"][:, 0], levels, atol=0.03)
    assert b1["meta"] == {"class_name": "B"}


def test_extract_resumes_and_shards(dataset, tmp_path):
    root, videos = dataset
    out = tmp_path / "cache"
    first = extract_cli.extract(
        videos, root, out, MeanExtractor(), num_segments=2, limit=2, progress=False
    )
    assert first["done"] == 2
    extractor = MeanExtractor()
    second = extract_cli.extract(videos, root, out, extractor, num_segments=2, progress=False)
    assert (second["skipped"], second["done"], second["failed"]) == (2, 1, 1)
    assert len(features.read_index(out)["ids"]) == 3
    with pytest.raises(features.FeatureCacheError, match="differs"):
        extract_cli.extract(videos, root, out, MeanExtractor(), num_segments=5, progress=False)
    sharded = tmp_path / "sharded"
    for index in range(2):
        extract_cli.extract(
            videos,
            root,
            sharded,
            MeanExtractor(),
            num_segments=2,
            num_shards=2,
            shard_index=index,
            progress=False,
        )
    assert sorted(features.read_index(sharded)["ids"]) == ["A/a1.avi", "A/a2.avi", "B/b1.avi"]


def test_extractor_failure_is_isolated(dataset, tmp_path):
    root, videos = dataset

    class Flaky(MeanExtractor):
        def __call__(self, segments):
            out = super().__call__(segments)
            if np.any(out > 0.3):  # the brightest clip (b1) "crashes" the backbone
                raise RuntimeError("backbone exploded")
            return out

    summary = extract_cli.extract(
        videos, root, tmp_path / "c", Flaky(), num_segments=2, batch_size=4, progress=False
    )
    assert summary["done"] == 2 and summary["failed"] == 2


def test_extract_real_clips(shared_data, tmp_path):
    root = shared_data / "skateboard"
    videos = datasets.folder(root, root / "trainlist.txt")
    summary = extract_cli.extract(
        videos, root, tmp_path, MeanExtractor(), num_segments=4, limit=4, progress=False
    )
    assert summary["done"] == 4 and summary["failed"] == 0
    records = features.read_features(tmp_path)
    assert all(np.all(np.abs(r["features"]) <= 1) for r in records)


def test_main_maps_flags(dataset, tmp_path, monkeypatch, capsys):
    root, _ = dataset
    made = {}

    def factory(**kwargs):
        made.update(kwargs)
        return MeanExtractor()

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
        "precision": "mixed_bfloat16",
    }
    assert "done 3, skipped 0" in capsys.readouterr().out
    metadata = features.read_index(tmp_path / "o")["metadata"]
    assert metadata["backbone"] == "c3d" and metadata["precision"] == "mixed_bfloat16"
