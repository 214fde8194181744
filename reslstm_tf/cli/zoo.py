"""`reslstm-zoo`: list the zoo, show an entry, or publish a trained model into a manifest.

Usage:
    reslstm-zoo list
    reslstm-zoo info hmdb51_res3
    reslstm-zoo publish --model_dir=runs/skate --name=skateboard_res3 \
        --entry_json=skate_entry.json [--manifest=zoo/manifest.json]

With --model_dir the model is `<model_dir>/model.keras` (written by reslstm-train)
and the metrics of every `<model_dir>/eval_*/metrics.json` (written by
reslstm-eval) are added to the entry's metrics.
"""

import json
import pathlib
import sys

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    if "entry_json" in FLAGS:
        return
    flags.DEFINE_string("model", None, "publish: a trained model saved as .keras.")
    flags.DEFINE_string(
        "model_dir", None, "publish: a reslstm-train model_dir (model.keras, eval_*/metrics.json)."
    )
    flags.DEFINE_string("name", None, "publish: the entry name, <dataset>_<arch>.")
    flags.DEFINE_string(
        "entry_json",
        None,
        "publish: JSON file with the entry (dataset, architecture, metrics, ...).",
    )
    flags.DEFINE_string(
        "manifest", None, "publish: manifest to update (default: the packaged one)."
    )
    flags.DEFINE_string("weights_dir", None, "publish: where to write the weights file.")
    flags.DEFINE_string("url", None, "publish: download URL to record for the weights.")


def list_entries(out=sys.stdout):
    """Prints every zoo entry with its state (published or not) and description."""
    from reslstm_tf import zoo

    for name in zoo.list():
        entry = zoo.info(name)
        state = "published" if entry.get("weights") else "not published"
        print(f"{name:28s} {state:14s} {entry.get('description', '')}", file=out)


def publish_from_files(
    model_path, name, entry_json, manifest=None, weights_dir=None, url=None, model_dir=None
):
    """Loads a `.keras` model and an entry JSON and publishes them with `zoo.publish`.

    With `model_dir`, the model is `model_dir/model.keras` and the metrics of every
    `model_dir/eval_*/metrics.json` are appended to the entry's metrics.
    """
    from reslstm_tf import zoo
    from reslstm_tf.models import load_model

    with open(entry_json, encoding="utf-8") as handle:
        entry = json.load(handle)
    if model_dir is not None:
        model_dir = pathlib.Path(model_dir)
        model_path = model_path or model_dir / "model.keras"
        if not pathlib.Path(model_path).is_file():
            raise FileNotFoundError(
                f"{model_path} not found: is {model_dir} a reslstm-train model_dir?"
            )
        for metrics_file in sorted(model_dir.glob("eval_*/metrics.json")):
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
            metrics["source"] = f"reslstm-eval, split {metrics_file.parent.name[len('eval_') :]}"
            entry.setdefault("metrics", []).append(metrics)
    model = load_model(model_path)
    return zoo.publish(model, name, entry, manifest, weights_dir, url)


def main(argv):
    from reslstm_tf import zoo

    verbs = ("list", "info", "publish")
    if len(argv) < 2 or argv[1] not in verbs:
        raise app.UsageError(f"give one of {', '.join(verbs)}. Received: {argv[1:]}")
    verb = argv[1]
    if verb == "list":
        list_entries()
    elif verb == "info":
        if len(argv) != 3:
            raise app.UsageError("info takes one entry name, e.g. reslstm-zoo info hmdb51_res3")
        print(json.dumps(zoo.info(argv[2]), indent=2))
    else:
        missing = [f for f in ("name", "entry_json") if not getattr(FLAGS, f)]
        if not (FLAGS.model or FLAGS.model_dir):
            missing.append("model or --model_dir")
        if missing:
            raise app.UsageError(f"publish needs --{', --'.join(missing)}")
        entry = publish_from_files(
            FLAGS.model,
            FLAGS.name,
            FLAGS.entry_json,
            FLAGS.manifest,
            FLAGS.weights_dir,
            FLAGS.url,
            FLAGS.model_dir,
        )
        weights = entry["weights"]
        print(f"published {FLAGS.name}: {weights['file']} sha256 {weights['sha256']}")


def run():
    """Console-script entry point."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
