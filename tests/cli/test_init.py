"""The CLI package's convention: importing a tool defines no flags; `run` defines them."""

import keras
import pytest


def test_flags_are_defined_at_run_time_only():
    from absl import flags

    import reslstm_tf.cli.classify  # noqa: F401
    import reslstm_tf.cli.export  # noqa: F401
    import reslstm_tf.cli.stream  # noqa: F401
    import reslstm_tf.cli.zoo  # noqa: F401

    assert not {"export_dir", "entry_json", "sheet", "hop"} & set(flags.FLAGS)
    keras.backend.clear_session()


TOOLS = (
    "ablate",
    "classify",
    "demo",
    "eval",
    "export",
    "extract",
    "finetune",
    "stream",
    "study",
    "train",
    "zoo",
)


def _tool(module, *args):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", f"reslstm_tf.cli.{module}", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.slow
def test_every_tool_lists_its_own_flags_on_help_and_exits_0():
    import concurrent.futures

    from absl import flags

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = dict(zip(TOOLS, pool.map(lambda m: _tool(m, "--help"), TOOLS)))
    for module, result in results.items():
        assert result.returncode == 0, (module, result.stderr[-2000:])
        # Each tool's own flags are listed with their help text, not only absl's usage line.
        flag_lines = [line for line in result.stdout.splitlines() if line.startswith("  --")]
        assert len(flag_lines) >= 2, (module, result.stdout[:2000])
        assert "Try --helpfull" in result.stdout
    assert "--export_dir" in results["export"].stdout and "--format" in results["export"].stdout
    assert "--learning_rate" in results["train"].stdout
    for module, result in results.items():  # every tool reads a config file
        assert "  --config" in result.stdout, module
    assert "export_dir" not in flags.FLAGS  # the subprocesses defined them, not this one


@pytest.mark.slow
def test_tools_start_quiet_and_tf_logs_brings_the_logs_back():
    quiet = _tool("zoo", "list")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "kinetics400_i3d" in quiet.stdout
    assert quiet.stderr.strip() == "", quiet.stderr[-2000:]
    loud = _tool("zoo", "list", "--tf_logs")
    assert loud.returncode == 0
    assert loud.stderr.strip() != "", "--tf_logs showed no TensorFlow start-up log"


@pytest.mark.slow
def test_a_user_mistake_is_one_line_with_exit_2():
    result = _tool("zoo", "info", "no_such_entry")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reslstm-zoo: error:"), result.stderr
    assert "reslstm-zoo list" in lines[0]
    assert "Traceback" not in result.stderr


def test_a_config_file_sets_the_flags_the_command_line_does_not(tmp_path):
    # The generic --config of tools whose flags map onto no config dataclass.
    from absl import flags

    from reslstm_tf.cli import CONFIG_FLAG, UserError, apply_config_file, define_once

    names = {"cfgtest_top_k", "cfgtest_name", "cfgtest_on"}
    define_once(flags.DEFINE_integer, "cfgtest_top_k", 5, "k", lower_bound=1)
    define_once(flags.DEFINE_string, "cfgtest_name", "default", "name")
    define_once(flags.DEFINE_boolean, "cfgtest_on", False, "on")
    define_once(flags.DEFINE_string, CONFIG_FLAG, None, "config")
    config = tmp_path / "tool.yaml"
    config.write_text("cfgtest_top_k: 3\ncfgtest_name: from-file\ncfgtest_on: true\n")
    try:
        flags.FLAGS(["tool", f"--{CONFIG_FLAG}={config}", "--cfgtest_name=from-cli"])
        apply_config_file(names)
        assert flags.FLAGS.cfgtest_top_k == 3 and flags.FLAGS.cfgtest_on is True
        assert flags.FLAGS.cfgtest_name == "from-cli"  # the command line wins
        config.write_text("cfgtest_top_k: 0\n")
        flags.FLAGS["cfgtest_top_k"].present = 0
        with pytest.raises(UserError, match="cfgtest_top_k"):
            apply_config_file(names)
        config.write_text("cfgtest_typo: 1\n")
        with pytest.raises(UserError, match=r"unknown settings \['cfgtest_typo'\]"):
            apply_config_file(names)
    finally:
        flags.FLAGS.unparse_flags()
        for name in [*names, CONFIG_FLAG]:
            if name in flags.FLAGS and name != CONFIG_FLAG:
                delattr(flags.FLAGS, name)


@pytest.mark.slow
def test_classify_reads_its_flags_from_a_config_file(tmp_path):
    config = tmp_path / "classify.json"
    config.write_text('{"model": "no_such_entry"}')
    result = _tool("classify", f"--config={config}")
    assert result.returncode == 2 and "no_such_entry" in result.stderr, result.stderr[-2000:]
    config.write_text('{"modle": "kinetics400_i3d"}')
    result = _tool("classify", f"--config={config}")
    assert result.returncode == 2 and "unknown settings ['modle']" in result.stderr
