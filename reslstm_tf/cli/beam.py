"""`reslstm-beam`: reslstm-extract as an Apache Beam pipeline, on one machine or a cluster.

    reslstm-beam extract --runner=direct|flink|spark|dataflow [reslstm-extract's flags] \\
        [-- Beam's pipeline options]

Takes reslstm-extract's flags (the dataset, the clip spec, the backbone, --batch_size videos
per backbone call, --shard_size videos per shard) and writes the same feature cache, read
unchanged by reslstm-train and reslstm-eval; bad videos are listed in failures.json. A run
killed and run again finishes the cache, every video in it once. Beam's own options (the
workers, the job server, the project and region, ...) follow ``--``; an option the tool does
not know is passed to Beam too (write those as --name=value). The DirectRunner runs
``--direct_running_mode=multi_processing --direct_num_workers=<cores>`` unless told
otherwise. Needs the ``beam`` extra (``pip install "reslstm-tf[beam]"``); see docs/beam.md.

    reslstm-beam flow [the same flags] [-- Beam's pipeline options]

fills the flow-frame cache fine-tuning reads (reslstm-finetune --flow_cache_dir) for the clip
spec's --flow_method and short side, in --out_dir: every frame pair of every video, quantised
to uint8, the files a single-machine fill writes (failures in flow_failures.json).

    reslstm-beam classify VIDEO|FOLDER|SPLIT_FILE... [--model=ENTRY|HEAD.keras] [--classes=FILE]
        [--top_k=5] [--out=predictions.csv] [-- Beam's pipeline options]

classifies the videos as reslstm-classify does, one classifier per worker process, and
writes its predictions.csv (input order, failures last with their reason); the clip flags
given (--segments, --segment_len, --frame_size, --weights, ...) override the model's spec.

Exit status as reslstm-extract's: 0 when the run finished, 2 for the user's mistakes, 1 when
nothing could be extracted or the folder cannot be written.

Example:

    reslstm-beam extract --runner=direct --data_dir=videos --out_dir=features/rgb \\
        --segments=8 -- --direct_num_workers=2
"""

import os
import sys

from absl import app, flags

from reslstm_tf import extract as extract_lib
from reslstm_tf.cli import define_config_flags, define_once, run_tool
from reslstm_tf.cli.extract import HELPS, RENAMES, report
from reslstm_tf.data.feature_cache import FeatureCacheError, FeatureCacheWriteError
from reslstm_tf.files import printable

FLAGS = flags.FLAGS
NAME = "reslstm-beam"
COMMANDS = ("extract", "flow", "classify")
# reslstm-extract's settings the runner takes over (it spreads the work itself).
EXCLUDED = ("metadata", "num_shards", "shard_index", "limit", "views", "seed", "decode_workers")
RUNNER_CHOICES = ("direct", "flink", "spark", "dataflow")

_beam_args = []


def _table():
    from reslstm_tf import configs

    return configs.settings(
        extract_lib.ExtractConfig, renames=RENAMES, exclude=EXCLUDED, helps=HELPS
    )


def define_flags():
    """Defines the tool's absl flags: reslstm-extract's, --runner and --share_model."""
    define_config_flags(_table())
    define_once(flags.DEFINE_enum, "runner", "direct", RUNNER_CHOICES, "The Beam runner.")
    define_once(
        flags.DEFINE_boolean,
        "share_model",
        False,
        "Load one backbone per machine and serve it to the worker processes (default: one "
        "per worker process).",
    )
    string = flags.DEFINE_string
    define_once(string, "model", "kinetics400_i3d", "classify: a zoo entry or a .keras head.")
    define_once(string, "classes", None, "classify: the class list file of a .keras head.")
    define_once(flags.DEFINE_integer, "top_k", 5, "classify: ranked classes per video.")
    define_once(string, "out", "predictions.csv", "classify: the predictions CSV.")
    define_once(flags.DEFINE_boolean, "overwrite", False, "classify: replace an existing --out.")


def split_beam_args(argv, known):
    """Splits a command line into the tool's arguments and Beam's.

    Beam's are everything after ``--`` and every ``--name[=value]`` whose name (or, for a
    boolean, ``no<name>``) is not in `known`.
    """
    own, beam = [argv[0]], []
    args = list(argv[1:])
    if "--" in args:
        at = args.index("--")
        args, beam = args[:at], args[at + 1 :]
    passed = []
    for arg in args:
        name = arg.lstrip("-").split("=", 1)[0]
        plain = name[2:] if name.startswith("no") and name[2:] in known else name
        if arg.startswith("--") and plain not in known:
            passed.append(arg)
        else:
            own.append(arg)
    return own, passed + beam


def _import_pipelines():
    """Imports the pipelines without Beam's warning about Google Cloud clients it lacks."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        from reslstm_tf.pipelines import extract as pipeline_lib
    finally:
        root.setLevel(level)
    return pipeline_lib


def _direct_defaults(beam_args):
    """The DirectRunner's options: all cores in worker processes unless the user set them."""
    given = {arg.lstrip("-").split("=", 1)[0] for arg in beam_args}
    defaults = []
    if "direct_running_mode" not in given:
        defaults.append("--direct_running_mode=multi_processing")
        if "direct_num_workers" not in given:
            defaults.append(f"--direct_num_workers={os.cpu_count() or 1}")
    return defaults + list(beam_args)


