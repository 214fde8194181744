"""Cached feature sets as numpy arrays (`reslstm_tf.experiments.features`)."""

import numpy as np
import pytest

from reslstm_tf.experiments.config import AblationError
from reslstm_tf.experiments.features import load_feature_set, select_steps
from tests.experiments.helpers import write_cache


def test_step_selection_follows_step_segment_map():
    features = np.arange(2 * 16 * 1, dtype="float32").reshape(2, 16, 1)
    picked = select_steps(features, 5)
    assert picked[0, :, 0].tolist() == [1, 4, 8, 11, 14]  # floor((t + .5) * 16 / 5)
    assert select_steps(features, 16).tolist() == features.tolist()


def test_load_feature_set_reads_clips_sorted_by_id(tmp_path):
    data = load_feature_set(write_cache(tmp_path / "rgb", num_clips=6))
    assert data.ids == [f"clip{i:03d}" for i in range(6)]
    assert data.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert data.rgb.shape == (6, 4, 8) and data.rgb.dtype == np.float32
    assert data.flow is None and data.class_names == ["neg", "pos"]


def test_load_feature_set_errors_name_the_folder(tmp_path):
    with pytest.raises(AblationError, match="features_dir=.*is not a folder"):
        load_feature_set(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AblationError, match="no feature cache index"):
        load_feature_set(empty)
