"""`reslstm-zoo`: list the zoo, show an entry, or publish a trained model into a manifest.

Usage:
    reslstm-zoo list [--published]
    reslstm-zoo info skateboard_lstm3 [--json]
    reslstm-zoo publish --model_dir=runs/skate --name=skateboard_res3 \
        --entry_json=skate_entry.json [--manifest=zoo/manifest.json]

`list` prints one row per entry (tagged name, aliases, accuracy with its protocol, size,
input clip spec, weights status; `zoo.table.format_list`), `info` one entry's card
(`zoo.table.format_info`), or with --json the manifest entry for machines. `list` prints a
header on a terminal and the rows alone when piped.
`publish` is `zoo.publish_files`. With
--model_dir the model is `<model_dir>/model.keras` (written by reslstm-train) and the metrics
of every `<model_dir>/eval_*/metrics.json` (written by reslstm-eval) are added to the entry's
metrics.
"""

import json
import sys

from absl import app, flags

from reslstm_tf import zoo
from reslstm_tf.cli import UserError, define_once, flag_values, run_tool
from reslstm_tf.zoo import table

FLAGS = flags.FLAGS
NAME = "reslstm-zoo"
VERBS = ("list", "info", "publish")


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    define_once(flags.DEFINE_string, "model", None, "publish: a trained model saved as .keras.")
    define_once(
        flags.DEFINE_string,
        "model_dir",
        None,
        "publish: a reslstm-train model_dir (model.keras, eval_*/metrics.json).",
    )
    define_once(flags.DEFINE_string, "name", None, "publish: the entry name, <dataset>_<arch>.")
    define_once(
        flags.DEFINE_string,
        "entry_json",
        None,
        "publish: JSON file with the entry (dataset, architecture, metrics, ...).",
    )
    define_once(
        flags.DEFINE_string,
        "manifest",
        None,
        "publish: manifest to update (default: the packaged one).",
    )
    define_once(flags.DEFINE_string, "weights_dir", None, "publish: where to write the weights.")
    define_once(
        flags.DEFINE_string, "url", None, "publish: download URL to record for the weights."
    )
    define_once(flags.DEFINE_boolean, "published", False, "list: only the published entries.")
    define_once(
        flags.DEFINE_boolean, "json", False, "info: print the manifest entry as JSON (machines)."
    )


def _publish_flags():
    """Returns the publish arguments from the flags, or raises a UsageError naming the missing."""
    missing = [f"--{f}" for f in ("name", "entry_json") if not getattr(FLAGS, f)]
    if not (FLAGS.model or FLAGS.model_dir):
        missing.append("--model or --model_dir")
    if missing:
        raise app.UsageError(f"publish needs {', '.join(missing)}")
    return flag_values(
        "name", "entry_json", "manifest", "weights_dir", "url", "model_dir", model_path="model"
    )


def main(argv):
    """Runs the verb `argv[1]` (list, info or publish)."""
    if len(argv) < 2 or argv[1] not in VERBS:
        raise app.UsageError(f"give one of {', '.join(VERBS)}. Received: {argv[1:]}")
    verb = argv[1]
    terminal = sys.stdout.isatty()
    if verb == "list":
        print(table.format_list(published_only=FLAGS.published, header=terminal))
    elif verb == "info":
        if len(argv) != 3:
            raise app.UsageError("info takes one entry name, e.g. reslstm-zoo info hmdb51_res3")
        try:
            entry = zoo.info(argv[2])
        except zoo.UnknownEntryError as error:
            raise UserError(error.hint(f"`{NAME} list`")) from None
        print(json.dumps(entry, indent=2) if FLAGS.json else table.format_info(argv[2]))
    else:
        weights = zoo.publish_files(**_publish_flags())["weights"]
        print(f"published {FLAGS.name}: {weights['file']} sha256 {weights['sha256']}")


def run():
    """Console-script entry point."""
    run_tool(NAME, main, define_flags, doc=__doc__)


if __name__ == "__main__":
    run()
