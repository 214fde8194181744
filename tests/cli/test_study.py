"""`reslstm-study`'s flags map onto the study's clip and TrainOptions (no run)."""

import dataclasses

from absl import flags

from reslstm_tf.cli import study as cli
from reslstm_tf.clip_spec import PRESETS


def _config(*args):
    """The tool's config of a command line; its flags are defined here and removed after."""
    before = set(flags.FLAGS)
    cli.define_flags()
    argv = ["reslstm-study", "--data_dir=v", "--split_file=v/list.txt", "--out_dir=o", *args]
    try:
        flags.FLAGS(argv)
        return cli.config_from_flags()
    finally:
        flags.FLAGS.unparse_flags()
        for name in set(flags.FLAGS) - before:
            delattr(flags.FLAGS, name)


def test_default_flags_give_the_cpu_small_clip_and_the_studys_training():
    from reslstm_tf.experiments.study import StudyConfig

    config = _config()
    assert config.clip == PRESETS["cpu_small"]
    expected = StudyConfig(data_dir="v", split_file="v/list.txt", out_dir="o")
    assert dataclasses.asdict(config) == dataclasses.asdict(expected)
    assert (config.head_train.epochs, config.finetune_train.epochs) == (15, 8)


def test_clip_and_epoch_flags_set_the_clip_and_the_options():
    config = _config(
        "--num_segments=8", "--segment_len=8", "--frame_size=96", "--head_epochs=3",
        "--finetune_epochs=2", "--depths=2,3", "--flow_methods=", "--recipes=logreg,frozen",
    )  # fmt: skip
    assert config.clip == PRESETS["cpu_small"].replace(num_segments=8, segment_len=8, frame_size=96)
    assert config.head_train.epochs == 3 and config.head_train.learning_rate == 1e-3
    assert config.finetune_train.epochs == 2 and config.finetune_train.optimizer == "adam"
    assert config.depths == (2, 3) and config.flow_methods == ()
    assert config.recipes == ("logreg", "frozen")
    finetune = config.finetune_config("rgb", seed=4)
    assert finetune.clip.num_segments == 8 and finetune.clip.frame_size == 96
    assert finetune.train.epochs == 2 and finetune.train.seed == 4


def test_clip_spec_and_test_time_view_flags():
    from reslstm_tf.experiments.study import PAPER_CLIP

    config = _config()
    assert config.frozen_clips == (PAPER_CLIP,) and config.frozen_clip_depths is None
    assert config.tta_offsets == (0.0, -0.25, 0.25) and config.tta_flips
    config = _config("--frozen_clips=paper:short=overlap,cpu_small:num_segments=8",
                     "--frozen_clip_depths=3", "--tta_offsets=0,0.5", "--notta_flips")  # fmt: skip
    assert config.frozen_clips == (PAPER_CLIP, PRESETS["cpu_small"].replace(num_segments=8))
    assert config.frozen_clip_depths == (3,) and config.tta_offsets == (0.0, 0.5)
    assert len(config.tta_view_list()) == 2
    none = _config("--frozen_clips=", "--tta_offsets=")
    assert none.frozen_clips == () and none.tta_view_list() == []
