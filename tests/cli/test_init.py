"""The CLI package's convention: importing a tool defines no flags; `run` defines them."""

import keras


def test_flags_are_defined_at_run_time_only():
    from absl import flags

    import reslstm_tf.cli.classify  # noqa: F401
    import reslstm_tf.cli.export  # noqa: F401
    import reslstm_tf.cli.stream  # noqa: F401
    import reslstm_tf.cli.zoo  # noqa: F401

    assert not {"export_dir", "entry_json", "sheet", "hop"} & set(flags.FLAGS)
    keras.backend.clear_session()
