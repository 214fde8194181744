"""`reslstm-extract`: caches per-segment backbone features of a dataset.

Maps its flags onto `reslstm_tf.extract.ExtractConfig`, runs `reslstm_tf.extract.extract`
and prints the failed videos and skipped split lines by name, then the totals (the library
docstring tells how bad videos, crashes and resumption are handled).

Exit status: 0 when the run finished (some videos may have failed: they are listed); 2 for
the user's mistakes, in one line: bad flags or split files, an output folder another
`reslstm-extract` is writing; 1 when the run stopped or nothing could be extracted: an
output folder that cannot be written (checked before anything is decoded), a full disk, a
cache of other settings, or every video failing. After a stop the shards written so far stay
readable and the same command resumes. --config=FILE reads the settings from a JSON or YAML
file, which the flags given override.

Example (the centred view and 4 augmented views of every training video):

    reslstm-extract --data_dir=videos --split_file=videos/trainlist.txt \\
        --out_dir=features/train/rgb --segments=8 --views=4
"""

import shlex
import sys

from absl import app, flags

from reslstm_tf import extract as extract_lib
from reslstm_tf.cli import build_config, config_values, define_config_flags, run_tool
from reslstm_tf.data.feature_cache import FeatureCacheError, FeatureCacheWriteError
from reslstm_tf.files import printable

FLAGS = flags.FLAGS
NAME = "reslstm-extract"
# How many failures `report` prints by name (all of them are in failures.json).
REPORT_FAILURES = 50


RENAMES = {"num_segments": "segments", "backbone_weights": "weights"}
# Help texts of the command line where the docstrings' do not say how a flag is written.
HELPS = {
    "weights": "Backbone weights: kinetics400, none or a .weights.h5 path.",
    "precision": "Backbone arithmetic: float32 or mixed_bfloat16 (~1.6x faster on CPUs with "
    "native bfloat16 (AVX512_BF16, AMX) and on recent GPUs, with ~1e-2 relative feature "
    "change).",
    "views": "Also store V training-mode views per video (random segment windows, random crop, "
    "flip) beside the centred one, for reslstm-train to draw one per epoch; costs "
    "(V + 1) x the extraction time.",
    "seed": "Seed of the --views' random choices.",
}


def report(summary, limit=REPORT_FAILURES, file=None):
    """Prints the failed videos and skipped split lines by name with their reason, and totals."""
    file = file or sys.stdout
    failures = summary.get("failures", [])
    problems = list(summary.get("problems", []))
    for failure in failures[:limit]:  # names escaped: one may hold a newline
        print(f"failed: {printable(failure['id'])}: {printable(failure['error'])}", file=file)
    if len(failures) > limit:
        print(f"... and {len(failures) - limit} more failures", file=file)
    for problem in problems[:limit]:
        print(f"skipped split line: {printable(problem)}", file=file)
    if len(problems) > limit:
        print(f"... and {len(problems) - limit} more split-file problems", file=file)
    listed = f" (see {printable(summary['failures_file'])})" if summary["failed"] else ""
    print(
        f"done {summary['done']}, skipped {summary['skipped']} (already cached), "
        f"failed {summary['failed']}{listed}, {summary['seconds']:.1f} s",
        file=file,
    )


def _table():
    from reslstm_tf import configs

    return configs.settings(
        extract_lib.ExtractConfig, renames=RENAMES, exclude=("metadata",), helps=HELPS
    )


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    define_config_flags(_table())


def extract_config(table, check=None):
    """The `ExtractConfig` of `--config` and the flags of `table` (also `reslstm-beam`'s).

    Args:
        table: the flags' settings.
        check: optional `check(values)` on the flat settings before the config is built.
    """
    from reslstm_tf import configs

    values = config_values(extract_lib.ExtractConfig, table)
    if str(values.get("weights", "")).lower() == "none":
        values["weights"] = None
    if not values.get("data_dir") or not values.get("out_dir"):
        raise app.UsageError("--data_dir and --out_dir are required")
    if check is not None:
        check(values)
    return build_config(
        lambda flat: configs.from_flat(extract_lib.ExtractConfig, flat, table), table, values
    )


def _check_shards(values):
    """Refuses a shard index outside [0, num_shards)."""
    shard_index, num_shards = values.get("shard_index", 0), values.get("num_shards", 1)
    if isinstance(shard_index, int) and isinstance(num_shards, int) and shard_index >= num_shards:
        raise app.UsageError(
            f"--shard_index must be in [0, --num_shards). Received: --shard_index="
            f"{shard_index}, --num_shards={num_shards}"
        )


def _config():
    """The `ExtractConfig` of `--config` and the flags."""
    return extract_config(_table(), _check_shards)


def _error(message):
    """Prints a one-paragraph error for the user; returns the exit status 1."""
    print(f"{NAME}: error: {message}", file=sys.stderr)
    return 1


def main(argv):
    """Maps the flags onto `extract`, prints the report; returns the exit status."""
    del argv
    try:
        config = _config()
        summary = extract_lib.extract(config)
    except extract_lib.ExtractInputError as error:
        raise app.UsageError(str(error)) from None
    except FeatureCacheWriteError as error:
        # A folder the user chose that cannot be written (read-only, no permission, under a
        # file) is the user's mistake, exit 2 as in reslstm-train; a full disk is the machine's.
        if error.user_mistake:
            raise app.UsageError(str(error)) from None
        return _error(error)
    except FeatureCacheError as error:  # a cache of other settings or another sharding
        raise app.UsageError(str(error)) from None
    except extract_lib.ExtractError as error:
        return _error(error)
    report(summary)
    if summary["failed"] and not summary["done"] and not summary["skipped"]:
        return _error(f"no video could be extracted: all {summary['failed']} failed (see above)")
    shards = " once every shard has finished" if config.num_shards > 1 else ""
    print(
        f"next{shards}: reslstm-train --features_dir={shlex.quote(str(config.out_dir))} "
        "--model_dir=runs/res3 (extract a test split too, for reslstm-eval)"
    )
    return 0


def run():
    """Console-script entry point."""
    run_tool(NAME, main, define_flags, doc=__doc__)


if __name__ == "__main__":
    run()
