"""`reslstm-demo`: builds a Res-LSTM and a plain LSTM and fits both on synthetic segment features.

A self-contained check that the install works: no data, no weights. Real recognition
is `reslstm-classify`.
"""

from absl import app, flags

from reslstm_tf.cli import define_once, run_tool

FLAGS = flags.FLAGS
NAME = "reslstm-demo"


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    define_once(flags.DEFINE_string, "preset", "res3", "Architecture preset of the Res-LSTM model.")
    define_once(flags.DEFINE_integer, "epochs", 5, "Training epochs.", lower_bound=1)
    define_once(flags.DEFINE_integer, "seed", 0, "Random seed.")


def main(argv):
    """Maps the flags onto `reslstm_tf.training.demo.run_demo` and prints the accuracies."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from reslstm_tf.training.demo import run_demo

    results = run_demo(FLAGS.preset, FLAGS.epochs, FLAGS.seed)
    for name, accuracy in results.items():
        print(f"{name}: training accuracy {accuracy:.3f}")


def run():
    """Console-script entry point."""
    run_tool(NAME, main, define_flags, doc=__doc__)


if __name__ == "__main__":
    run()