def _config():
    """The `ExtractConfig` of `--config` and the flags, as reslstm-extract reads it."""
    from reslstm_tf.cli.extract import extract_config

    return extract_config(_table())


def _flow(config, options):
    """`reslstm-beam flow`: the flow cache fine-tuning reads for the config's clip spec."""
    from reslstm_tf.data.flow_cache import FlowCache
    from reslstm_tf.pipelines.flow import run_flow

    videos = extract_lib.load_videos(config)
    if not len(videos):
        raise extract_lib.ExtractError("no videos: the video list is empty")
    spec = config.clip
    cache = FlowCache(config.out_dir, method=spec.flow_method, short_side=spec.short_side)
    items = [(item.path, os.path.join(config.data_dir, item.path)) for item in videos]
    summary = run_flow(cache, items, options)
    for failure in summary["failures"]:
        print(f"failed: {printable(failure['id'])}: {printable(failure['error'])}")
    print(
        f"computed {summary['computed']}, skipped {summary['skipped']} (already cached), "
        f"failed {summary['failed']}, {summary['seconds']:.1f} s"
    )
    return dict(summary, done=summary["computed"])


# classify: the clip flags given on the command line override the classifier's spec.
SPEC_FLAGS = {
    "segments": "num_segments",
    "segment_len": "segment_len",
    "frame_size": "frame_size",
    "resize_short_side": "resize_short_side",
    "short": "short",
    "flow_method": "flow_method",
    "weights": "backbone_weights",
}


def _spec_overrides():
    """The spec fields of the clip flags given on the command line."""
    spec = {}
    for flag, field in SPEC_FLAGS.items():
        if FLAGS[flag].present:
            value = FLAGS[flag].value
            spec[field] = None if flag == "weights" and str(value).lower() == "none" else value
    return spec


def _classify(inputs, options):
    """`reslstm-beam classify VIDEO|FOLDER|SPLIT_FILE...`: reslstm-classify's predictions.csv."""
    from reslstm_tf.pipelines.classify import ClassifierSource, run_classify
    from reslstm_tf.predict.batch import check_output, resolve_videos

    if not inputs:
        raise app.UsageError("classify: give videos, folders of videos or split files")
    out = check_output(FLAGS.out, FLAGS.overwrite)
    videos, labels = resolve_videos(inputs, FLAGS.data_dir)
    source = ClassifierSource(
        FLAGS.model, classes=FLAGS.classes, spec=_spec_overrides() or None, top_k=FLAGS.top_k
    )
    summary = run_classify(source, videos, out, options, labels=labels)
    for video, error in summary["failures"]:
        print(f"failed: {printable(video)}: {printable(error)}")
    print(
        f"classified {summary['classified']} videos, failed {len(summary['failures'])}, "
        f"{summary['seconds']:.1f} s; predictions: {printable(summary['out_csv'])}"
    )
    if not summary["classified"]:
        print(f"{NAME}: error: no video could be classified (see above)", file=sys.stderr)
        return 1
    return 0


def main(argv):
    """Runs the command's pipeline (`run_extract` or `run_flow`); returns the exit status."""
    if len(argv) < 2 or argv[1] not in COMMANDS or (argv[1] != "classify" and len(argv) > 2):
        raise app.UsageError(f"expected one command, one of {list(COMMANDS)}; got {argv[1:]}")
    pipeline_lib = _import_pipelines()

    beam_args = list(_beam_args)
    if FLAGS.runner == "direct":
        beam_args = _direct_defaults(beam_args)
    if argv[1] == "classify":
        return _classify(argv[2:], pipeline_lib.pipeline_options(FLAGS.runner, beam_args))
    try:
        config = _config()
        options = pipeline_lib.pipeline_options(FLAGS.runner, beam_args)
        if argv[1] == "flow":
            summary = _flow(config, options)
        else:
            summary = pipeline_lib.run_extract(config, options, share_model=FLAGS.share_model)
            report(summary)
    except extract_lib.ExtractInputError as error:
        raise app.UsageError(str(error)) from None
    except FeatureCacheWriteError as error:
        if error.user_mistake:
            raise app.UsageError(str(error)) from None
        print(f"{NAME}: error: {error}", file=sys.stderr)
        return 1
    except FeatureCacheError as error:
        raise app.UsageError(str(error)) from None
    except extract_lib.ExtractError as error:
        print(f"{NAME}: error: {error}", file=sys.stderr)
        return 1
    if summary["failed"] and not summary["done"] and not summary["skipped"]:
        print(f"{NAME}: error: no video could be processed: all failed", file=sys.stderr)
        return 1
    return 0


def run():
    """Console-script entry point."""
    table = _table()
    known = set(table) | {"config", "runner", "share_model", "tf_logs"}
    known |= {"model", "classes", "top_k", "out", "overwrite"}
    known |= {"help", "helpshort", "helpfull", "helpxml"}
    known |= set(FLAGS)  # absl's own (verbosity, logtostderr, ...)
    sys.argv[:], beam_args = split_beam_args(sys.argv, known)
    _beam_args[:] = beam_args
    run_tool(NAME, main, define_flags, doc=__doc__)


if __name__ == "__main__":
    run()
