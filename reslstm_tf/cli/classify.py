"""`reslstm-classify [VIDEO] --model NAME`: the top-5 actions of a video, per segment and overall.

Without a VIDEO it classifies the sample clip shipped in the package, DeepMind's cricket clip
(`reslstm_tf/samples/cricket.mp4`). It prints the ranked classes and writes a contact-sheet
PNG of the sampled frames with their labels: `reslstm_tf.predict.classify`.
"""

from absl import app, flags

from reslstm_tf.cli import define_once
from reslstm_tf.predict import DEFAULT_MODEL, classify

FLAGS = flags.FLAGS


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    define_once(flags.DEFINE_string, "model", DEFAULT_MODEL, "Zoo entry with published weights.")
    define_once(flags.DEFINE_integer, "top_k", 5, "Number of ranked classes.", lower_bound=1)
    define_once(
        flags.DEFINE_integer,
        "segments",
        None,
        "Segments to cut the video into (default: the entry's).",
        lower_bound=1,
    )
    define_once(
        flags.DEFINE_string,
        "sheet",
        None,
        "Contact-sheet PNG path (default: <video stem>_<model>.png).",
    )


def main(argv):
    if len(argv) > 2:
        raise app.UsageError(f"give at most one video path. Received: {argv[1:]}")
    classify(
        video_path=argv[1] if len(argv) == 2 else None,
        model=FLAGS.model,
        top_k=FLAGS.top_k,
        num_segments=FLAGS.segments,
        sheet=FLAGS.sheet,
    )


def run():
    """Console-script entry point."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
