"""`reslstm-extract`: caches per-segment backbone features of a dataset.

Maps its flags onto `reslstm_tf.extract.ExtractConfig`, runs `reslstm_tf.extract.extract`
and prints the failed videos and skipped split lines by name, then the totals (the library
docstring tells how bad videos, crashes and resumption are handled).

Exit status: 0 when the run finished (some videos may have failed: they are listed); 2 for
the user's mistakes, in one line: bad flags or split files, an output folder another
`reslstm-extract` is writing; 1 when the run stopped or nothing could be extracted: an
output folder that cannot be written (checked before anything is decoded), a full disk, a
cache of other settings, or every video failing. After a stop the shards written so far stay
readable and the same command resumes.

Example (the centred view and 4 augmented views of every training video):

    reslstm-extract --data_dir=videos --split_file=videos/trainlist.txt \\
        --out_dir=features/train/rgb --segments=8 --views=4
"""

import sys

from absl import app, flags

from reslstm_tf import extract as extract_lib
from reslstm_tf.cli import define_once, flag_values, run_tool
from reslstm_tf.clip_spec import spec_of
from reslstm_tf.data.feature_cache import FeatureCacheError

FLAGS = flags.FLAGS
NAME = "reslstm-extract"


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    enum, integer, string = flags.DEFINE_enum, flags.DEFINE_integer, flags.DEFINE_string
    define_once(enum, "dataset", "folder", ["ucf101", "hmdb51", "folder"], "Dataset format.")
    define_once(string, "data_dir", None, "Folder of the videos (paths in the lists are relative).")
    define_once(
        string,
        "split_dir",
        None,
        "ucf101/hmdb51: folder of the split files (default --data_dir).",
    )
    define_once(
        integer,
        "split",
        1,
        "ucf101/hmdb51: official split 1, 2 or 3.",
        lower_bound=1,
        upper_bound=3,
    )
    define_once(string, "split_file", None, "folder: optional list of <Class>/<video> lines.")
    define_once(enum, "subset", "all", ["train", "test", "all"], "ucf101/hmdb51: which videos.")
    define_once(enum, "backbone", "i3d", ["i3d", "c3d"], "3D CNN feature extractor.")
    define_once(string, "weights", "kinetics400", "Backbone weights.")
    define_once(
        enum,
        "precision",
        "float32",
        ["float32", "mixed_bfloat16"],
        "Backbone arithmetic: mixed_bfloat16 is ~1.6x faster on CPUs with native bfloat16 "
        "(AVX512_BF16, AMX) and on recent GPUs, with ~1e-2 relative feature change.",
    )
    define_once(enum, "modality", "rgb", ["rgb", "flow"], "Input stream.")
    define_once(
        enum, "flow_method", "tvl1", ["tvl1", "farneback"], "Optical flow for --modality flow."
    )
    define_once(integer, "segments", None, "K_v, segments per video (default 16).", lower_bound=1)
    define_once(
        integer,
        "segment_len",
        None,
        "Frames per segment (default: the backbone's).",
        lower_bound=1,
    )
    define_once(string, "out_dir", None, "Output folder of the feature cache.")
    define_once(integer, "batch_size", 4, "Videos per backbone call.", lower_bound=1)
    define_once(
        integer,
        "shard_size",
        256,
        "Videos per TFRecord shard (a crash redoes at most one).",
        lower_bound=1,
    )
    define_once(integer, "num_shards", 1, "Number of parallel workers.", lower_bound=1)
    define_once(integer, "shard_index", 0, "This worker's index in [0, num_shards).", lower_bound=0)
    define_once(
        enum,
        "short",
        "loop",
        ["loop", "pad", "overlap"],
        "Videos shorter than K_v windows: loop them, pad with the last frame, or overlap "
        "the windows (best for clips of a few seconds).",
    )
    define_once(
        integer, "limit", None, "Process at most this many videos (smoke tests).", lower_bound=1
    )
    define_once(integer, "decode_workers", 2, "Threads decoding videos.", lower_bound=1)
    define_once(
        integer,
        "views",
        0,
        "Also store V training-mode views per video (random segment windows, random crop, "
        "flip) beside the centred one, for reslstm-train to draw one per epoch; costs "
        "(V + 1) x the extraction time.",
        lower_bound=0,
    )
    define_once(integer, "seed", 0, "Seed of the --views' random choices.", lower_bound=0)


def _config():
    """The `ExtractConfig` of the flags."""
    clip = spec_of(
        **flag_values(
            "backbone",
            "modality",
            "flow_method",
            "segment_len",
            "short",
            num_segments="segments",
            backbone_weights="weights",
        )
    )
    return extract_lib.ExtractConfig(
        clip=clip,
        **flag_values(
            "data_dir",
            "out_dir",
            "dataset",
            "split_dir",
            "split",
            "split_file",
            "subset",
            "precision",
            "batch_size",
            "shard_size",
            "num_shards",
            "shard_index",
            "limit",
            "decode_workers",
            "views",
            "seed",
        ),
    )


def _error(message):
    """Prints a one-paragraph error for the user; returns the exit status 1."""
    print(f"{NAME}: error: {message}", file=sys.stderr)
    return 1


def main(argv):
    """Maps the flags onto `extract`, prints the report; returns the exit status."""
    del argv
    if not FLAGS.data_dir or not FLAGS.out_dir:
        raise app.UsageError("--data_dir and --out_dir are required")
    if FLAGS.shard_index >= FLAGS.num_shards:
        raise app.UsageError(
            f"--shard_index must be in [0, --num_shards). Received: --shard_index="
            f"{FLAGS.shard_index}, --num_shards={FLAGS.num_shards}"
        )
    try:
        summary = extract_lib.extract(_config())
    except extract_lib.ExtractInputError as error:
        raise app.UsageError(str(error)) from None
    except (extract_lib.ExtractError, FeatureCacheError) as error:
        return _error(error)
    extract_lib.report(summary)
    if summary["failed"] and not summary["done"] and not summary["skipped"]:
        return _error(f"no video could be extracted: all {summary['failed']} failed (see above)")
    return 0


def run():
    """Console-script entry point."""
    run_tool(NAME, main, define_flags, doc=__doc__)


if __name__ == "__main__":
    run()
