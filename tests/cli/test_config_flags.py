"""Flags from config dataclasses, and `--config` files the command line overrides."""

import json

import pytest
from absl import flags

from reslstm_tf import configs
from reslstm_tf.clip_spec import ClipSpec
from reslstm_tf.training import finetune as finetune_lib
from reslstm_tf.training.finetune import FinetuneConfig, finetune_options
from tests.training.helpers import TINY_FLAGS, max_weight_diff, run_cli, tool_lines, write_features


@pytest.fixture
def parse():
    """Defines a tool's flags in this process, parses a command line; undoes both after."""
    before = set(flags.FLAGS)
    state = {"tool": None}

    def forget():
        flags.FLAGS.unparse_flags()
        for name in set(flags.FLAGS) - before:
            delattr(flags.FLAGS, name)

    def parse_with(define_flags, *args):
        if state["tool"] is not define_flags:  # tools give shared names other types
            forget()
            define_flags()
            state["tool"] = define_flags
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["tool", *args])

    yield parse_with
    forget()


def _finetune_config():
    return FinetuneConfig(
        data_dir="videos",
        model_dir="runs/a",
        modality="two_stream",
        flow_cache_dir="flow",
        clip=ClipSpec(num_segments=4, segment_len=8, backbone="c3d", resize_short_side=128),
        train=finetune_options(epochs=3, learning_rate=0.01, jit_compile=True),
        head={"units": 16},
        trainable_from=None,
        trunk_views=2,
    )


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_finetune_config_goes_to_a_file_and_back_through_the_flags(tmp_path, parse, suffix):
    from reslstm_tf.cli import finetune as cli

    config = _finetune_config()
    path = tmp_path / f"config{suffix}"
    flat = finetune_lib.to_flat(config)
    if suffix == ".json":
        path.write_text(json.dumps(flat))
    else:
        import yaml

        path.write_text(yaml.safe_dump(flat))
    parse(cli.define_flags, f"--config={path}")
    assert cli.config_from_flags() == config
    # Flags given on the command line override the file's values.
    parse(cli.define_flags, f"--config={path}", "--epochs=5", "--units=32", "--segment_len=4")
    expected = _finetune_config()
    expected.train.epochs, expected.head = 5, {"units": 32}
    expected.clip = expected.clip.replace(segment_len=4)
    assert cli.config_from_flags() == expected


def test_flags_left_out_take_the_dataclasses_defaults(parse):
    from reslstm_tf import evaluate
    from reslstm_tf.cli import eval as eval_cli
    from reslstm_tf.cli import extract as extract_cli
    from reslstm_tf.cli import finetune as finetune_cli
    from reslstm_tf.cli import train as train_cli
    from reslstm_tf.extract import ExtractConfig
    from reslstm_tf.training import RunConfig, TrainOptions

    parse(finetune_cli.define_flags, "--data_dir=v")
    assert finetune_cli.config_from_flags() == FinetuneConfig(data_dir="v")
    parse(train_cli.define_flags, "--model_dir=r")
    expected = RunConfig(model_dir="r", options=TrainOptions(jit_compile=True, learning_rate=1e-4))
    assert train_cli.config_from_flags() == expected
    parse(eval_cli.define_flags, "--model_dir=r")
    assert eval_cli.config_from_flags() == evaluate.EvalConfig(model_dir="r")
    parse(extract_cli.define_flags, "--data_dir=v", "--out_dir=o", "--segments=4", "--weights=none")
    assert extract_cli._config() == ExtractConfig(
        data_dir="v", out_dir="o", clip=ClipSpec(num_segments=4, backbone_weights=None)
    )


def test_a_finetune_run_record_is_a_config_file(tmp_path, parse):
    from reslstm_tf.cli import finetune as cli

    config = _finetune_config()
    record = dict(finetune_lib._record(config, ["a", "b"]), num_examples=4, steps_per_epoch=2)
    path = tmp_path / "train_config.json"
    path.write_text(json.dumps(record))
    parse(cli.define_flags, f"--config={path}")
    assert cli.config_from_flags() == config


