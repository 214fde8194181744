"""`reslstm-zoo`: list the zoo, show an entry, or publish a trained model into a manifest.

Usage:
    reslstm-zoo list
    reslstm-zoo info hmdb51_res3
    reslstm-zoo publish --model_dir=runs/skate --name=skateboard_res3 \
        --entry_json=skate_entry.json [--manifest=zoo/manifest.json]

Each verb is one library function: `zoo.format_list`, `zoo.info`, `zoo.publish_files`. With
--model_dir the model is `<model_dir>/model.keras` (written by reslstm-train) and the metrics
of every `<model_dir>/eval_*/metrics.json` (written by reslstm-eval) are added to the entry's
metrics.
"""

import json

from absl import app, flags

from reslstm_tf import zoo
from reslstm_tf.cli import UserError, define_once, flag_values, run_tool

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
    if verb == "list":
        print(zoo.format_list())
    elif verb == "info":
        if len(argv) != 3:
            raise app.UsageError("info takes one entry name, e.g. reslstm-zoo info hmdb51_res3")
        try:
            entry = zoo.info(argv[2])
        except zoo.UnknownEntryError as error:
            raise UserError(error.hint(f"`{NAME} list`")) from None
        print(json.dumps(entry, indent=2))
    else:
        weights = zoo.publish_files(**_publish_flags())["weights"]
        print(f"published {FLAGS.name}: {weights['file']} sha256 {weights['sha256']}")


def run():
    """Console-script entry point."""
    run_tool(NAME, main, define_flags, doc=__doc__)


if __name__ == "__main__":
    run()
