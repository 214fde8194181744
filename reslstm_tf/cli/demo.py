"""`reslstm-demo`: builds a Res-LSTM and a plain LSTM and fits both on synthetic segment features.

A self-contained check that the install works: no data, no weights. It prints each model's
training accuracy and a verdict: the install trains when the Res-LSTM fits the synthetic
classes to at least twice chance. Real recognition is `reslstm-classify`.
"""

from absl import flags

from reslstm_tf.cli import define_once, refuse_arguments, run_tool

FLAGS = flags.FLAGS
NAME = "reslstm-demo"


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    define_once(flags.DEFINE_string, "preset", "res3", "Architecture preset of the Res-LSTM model.")
    define_once(flags.DEFINE_integer, "epochs", 5, "Training epochs.", lower_bound=1)
    define_once(flags.DEFINE_integer, "seed", 0, "Random seed.")


def verdict(results, num_classes, epochs):
    """The demo's last line: the install trains when the Res-LSTM fits well above chance.

    Args:
        results: {preset: training accuracy}, the Res-LSTM first, then its plain twin.
        num_classes: classes of the synthetic features.
        epochs: the epochs trained.
    """
    chance = 1.0 / num_classes
    (res, res_accuracy), (twin, twin_accuracy) = results.items()
    if res_accuracy >= 2 * chance:
        return (
            f"verdict: the install trains: {res} fits the synthetic features to "
            f"{res_accuracy:.1%} (chance {chance:.0%}), its plain-LSTM twin {twin} to "
            f"{twin_accuracy:.1%} in {epochs} epochs"
        )
    return (
        f"verdict: inconclusive: {res} reached {res_accuracy:.1%} (chance {chance:.0%}) in "
        f"{epochs} epochs; run more --epochs"
    )


def main(argv):
    """Maps the flags onto `reslstm_tf.training.demo.run_demo` and prints the accuracies."""
    refuse_arguments(argv)
    from reslstm_tf.training.demo import NUM_CLASSES, run_demo

    results = run_demo(FLAGS.preset, FLAGS.epochs, FLAGS.seed)
    for name, accuracy in results.items():
        print(f"{name}: training accuracy {accuracy:.3f}")
    print(verdict(results, NUM_CLASSES, FLAGS.epochs))


def run():
    """Console-script entry point."""
    run_tool(NAME, main, define_flags, doc=__doc__)


if __name__ == "__main__":
    run()