def test_nested_sections_yaml_strings_and_unknown_keys(tmp_path, parse):
    from reslstm_tf.cli import UserError
    from reslstm_tf.cli import finetune as cli

    path = tmp_path / "config.yaml"
    path.write_text(
        "data_dir: videos\nclip: {num_segments: 8, frame_size: 112}\n"
        "train: {learning_rate: 1e-2, epochs: '2'}\nbackbone_weights: none\n"
    )
    parse(cli.define_flags, f"--config={path}")
    config = cli.config_from_flags()
    assert config.clip == ClipSpec(num_segments=8, frame_size=112, backbone_weights=None)
    assert config.train == finetune_options(learning_rate=0.01, epochs=2)
    path.write_text("data_dir: videos\nsegmnets: 8\nclip: {framesize: 3}\n")
    parse(cli.define_flags, f"--config={path}")
    with pytest.raises(UserError, match=r"unknown FinetuneConfig settings \['clip.framesize', "):
        cli.config_from_flags()


def test_settings_take_types_defaults_and_help_from_the_dataclasses(tmp_path):
    table = finetune_lib.settings()
    assert table["batch_size"].default == 8 and table["optimizer"].default == "sgd"
    assert table["epochs"].default == 10 and table["epochs"].type is int
    assert table["frame_size"].type is int and table["frame_size"].default is None
    assert table["learning_rate"].type is float and table["head"].type is dict
    assert table["num_segments"].help.startswith("K_v, segments per video")
    assert "flow_short_side" in table and "resize_short_side" not in table
    assert "shuffle_buffer" not in table and table["modality"].path == ("modality",)
    (tmp_path / "bad.json").write_text("{epochs: [")
    with pytest.raises(configs.ConfigFileError, match="not JSON or YAML"):
        configs.read_mapping(tmp_path / "bad.json")
    (tmp_path / "list.yaml").write_text("- epochs\n")
    with pytest.raises(configs.ConfigFileError, match="expected a mapping"):
        configs.read_mapping(tmp_path / "list.yaml")


@pytest.mark.slow
def test_a_train_run_folder_config_reproduces_the_run(tmp_path):
    features = write_features(tmp_path / "features.npz")
    first = tmp_path / "first"
    flags_ = [f"--features_npz={features}", *TINY_FLAGS, "--epochs=2", "--seed=3"]
    result = run_cli(f"--model_dir={first}", *flags_, "--learning_rate=0.01", "--nojit_compile")
    assert result.returncode == 0, result.stderr[-3000:]
    again = tmp_path / "again"
    result = run_cli(f"--config={first / 'train_config.json'}", f"--model_dir={again}")
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = [json.loads((run / "train_config.json").read_text()) for run in (first, again)]
    assert recorded[0] == recorded[1]
    assert recorded[1]["learning_rate"] == 0.01 and recorded[1]["jit_compile"] is False
    assert max_weight_diff(first / "model.keras", again / "model.keras") < 1e-6
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"features_npz: {features}\nepochs: 1\nlearning_rte: 0.1\nmodel: {{unitz: 3}}\n")
    result = run_cli(f"--config={bad}", f"--model_dir={tmp_path / 'bad'}")
    assert result.returncode == 2, result.stderr[-3000:]
    lines = tool_lines(result.stderr)
    assert (
        len(lines) == 1 and "unknown RunConfig settings ['learning_rte', 'model.unitz']" in lines[0]
    )


def test_extract_and_eval_read_config_files(tmp_path, parse):
    from reslstm_tf import evaluate
    from reslstm_tf.cli import eval as eval_cli
    from reslstm_tf.cli import extract as extract_cli
    from reslstm_tf.extract import ExtractConfig

    path = tmp_path / "extract.yaml"
    path.write_text("data_dir: v\nout_dir: o\nsegments: 8\nbackbone: c3d\nviews: 2\n")
    parse(extract_cli.define_flags, f"--config={path}", "--views=3")
    expected = ExtractConfig(
        data_dir="v", out_dir="o", clip=ClipSpec(num_segments=8, backbone="c3d"), views=3
    )
    assert extract_cli._config() == expected
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"model_dir": "r", "class_names": "c.txt", "top5_videos": [0, 2]}))
    parse(eval_cli.define_flags, f"--config={path}")
    assert eval_cli.config_from_flags() == evaluate.EvalConfig(
        model_dir="r", class_names_file="c.txt", top5_videos=[0, 2]
    )
