"""FinetuneConfig composes a ClipSpec and TrainOptions and restates none of their fields."""

import dataclasses

import pytest

from reslstm_tf.clip_spec import ClipSpec
from reslstm_tf.configs import ConfigFileError
from reslstm_tf.training import finetune as finetune_lib
from reslstm_tf.training.finetune import FinetuneConfig, FinetuneError, finetune_options
from reslstm_tf.training.options import TrainOptions


def test_defaults_come_from_the_clip_spec_and_fine_tuning_options():
    config = FinetuneConfig(data_dir="videos")
    assert config.clip == ClipSpec()
    assert config.train.batch_size == 8 and config.train.optimizer == "sgd"
    for field in dataclasses.fields(TrainOptions):
        if field.name not in ("batch_size", "optimizer"):
            assert getattr(config.train, field.name) == getattr(TrainOptions(), field.name)
    own = {field.name for field in dataclasses.fields(FinetuneConfig)}
    clip_fields = {field.name for field in dataclasses.fields(ClipSpec)}
    train_fields = {field.name for field in dataclasses.fields(TrainOptions)}
    assert own & train_fields == set() and own & clip_fields == {"modality"}
    assert config.train_options().shuffle_buffer == 1


def test_each_stream_reads_the_clip_with_its_modality():
    config = FinetuneConfig(data_dir="v", modality="flow", clip=ClipSpec(flow_method="farneback"))
    assert config.stream_clip("flow") == ClipSpec(flow_method="farneback", modality="flow")
    assert FinetuneConfig(data_dir="v", clip=ClipSpec(modality="flow")).clip.modality == "rgb"


def test_the_old_flat_keywords_are_refused_by_name():
    with pytest.raises(TypeError, match=r"\['epochs', 'num_segments'\].*ClipSpec\(num_segments"):
        FinetuneConfig(data_dir="v", num_segments=8, epochs=3)
    with pytest.raises(TypeError, match="resize_short_side"):
        FinetuneConfig(data_dir="v", flow_short_side=128)
    with pytest.raises(TypeError, match="must be a ClipSpec"):
        FinetuneConfig(data_dir="v", clip={"num_segments": 8})


def test_validate_names_the_bad_option():
    for config, name in (
        (FinetuneConfig(data_dir="v", modality="rgbd"), "modality"),
        (FinetuneConfig(data_dir="v", train=finetune_options(epochs=0)), "epochs"),
        (FinetuneConfig(data_dir="v", train=finetune_options(optimizer="lbfgs")), "optimizer"),
        (FinetuneConfig(data_dir="v", trainable_from="Mixed_9z"), "trainable_from"),
    ):
        with pytest.raises(FinetuneError, match=name):
            config.validate()


def test_flat_settings_round_trip():
    config = FinetuneConfig(
        data_dir="v",
        modality="two_stream",
        clip=ClipSpec(num_segments=4, backbone="c3d", resize_short_side=128),
        train=finetune_options(epochs=3, learning_rate=0.01),
        head={"units": 16},
        trainable_from=None,
    )
    flat = finetune_lib.to_flat(config)
    assert flat["num_segments"] == 4 and flat["frame_size"] == 112
    assert flat["flow_short_side"] == 128 and flat["epochs"] == 3 and "shuffle_buffer" not in flat
    assert finetune_lib.from_flat(flat) == config
    assert finetune_lib.from_flat({"data_dir": "v"}) == FinetuneConfig(data_dir="v")
    with pytest.raises(ConfigFileError, match=r"\['segmnets'\]"):
        finetune_lib.from_flat({"data_dir": "v", "segmnets": 3})
