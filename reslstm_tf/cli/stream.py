"""`reslstm-stream [VIDEO|CAMERA]`: online action recognition, one segment at a time.

Prints the current top-3 actions after every segment with its latency, a summary saying
whether recognition kept up with real time (the latency against the video a segment spans,
and from which segment it fell behind), and optionally a PNG strip of the segments' last
frames with their labels: `reslstm_tf.streaming.stream_report`. Without a source it plays
the sample clip shipped in the package. A file is cut into the segments extraction cuts from
it (short clips: overlapping windows), so the last prediction is `reslstm-classify`'s;
`--segment_len` or `--hop` (and a camera) use a sliding window instead.
"""

from absl import app, flags

from reslstm_tf.cli import define_once, flag_values, run_tool
from reslstm_tf.predict import DEFAULT_MODEL, load_classifier, sample_video_path
from reslstm_tf.streaming import stream_report

NAME = "reslstm-stream"
FLAGS = flags.FLAGS


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    define_once(flags.DEFINE_string, "model", DEFAULT_MODEL, "Zoo entry with published weights.")
    define_once(
        flags.DEFINE_integer,
        "segment_len",
        None,
        "Frames per segment (default: the entry's).",
        lower_bound=1,
    )
    define_once(
        flags.DEFINE_integer,
        "frame_size",
        None,
        "Square crop side (default: the entry's).",
        lower_bound=16,
    )
    define_once(
        flags.DEFINE_integer,
        "hop",
        None,
        "Frames between predictions (default: segment_len).",
        lower_bound=1,
    )
    define_once(flags.DEFINE_integer, "top_k", 3, "Classes shown per segment.", lower_bound=1)
    define_once(
        flags.DEFINE_bool,
        "realtime",
        True,
        "Play a file at its frame rate, as a camera delivers it, so latencies are real; "
        "--norealtime processes it as fast as possible.",
    )
    define_once(
        flags.DEFINE_integer,
        "max_segments",
        None,
        "Stop after this many segments.",
        lower_bound=1,
    )
    define_once(
        flags.DEFINE_string, "strip", None, "Write a PNG strip of the segments with their labels."
    )


def main(argv):
    """Maps the source and flags onto `reslstm_tf.streaming.stream_report`."""
    if len(argv) > 2:
        raise app.UsageError(f"give at most one video path or camera index. Received: {argv[1:]}")
    stream_report(
        source=argv[1] if len(argv) == 2 else str(sample_video_path()),
        classifier=load_classifier(FLAGS.model),
        **flag_values(
            "segment_len", "frame_size", "hop", "top_k", "realtime", "max_segments", "strip"
        ),
    )


def run():
    """Console-script entry point."""
    run_tool(NAME, main, define_flags, doc=__doc__)


if __name__ == "__main__":
    run()
