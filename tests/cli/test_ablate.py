"""`reslstm-ablate`'s flags map onto an `AblationConfig` and its `TrainOptions` (no run)."""

from absl import flags

from reslstm_tf.cli import ablate as cli
from reslstm_tf.experiments.config import AblationConfig, head_options


def _config(*args):
    """The tool's config of a command line; its flags are defined here and removed after."""
    before = set(flags.FLAGS)
    cli.define_flags()
    try:
        flags.FLAGS(["reslstm-ablate", "--features_dir=f", "--out_dir=o", *args])
        return cli.config_from_flags()
    finally:
        flags.FLAGS.unparse_flags()
        for name in set(flags.FLAGS) - before:
            delattr(flags.FLAGS, name)


def test_default_flags_give_the_default_config_but_fusion_without_flow():
    config = _config()
    assert config.train == head_options() == AblationConfig().train
    assert config.dropout == 0.5 and "fusion" not in config.experiments


def test_training_flags_set_the_train_options_and_the_dropout():
    config = _config(
        "--epochs=3", "--batch_size=4", "--learning_rate=0.01", "--dropout=0.2",
        "--experiments=depth", "--depths=2,3",
    )  # fmt: skip
    assert config.train == head_options(epochs=3, batch_size=4, learning_rate=0.01)
    assert config.dropout == 0.2 and config.depths == (2, 3)
    assert config.experiments == ("depth",)


def test_sweep_flags_set_the_sweeps_protocol_seeds_and_depths():
    config = _config(
        "--depths=1,2,3,4", "--hidden_depths=3", "--sweep_protocol=cv", "--sweep_seeds=2",
        "--steps=4,8,16,32",
    )  # fmt: skip
    assert config.depths == (1, 2, 3, 4) and config.hidden_depths == (3,)
    assert config.sweep_hidden_depths == (3,) and config.steps == (4, 8, 16, 32)
    assert (config.sweep_protocol, config.sweep_seeds) == ("cv", 2)
    assert _config().sweep_hidden_depths == AblationConfig().depths  # default: every depth
