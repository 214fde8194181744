"""The LiteRT streaming step at batch 1 against the Keras step; quantised top-1 agreement.

Latency: the zoo head `skateboard_frozen_lstm3` (3 LSTM layers of 256 units on 1024-d I3D
features) advanced one segment at a time, as a phone or an edge box streams: LiteRT's
interpreter (`step.tflite`, float32 and dynamic-range int8) against our Keras step
(`StreamingClassifier.tf_function()`, a traced graph), each fed back its own states,
median (p50) of `--repeat` calls after a warm-up.

Agreement (`--features_dir`, a feature cache of the real clips made as docs/skateboard.md
says): the full-sequence float16 and dynamic-range int8 models against float32 on every
cached clip; prints how many clips' top-1 class differs and the largest logit change.

Run: `python bench/litert_step.py [--repeat 300] [--features_dir <cache>/skateboard_i3d_rgb]`.
Needs ai-edge-litert (the `litert` extra).
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_header, percentile, report  # noqa: E402

TITLE = "LiteRT streaming step (skateboard_frozen_lstm3)"
HEAD = "skateboard_frozen_lstm3"


def step_latencies(step, features, states, repeat):
    """Returns the per-call ms of `step(features, states) -> new states`, fed back."""
    times = []
    for index in range(repeat + 10):
        start = time.perf_counter()
        states = step(features[index % len(features)], states)
        if index >= 10:
            times.append((time.perf_counter() - start) * 1e3)
    return times


def litert_step(path):
    """Returns step(features, states) -> states through a LiteRT signature runner."""
    from reslstm_tf.export.litert import interpreter

    runner = interpreter(path, num_threads=1).get_signature_runner()
    return lambda features, states: runner(features=features, states=states)["states"]


def keras_step(model):
    """Returns step(features, states) -> states through the traced Keras step."""
    import tensorflow as tf

    from reslstm_tf.streaming import StreamingClassifier

    serve_step = StreamingClassifier(model).tf_function()

    def step(features, states):
        return serve_step(tf.constant(features), states)["states"]

    return step


def agreement(model, work, features_dir):
    """Returns rows: top-1 differences of the quantised full models against float32."""
    from reslstm_tf.data.feature_cache import read_features
    from reslstm_tf.export.litert import export_litert, interpreter

    features = np.stack([r["features"] for r in read_features(features_dir)]).astype("float32")
    logits, sizes = {}, {}
    for quantization in ("none", "float16", "dynamic_int8"):
        paths = export_litert(model, os.path.join(work, f"full_{quantization}"), quantization)
        runner = interpreter(paths["model"]).get_signature_runner()
        logits[quantization] = runner(features=features)["logits"]
        sizes[quantization] = paths["model"].stat().st_size / 1e6
    top1 = np.argmax(logits["none"], axis=-1)
    sizes_text = " / ".join(f"{size:.2f}" for size in sizes.values())
    rows = [("LiteRT model.tflite MB: float32 / float16 / dynamic_int8", sizes_text, "-", "-")]
    for quantization in ("float16", "dynamic_int8"):
        differ = int(np.sum(np.argmax(logits[quantization], axis=-1) != top1))
        change = float(np.abs(logits[quantization] - logits["none"]).max())
        rows.append(
            (
                f"LiteRT {quantization} top-1 differs from float32, {len(features)} real clips",
                f"{differ}",
                f"max logit change {change:.1e}",
                "-",
            )
        )
    return rows


def run(args):
    """Measures the LiteRT and Keras steps at batch 1; returns the result dict."""
    try:
        import ai_edge_litert
    except ImportError:
        reason = 'not installed (pip install "reslstm-tf[litert]")'
        return {"title": TITLE, "rows": [("LiteRT step batch-1 latency ms", "-", reason, "-")]}
    from reslstm_tf import zoo
    from reslstm_tf.export import signatures
    from reslstm_tf.export.litert import export_litert

    version = getattr(ai_edge_litert, "__version__", "?")
    print(machine_header([f"ai-edge-litert {version}"]))
    model = zoo.load(HEAD)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(16, 1, model.input_shape[-1])).astype("float32")
    states = signatures.initial_states(model, 1)["states"]
    peer_ms = percentile(step_latencies(keras_step(model), features, states, args.repeat), 50)
    rows, ratios = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_litert_") as work:
        for quantization in ("none", "dynamic_int8"):
            paths = export_litert(model, os.path.join(work, quantization), quantization)
            step = litert_step(paths["step"])
            ours_ms = percentile(step_latencies(step, features, states, args.repeat), 50)
            label = "float32" if quantization == "none" else quantization
            rows.append(
                (
                    f"LiteRT step batch-1 latency ms, p50, 1 thread: {label}",
                    f"{ours_ms:.3f}",
                    f"{peer_ms:.3f} (Keras step, tf.function)",
                    f"{peer_ms / ours_ms:.2f}x",
                )
            )
            ratios.setdefault("litert_step", peer_ms / ours_ms)
        if args.features_dir:
            rows += agreement(model, work, args.features_dir)
    return {"title": TITLE, "rows": rows, "ratios": ratios}


def parse_args(argv=None):
    """Parses the benchmark's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=300, help="timed steps per side")
    parser.add_argument("--features_dir", help="feature cache of real clips: quantised top-1")
    parser.add_argument("--json", help="also write the result to this JSON file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    report(run(arguments), arguments.json)
