"""`reslstm-classify [VIDEO|FOLDER|SPLIT_FILE ...] --model NAME`: the top actions of videos.

Without an argument it classifies the sample clip shipped in the package, DeepMind's cricket
clip (`reslstm_tf/samples/cricket.mp4`): one video prints its ranked classes per segment and
overall and writes a contact-sheet PNG of the sampled frames with their labels. Several
videos, a folder (searched recursively; a folder per class gives the true classes) or a split
file (`<Class>/<video>` lines, `.txt`) run through one backbone with the next video decoded
while the network runs, show a progress bar with videos/s and ETA and a line per video (top-1,
probability, true class), and write `predictions.csv` (video, true class, top-k classes and
probabilities, per-segment top-1; an existing file is kept unless --overwrite) with a
summary, and the accuracy over the true classes the model has:
`reslstm_tf.predict.classify`.
"""

from absl import flags

from reslstm_tf.cli import define_once, flag_values, run_tool
from reslstm_tf.predict import DEFAULT_CSV, DEFAULT_MODEL, classify

NAME = "reslstm-classify"
FLAGS = flags.FLAGS


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    string = flags.DEFINE_string
    define_once(
        string, "model", DEFAULT_MODEL, "Zoo entry with published weights, or a .keras head."
    )
    define_once(flags.DEFINE_integer, "top_k", 5, "Number of ranked classes.", lower_bound=1)
    define_once(
        flags.DEFINE_integer,
        "segments",
        None,
        "Segments to cut each video into (default: the entry's).",
        lower_bound=1,
    )
    define_once(
        string, "sheet", None, "One video: contact-sheet PNG (default: <stem>_<model>.png)."
    )
    define_once(string, "out", DEFAULT_CSV, "Several videos: the predictions CSV.")
    define_once(flags.DEFINE_bool, "overwrite", False, "Replace an existing --out file.")
    define_once(string, "classes", None, "Class list file, for a .keras head (one name a line).")
    define_once(
        flags.DEFINE_enum,
        "flow_method",
        None,
        ["tvl1", "farneback"],
        "Optical flow of a two-stream head (default: the entry's).",
    )
    define_once(string, "data_dir", None, "Folder a split file's paths are relative to.")


def main(argv):
    """Maps the arguments and flags onto `reslstm_tf.predict.classify`."""
    classify(
        videos=argv[1:] or None,
        **flag_values(
            "model",
            "top_k",
            "sheet",
            "classes",
            "flow_method",
            "data_dir",
            "overwrite",
            num_segments="segments",
            out_csv="out",
        ),
    )


def run():
    """Console-script entry point."""
    run_tool(NAME, main, define_flags, doc=__doc__)


if __name__ == "__main__":
    run()
