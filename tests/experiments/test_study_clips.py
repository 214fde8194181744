"""The study's clip-spec dimension and its test-time views (no training)."""

import dataclasses

import numpy as np
import pytest

from reslstm_tf.clip_spec import PRESETS
from reslstm_tf.data.reader import read_clip, segment_indices
from reslstm_tf.experiments.config import AblationError
from reslstm_tf.experiments.study import PAPER_CLIP, StudyConfig, plan_study
from reslstm_tf.experiments.study_clips import (
    TtaView,
    clip_tag,
    parse_clip,
    read_tta_clip,
    tta_indices,
    tta_views,
)

SMALL = PRESETS["cpu_small"].replace(num_segments=2, segment_len=8, frame_size=64)


def _config(**changes):
    values = dict(data_dir="v", split_file="v/list.txt", out_dir="o", flow_methods=(),
                  folds=2, seeds=2, depths=(2, 3))  # fmt: skip
    return StudyConfig(**{**values, **changes})


def test_clip_tags_and_preset_texts():
    assert clip_tag(PRESETS["cpu_small"]) == "i3d112_t4"
    assert clip_tag(PRESETS["paper"]) == "i3d224_t16"
    assert clip_tag(SMALL) == "i3d64_t2_l8"
    assert parse_clip("paper:short=overlap") == PAPER_CLIP
    assert parse_clip("cpu_small:num_segments=8") == PRESETS["cpu_small"].replace(num_segments=8)
    config = _config()
    assert config.frozen_clips == (PAPER_CLIP,) and config.clip_tag == "i3d112_t4"
    assert list(config.clips) == ["i3d112_t4", "i3d224_t16"]
    with pytest.raises(AblationError, match="distinct tags"):
        _config(frozen_clips=(PRESETS["cpu_small"].replace(short="loop"),)).validate()
    with pytest.raises(AblationError, match="first TTA offset must be 0"):
        _config(tta_offsets=(0.25, 0.0)).validate()


def test_the_plan_keys_runs_by_clip_spec_and_runs_frozen_recipes_on_every_spec():
    config = _config(frozen_clip_depths=(3,))
    runs = plan_study(config).runs
    keys = [run[0] for run in runs]
    assert len(set(keys)) == len(keys)
    assert "logreg|i3d224_t16|rgb|logreg0|fold1|seed1" in keys
    assert "frozen|i3d224_t16|rgb|lstm3|fold0|seed0" in keys
    on_paper = {(r[1], r[4], r[5]) for r in runs if r[2] == "i3d224_t16"}
    # the frozen-feature recipes only, at the further specs' depths; no frozen_aug without views
    assert on_paper == {("logreg", "logreg", 0), ("frozen", "lstm", 3), ("frozen", "res", 3)}
    assert {r[2] for r in runs if r[1] in ("finetuned", "finetuned_features")} == {"i3d112_t4"}
    with_views = {r[1] for r in plan_study(dataclasses.replace(config, frozen_clip_views=1)).runs
                  if r[2] == "i3d224_t16"}  # fmt: skip
    assert with_views == {"logreg", "frozen", "frozen_aug"}
    # the further specs come after the study's own fine-tuned recipes: stopped early, a
    # study has the main comparisons
    first_paper = next(i for i, r in enumerate(runs) if r[2] == "i3d224_t16")
    assert all(r[1] != "finetuned" for r in runs[first_paper:])
    assert not [r for r in plan_study(_config(frozen_clips=())).runs if r[2] != "i3d112_t4"]


def test_a_config_record_keeps_its_clip_specs_and_views():
    config = _config(frozen_clips=(PAPER_CLIP, SMALL), tta_offsets=(0.0, 0.5), tta_flips=False)
    again = StudyConfig.from_record(config.to_record())
    assert again == config and again.frozen_clips[1] == SMALL
    assert [v.offset for v in again.tta_view_list()] == [0.0, 0.5]


def test_tta_views_are_each_offset_unflipped_then_mirrored_the_eval_clip_first():
    views = tta_views()
    assert views == [TtaView(0.0, False), TtaView(0.0, True), TtaView(-0.25, False),
                     TtaView(-0.25, True), TtaView(0.25, False), TtaView(0.25, True)]  # fmt: skip
    assert tta_views((0.0, 0.5), flips=False) == [TtaView(0.0, False), TtaView(0.5, False)]
    assert _config().tta_view_list() == views and not _config(tta_offsets=()).tta_view_list()


@pytest.mark.parametrize("num_frames", [30, 55, 90, 200])
def test_tta_windows_move_by_a_fraction_of_a_part_and_stay_inside_the_video(num_frames):
    spec = PRESETS["cpu_small"]
    centred = segment_indices(spec, num_frames, "eval").indices
    np.testing.assert_array_equal(tta_indices(spec, num_frames, 0.0), centred)
    shift = round(0.25 * num_frames / spec.num_segments)
    for offset in (0.25, -0.25):
        moved = tta_indices(spec, num_frames, offset)
        assert moved.min() >= 0 and moved.max() <= num_frames - 1
        np.testing.assert_array_equal(np.diff(moved, axis=1), np.diff(centred, axis=1))
        step = moved[:, 0] - centred[:, 0]
        assert np.all(np.abs(step) <= shift) and np.all(np.sign(step) * np.sign(offset) >= 0)
        # a window moves by the whole shift unless the video's end stops it
        free = (centred.min(axis=1) - shift >= 0) & (centred.max(axis=1) + shift < num_frames)
        assert np.all(np.abs(step[free]) == shift)
    assert np.array_equal(tta_indices(spec, 55, 0.25), tta_indices(spec, 55, 0.25))


def test_tta_views_are_the_one_readers_frames_moved_and_mirrored(shared_data):
    from reslstm_tf.data import video

    path = shared_data / "skateboard" / "Ollie" / "Ollie14.mp4"
    centred = read_clip(path, SMALL, "eval").frames
    np.testing.assert_array_equal(read_tta_clip(path, SMALL, TtaView(0.0, False)), centred)
    np.testing.assert_array_equal(read_tta_clip(path, SMALL, TtaView(0.0, True)),
                                  centred[..., ::-1, :])  # fmt: skip
    moved = read_tta_clip(path, SMALL, TtaView(0.25, True))
    count = video.probe(path).frame_count
    indices = tta_indices(SMALL, count, 0.25)
    from reslstm_tf.data.reader import frame_transform

    crop = frame_transform(SMALL, "eval")
    frames = video.read_frames(path, sorted(set(indices.flat)), transform=crop)
    by_index = dict(zip(sorted(set(indices.flat)), frames))
    expected = np.stack([by_index[i] for i in indices.flat]).reshape(moved.shape)
    np.testing.assert_array_equal(moved, expected[..., ::-1, :])
    assert not np.array_equal(moved[..., ::-1, :], centred)
