"""I3D segment features in ONNX Runtime against our Keras graph, same weights, same run.

The Kinetics-400 I3D (Mixed_5c, global average pool) is exported to ONNX with
`reslstm_tf.export.onnx.export_onnx` and run by ONNX Runtime's CPU provider with all graph
optimisations and every core; our side is the extraction default (Keras fp32 graph under
`tf.function`, oneDNN). Both embed the same random clips, timed alternately (best of
`--repeat`). With `--profile`, ONNX Runtime's own profiler splits its time by operator type,
to say where the time goes.

Run: `python bench/onnx_peer.py [--batch 2 --frames 16 --size 224 --repeat 5 --profile]`.
Needs the `onnx` extra and onnxruntime.
"""

import collections
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import clip_parser, machine_header, paired_best, report  # noqa: E402

TITLE = "I3D in ONNX Runtime (same weights)"


def ort_session(path, profile_dir=None):
    """Returns an ONNX Runtime CPU session with every graph optimisation and all cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = os.cpu_count() or 1
    if profile_dir:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(profile_dir, "ort")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def op_time_split(profile_path, top=6):
    """Returns [(operator type, share of the node time)] from an ONNX Runtime profile."""
    with open(profile_path, encoding="utf-8") as handle:
        events = json.load(handle)
    totals = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"].get("op_name", "?")] += event["dur"]
    whole = sum(totals.values()) or 1
    return [(name, dur / whole) for name, dur in totals.most_common(top)]


def run(args):
    """Times the Keras I3D and its ONNX Runtime twin; returns the result dict."""
    try:
        import onnxruntime as ort
        import tf2onnx
    except ImportError:
        reason = 'not installed (pip install "reslstm-tf[onnx]" onnxruntime)'
        return {"title": TITLE, "rows": [("I3D clips/s: ONNX Runtime", "-", reason, "-")]}
    import tensorflow as tf

    from reslstm_tf.backbones.extractor import feature_model
    from reslstm_tf.export.onnx import export_onnx

    print(machine_header([f"onnxruntime {ort.__version__}", f"tf2onnx {tf2onnx.__version__}"]))
    clips = (
        np.random.default_rng(0)
        .uniform(-1.0, 1.0, (args.batch, args.frames, args.size, args.size, 3))
        .astype("float32")
    )
    backbone = feature_model("i3d", "rgb")
    forward = tf.function(lambda x: backbone(x, training=False))
    x = tf.constant(clips)
    with tempfile.TemporaryDirectory(prefix="bench_onnx_") as work:
        path = export_onnx(backbone, os.path.join(work, "i3d.onnx"))["model"]
        session = ort_session(path)
        feeds = {session.get_inputs()[0].name: clips}
        ours_s, peer_s = paired_best(
            lambda: forward(x).numpy(),
            lambda: session.run(None, feeds),
            warmup=args.warmup,
            repeat=args.repeat,
        )
        error = float(np.abs(session.run(None, feeds)[0] - forward(x).numpy()).max())
        split = []
        if args.profile:
            profiled = ort_session(path, profile_dir=work)
            for _ in range(2):
                profiled.run(None, feeds)
            split = op_time_split(profiled.end_profiling())
    ours, peer = args.batch / ours_s, args.batch / peer_s
    shape = f"{args.batch}x{args.frames}x{args.size}x{args.size}"
    rows = [
        (
            f"I3D clips/s ({shape}): Keras fp32 graph vs ONNX Runtime",
            f"{ours:.2f}",
            f"{peer:.2f} (onnxruntime {ort.__version__}, CPU, all optimisations)",
            f"{ours / peer:.2f}x",
        ),
        ("I3D max feature error: ONNX Runtime", f"{error:.1e}", "Keras fp32 graph", "-"),
    ]
    if split:
        where = ", ".join(f"{name} {share:.0%}" for name, share in split)
        rows.append(("ONNX Runtime I3D time by operator", where, "-", "-"))
    return {"title": TITLE, "rows": rows, "ratios": {"i3d_ort": ours / peer}}


def parse_args(argv=None):
    """Parses the benchmark's options."""
    parser = clip_parser(__doc__)
    parser.add_argument("--profile", action="store_true", help="ONNX Runtime time by operator")
    parser.add_argument("--json", help="also write the result to this JSON file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    report(run(arguments), arguments.json)
