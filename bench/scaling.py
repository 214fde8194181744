"""Res-LSTM time against T, depth and hidden size, with a linear fit; writes a PNG.

Forward time of `ResidualLSTM` (batch 8) is measured over T in 5..35 (3 layers,
1024 units), depth 1..4 (T=16, 1024 units) and hidden size 256..2048 (T=16, 3
layers). Time should grow linearly in T and depth (R^2 of a line printed beside
each) and at most quadratically in the hidden size (the recurrent matmul is H x 4H).
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_header, report, time_call  # noqa: E402


def forward_ms(steps, layers, units, batch=8, dim=1024):
    """Returns the median forward time in ms of a traced ResidualLSTM."""
    import tensorflow as tf

    from reslstm_tf.layers import ResidualLSTM

    layer = ResidualLSTM(units, num_layers=layers)
    x = tf.constant(np.random.default_rng(0).random((batch, steps, dim), dtype=np.float32))
    fn = tf.function(layer)
    return time_call(lambda: fn(x).numpy(), warmup=2, repeat=5) * 1e3


def r_squared(x, y, degree=1):
    """Returns the R^2 of a least-squares polynomial fit of y on x."""
    coeffs = np.polyfit(x, y, degree)
    residual = np.sum((np.polyval(coeffs, x) - y) ** 2)
    return 1.0 - residual / np.sum((y - np.mean(y)) ** 2)


def run(out_png):
    """Measures the three sweeps, prints them with fit quality, and saves the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    print(machine_header())
    sweeps = {
        "T (3 layers, 1024 units)": ([5, 15, 25, 35], lambda v: forward_ms(v, 3, 1024)),
        "depth (T=16, 1024 units)": ([1, 2, 3, 4], lambda v: forward_ms(16, v, 1024)),
        "hidden size (T=16, 3 layers)": ([256, 512, 1024, 2048], lambda v: forward_ms(16, 3, v)),
    }
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    rows = []
    for axis, (label, (values, measure)) in zip(axes, sweeps.items()):
        times = np.array([measure(v) for v in values])
        degree = 2 if label.startswith("hidden") else 1
        fit = r_squared(np.array(values, float), times, degree)
        rows.append(
            (
                f"forward ms over {label}: {', '.join(str(v) for v in values)}",
                " ".join(f"{t:.1f}" for t in times),
                f"{'quadratic' if degree == 2 else 'linear'} fit",
                f"R^2={fit:.3f}",
            )
        )
        axis.plot(values, times, "o-")
        axis.set_xlabel(label)
        axis.set_ylabel("forward ms (batch 8)")
        axis.set_title(f"R^2 of {'quadratic' if degree == 2 else 'linear'} fit {fit:.3f}")
        axis.grid(alpha=0.3)
    fig.suptitle("ResidualLSTM forward time scaling")
    fig.tight_layout()
    os.makedirs(os.path.dirname(out_png) or ".", exist_ok=True)
    fig.savefig(out_png, dpi=110)
    print(f"figure: {out_png}")
    return {"title": "Res-LSTM forward time scaling (batch 8)", "rows": rows, "ratios": {}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "results", "scaling.png")
    )
    parser.add_argument("--json", help="also write the result to this JSON file")
    arguments = parser.parse_args()
    report(run(arguments.out), arguments.json)
