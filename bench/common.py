"""Shared bench helpers: machine description, timing, and the side-by-side table."""

import os
import platform
import statistics
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


def time_call(fn, warmup=2, repeat=5):
    """Returns the median wall time in seconds of `fn()` after `warmup` calls."""
    return statistics.median(latencies(fn, warmup, repeat)) / 1e3


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
