"""Shared bench helpers: machine description, timing, and the side-by-side table."""

import os
import platform
import time


def cpu_model():
    """Returns the CPU model name from /proc/cpuinfo (or the platform string)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags():
    """Returns the set of CPU feature flags from /proc/cpuinfo (empty if unknown)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_header(extra_versions=()):
    """Returns a one-paragraph description: CPU, cores, Python and library versions."""
    import keras
    import numpy
    import tensorflow

    versions = [
        f"python {platform.python_version()}",
        f"tensorflow {tensorflow.__version__}",
        f"keras {keras.__version__}",
        f"numpy {numpy.__version__}",
        *extra_versions,
    ]
    return f"machine: {cpu_model()}, {os.cpu_count()} cores; " + ", ".join(versions)


def latencies(fn, warmup=2, repeat=5):
    """Returns the wall time in ms of each of `repeat` calls of `fn()` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def paired_best(fn_a, fn_b, warmup=2, repeat=5):
    """Returns the best (smallest) seconds of `fn_a()` and of `fn_b()`, timed alternately.

    Alternating exposes both to the same machine load, and the best of several calls
    (as `timeit` recommends) drops the calls that other processes slowed down.
    """
    for _ in range(warmup):
        fn_a()
        fn_b()
    times_a, times_b = [], []
    for _ in range(repeat):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return min(times_a), min(times_b)


def time_call(fn, warmup=2, repeat=5):
    """Returns the best wall time in seconds of `repeat` calls of `fn()` after `warmup` calls.

    The best, not the median: on a shared machine other processes only ever add time.
    """
    return min(latencies(fn, warmup, repeat)) / 1e3


def percentile(values, q):
    """Returns the q-th percentile (0-100) of `values` by nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def print_table(title, rows, header=("measure", "ours", "peer / limit", "ratio")):
    """Prints rows of (measure, ours, peer, ratio) as an aligned table."""
    print(f"\n## {title}")
    table = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for index, row in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def fp32_peak_gflops(fma_units=2, cores=None):
    """Returns (GFLOP/s, how) of the CPU's fp32 peak: cores x lanes x 2 (FMA) x units x clock.

    The vector width comes from the CPU's own flags (avx512f: 16 fp32 lanes, avx2: 8,
    else 4), the clock from /proc/cpuinfo's `cpu MHz` (the nominal clock in a VM; a
    boosting CPU can exceed it), the FMA units per core is an assumption (2 on current
    server cores), stated in `how`.
    """
    flags = cpu_flags()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    per_lane = 2 if ("fma" in flags or "avx512f" in flags) else 1
    mhz = 0.0
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("cpu MHz"):
                    mhz = float(line.split(":", 1)[1])
                    break
    except OSError:
        pass
    cores = cores or os.cpu_count() or 1
    peak = cores * lanes * per_lane * fma_units * mhz / 1e3
    how = f"{cores} cores x {lanes} lanes x {per_lane} x {fma_units} FMA x {mhz / 1e3:.2f} GHz"
    return peak, how


def sgemm_gflops(size=2048, repeat=5):
    """Returns the GFLOP/s of a large fp32 matmul in TensorFlow: the reachable ceiling."""
    import numpy as np
    import tensorflow as tf

    a = tf.constant(np.random.default_rng(0).random((size, size), dtype=np.float32))
    matmul = tf.function(lambda a: tf.linalg.matmul(a, a))
    seconds = time_call(lambda: matmul(a).numpy(), warmup=2, repeat=repeat)
    return 2 * size**3 / seconds / 1e9


def set_threads(threads):
    """Sets TensorFlow's intra-op threads (None: leave the default, all cores)."""
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)


def report(result, json_path=None):
    """Prints a result's table and `ratios:` line, and writes it as JSON for run_all.py.

    Args:
        result: dict with "title", "rows" (measure, ours, peer or limit, ratio) and
            "ratios" (name -> ours over peer; > 1 means ours is faster).
        json_path: optional file to write the result to.
    """
    import json

    print_table(result["title"], result["rows"])
    if result.get("ratios"):
        print("ratios: " + " ".join(f"{k}={v:.2f}" for k, v in result["ratios"].items()))
    if json_path:
        with open(json_path, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)


def clip_parser(doc):
    """Returns an argument parser with the options every I3D clip benchmark takes.

    Batch, frames, frame size, warm-up and timed calls; the script adds its own. The frames
    and the frame size default to one segment of the paper's clip spec (16 x 224 px).
    """
    import argparse

    from reslstm_tf.clip_spec import PRESETS

    paper = PRESETS["paper"]
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2, help="clips per forward pass")
    parser.add_argument("--frames", type=int, default=paper.segment_len)
    parser.add_argument("--size", type=int, default=paper.frame_size)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    return parser


def keras_step_and_forward(model, optimizer, x, y, forward_x=None, jit_compile=False):
    """Returns (train_step, forward) closures of `model` on one fixed batch, giving numpy.

    train_step is one forward, backward and `optimizer` update with sparse cross-entropy on
    logits; forward runs `forward_x` (default `x`) in inference mode. Both are tf.functions,
    XLA-compiled with `jit_compile`.
    """
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    forward_x = x if forward_x is None else forward_x

    @tf.function(jit_compile=jit_compile)
    def train_step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    @tf.function(jit_compile=jit_compile)
    def forward():
        return model(forward_x, training=False)

    return (lambda: train_step().numpy()), (lambda: forward().numpy())
