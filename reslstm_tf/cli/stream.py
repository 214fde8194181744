"""`reslstm-stream [VIDEO|CAMERA]`: online action recognition, one segment at a time.

Prints the current top-3 actions after every segment with its latency, a summary
saying whether recognition kept up with real time, and optionally a PNG strip of
the segments' last frames with their labels.
"""

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    if "hop" in FLAGS:
        return
    flags.DEFINE_string("model", "kinetics400_i3d", "Zoo entry with published weights.")
    flags.DEFINE_integer(
        "segment_len", None, "Frames per segment (default: the entry's).", lower_bound=1
    )
    flags.DEFINE_integer(
        "frame_size", None, "Square crop side (default: the entry's).", lower_bound=16
    )
    flags.DEFINE_integer(
        "hop", None, "Frames between predictions (default: segment_len).", lower_bound=1
    )
    flags.DEFINE_integer("top_k", 3, "Classes shown per segment.", lower_bound=1)
    flags.DEFINE_bool(
        "realtime",
        True,
        "Play a file at its frame rate, as a camera delivers it, so latencies are real; "
        "--norealtime processes it as fast as possible.",
    )
    flags.DEFINE_integer("max_segments", None, "Stop after this many segments.", lower_bound=1)
    flags.DEFINE_string("strip", None, "Write a PNG strip of the segments with their labels.")


def summarize(events, hop):
    """Returns a dict: mean/p95 compute and latency (ms), real-time factor, keeps_up."""
    if not events:
        return {"segments": 0}
    compute = np.array([e.compute_ms for e in events])
    latency = np.array([e.latency_ms for e in events])
    budget_ms = hop / events[0].fps * 1e3
    factor = budget_ms / compute.mean()
    return {
        "segments": len(events),
        "compute_ms_mean": float(compute.mean()),
        "latency_ms_mean": float(latency.mean()),
        "latency_ms_p95": float(np.percentile(latency, 95)),
        "segment_budget_ms": float(budget_ms),
        "realtime_factor": float(factor),
        "keeps_up": bool(factor >= 1.0),
        "dropped": int(events[-1].dropped),
    }


def draw_strip(events, out_png, columns=8):
    """Writes a PNG of the segments' last frames, each titled with its top class."""
    from reslstm_tf.plots import pyplot, save_figure

    plt = pyplot()
    rows = -(-len(events) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 3.0 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.set_axis_off()
    for axis, event in zip(axes.ravel(), events):
        axis.imshow(event.thumbnail)
        name, p = event.ranked[0]
        axis.set_title(f"{event.end_s:.1f}s {name}\n{p:.0%}, {event.latency_ms:.0f} ms", fontsize=7)
    return save_figure(fig, out_png, dpi=90, pad=1.5)


def stream(
    source=None,
    model="kinetics400_i3d",
    segment_len=None,
    frame_size=None,
    hop=None,
    top_k=3,
    realtime=None,
    max_segments=None,
    strip=None,
):
    """Streams `source` (default: the sample clip), prints events and a summary."""
    from reslstm_tf.predict import sample_video_path
    from reslstm_tf.streaming import stream_video

    source = source if source is not None else str(sample_video_path())
    events = []
    for event in stream_video(
        source, model, segment_len, frame_size, hop, top_k, realtime, max_segments
    ):
        ranked = ", ".join(f"{n} {p:.2f}" for n, p in event.ranked)
        print(
            f"segment {event.index + 1:3d} [{event.start_s:5.1f}-{event.end_s:5.1f} s] "
            f"latency {event.latency_ms:6.0f} ms: {ranked}",
            flush=True,
        )
        events.append(event)
    summary = summarize(events, hop or _segment_len_used(model, segment_len))
    if summary["segments"]:
        verdict = "keeps up with" if summary["keeps_up"] else "CANNOT keep up with"
        print(
            f"{verdict} real time: {summary['compute_ms_mean']:.0f} ms per segment for "
            f"{summary['segment_budget_ms']:.0f} ms of video "
            f"({summary['realtime_factor']:.1f}x real time); p95 latency "
            f"{summary['latency_ms_p95']:.0f} ms; dropped {summary['dropped']} segments"
        )
    if strip and events:
        print(f"strip: {draw_strip(events, strip)}")
    return events, summary


def _segment_len_used(model, segment_len):
    from reslstm_tf import zoo

    if segment_len:
        return segment_len
    name = model if isinstance(model, str) else model.zoo_entry["name"]
    return zoo.info(name)["features"]["rgb"]["segment_len"]


def main(argv):
    if len(argv) > 2:
        raise app.UsageError(f"give at most one video path or camera index. Received: {argv[1:]}")
    stream(
        argv[1] if len(argv) == 2 else None,
        FLAGS.model,
        FLAGS.segment_len,
        FLAGS.frame_size,
        FLAGS.hop,
        FLAGS.top_k,
        FLAGS.realtime,
        FLAGS.max_segments,
        FLAGS.strip,
    )


def run():
    """Console-script entry point."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
