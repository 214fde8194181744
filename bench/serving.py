"""SavedModel serving latency (p50, p99; batch 1 and 32) against the Keras model in process.

Exports a res3 head (T=16, 1024-d features, 51 classes) with `export_saved_model`,
loads it back with `tf.saved_model.load` as TF Serving would, and times
`serving_default` beside a traced in-process call of the same Keras model.
Target: serving within 1.2x of in-process.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import latencies, machine_header, percentile, report  # noqa: E402


def run(repeat=50):
    """Measures serving and in-process latency; returns {'serving': in-process / SavedModel}."""
    import tensorflow as tf

    from reslstm_tf.export.saved_model import export_saved_model
    from reslstm_tf.models import build_single_stream

    print(machine_header())
    model = build_single_stream(51, "res3")
    classes = [f"class_{i}" for i in range(51)]
    rows, ratios = [], []
    with tempfile.TemporaryDirectory() as tmp:
        export_saved_model(model, os.path.join(tmp, "m"), classes)
        serve = tf.saved_model.load(os.path.join(tmp, "m")).signatures["serving_default"]
        in_process = tf.function(lambda x: model(x, training=False))
        for batch in (1, 32):
            x = tf.constant(np.random.default_rng(0).random((batch, 16, 1024), dtype=np.float32))
            ours = latencies(lambda x=x: serve(features=x)["logits"].numpy(), repeat=repeat)
            peer = latencies(lambda x=x: in_process(x).numpy(), repeat=repeat)
            for q in (50, 99):
                a, b = percentile(ours, q), percentile(peer, q)
                rows.append(
                    (
                        f"serving latency ms, batch {batch}, p{q}",
                        f"{a:.2f}",
                        f"{b:.2f} (Keras in process)",
                        f"{b / a:.2f}x",
                    )
                )
            ratios.append(percentile(peer, 50) / percentile(ours, 50))
    return {
        "title": "SavedModel serving_default vs Keras in process (target within 1.2x)",
        "rows": rows,
        "ratios": {"serving": min(ratios)},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--json", help="also write the result to this JSON file")
    arguments = parser.parse_args()
    report(run(arguments.repeat), arguments.json)
