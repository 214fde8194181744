"""Fine-tuning I3D from Mixed_4f: our Keras step against the same step in PyTorch.

One batch of clips (default 4 clips x 16 frames x 112 px, RGB), the same weights in both:
our Keras I3D (`reslstm_tf.backbones.i3d`, Mixed_5c averaged, a linear classifier on top,
frozen as fine-tuning freezes it: every layer before Mixed_4f and every BatchNorm fixed,
`video_classifier.freeze_below` and `freeze_batchnorm`) and an equivalent PyTorch
InceptionI3d written below (Conv3d + BatchNorm3d + ReLU units with TensorFlow's "SAME"
padding, the same inception blocks and max pools), into which the Keras weights are
copied. Before timing, both give the same logits on the same clips, and again after one
training step (same loss, same gradients, same update), so the two steps do the same work.

The step is the fine-tuning step: forward in training mode, sparse cross-entropy on the
logits, backward, SGD with momentum 0.9 (the fine-tuning default) on the layers from
Mixed_4f up. Ours is `keras_step_and_forward`'s tf.function (a graph, no XLA, as
fine-tuning runs by default; `--jit` adds XLA), PyTorch's is its eager step (channels-last
3D memory format when that is faster, `--torch_layout`; its OpenMP threads wait passively,
`OMP_WAIT_POLICY=PASSIVE`, unless the caller sets the variable). Both use the same threads.
They are timed alternately after a warm-up; the medians give

    finetune_torch=<Keras s/step over PyTorch s/step>   (below 1: ours is faster)

and the best of the same steps `finetune_torch_best=` (on a shared machine other jobs only
add time, and both runtimes' thread pools lose more than their share when they do).

`--profile` also times the parts (forward in training mode, forward + backward, the whole
step) on both sides and lists the ops that take the most time (TensorFlow's profiler,
torch.profiler). Random weights (no download): the cost does not depend on their values.

PyTorch is a peer, not a dependency: `pip install -e ".[bench]"` first. Without it the
script stops with a one-line message (with `--json`, as run_all.py runs it, it writes a
row saying so instead).

    python bench/finetune_torch.py [--batch 4 --frames 16 --size 112] [--profile]
                                   [--json out.json]
"""

import glob
import math
import os
import statistics
import sys
import tempfile
import time

import numpy as np

# PyTorch's OpenMP threads spin at each barrier; on a shared machine a spinning thread
# that loses its time slice stalls the others, and its 2-thread step ran 3-5x slower than
# with passive waiting while other jobs ran. Set before torch loads; a caller's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    clip_parser,
    keras_step_and_forward,
    machine_header,
    report,
    set_threads,
)

TITLE = "I3D fine-tuning step from Mixed_4f: Keras vs PyTorch (ratio < 1: ours faster)"
TRAINABLE_FROM = "Mixed_4f"


# ----------------------------------------------------------------------------- Keras


def keras_model(args):
    """Our I3D features + a linear classifier, frozen below Mixed_4f and in every BatchNorm."""
    import keras

    from reslstm_tf.backbones.extractor import feature_model
    from reslstm_tf.video_classifier import freeze_batchnorm, freeze_below

    keras.utils.set_random_seed(0)
    backbone = feature_model("i3d", "rgb", weights=None)
    # Random BatchNorm statistics and offsets, so that copying them is checked too.
    rng = np.random.default_rng(0)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, size).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, size).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.1, size).astype("float32"))
    freeze_below(backbone, TRAINABLE_FROM)
    freeze_batchnorm(backbone)
    inputs = keras.Input((args.frames, args.size, args.size, 3), name="clips")
    logits = keras.layers.Dense(args.classes, name="classifier")(backbone(inputs))
    return keras.Model(inputs, logits, name="i3d_finetune")


def keras_parts(model, optimizer, x, y, jit_compile):
    """Returns (forward in training mode, forward + backward) closures, for the profile."""
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=jit_compile)
    def forward():
        return loss_fn(y, model(x, training=True))

    @tf.function(jit_compile=jit_compile)
    def gradients():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    return (lambda: forward().numpy()), (lambda: [g.numpy() for g in gradients()[:1]])


def tf_op_profile(step, top):
    """Returns [(op type, ms per step, share)] of one profiled `step()` (TF's profiler)."""
    import tensorflow as tf
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        step()
        tf.profiler.experimental.stop()
        (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        data, ok = plugin.xspace_to_tools_data([path], "framework_op_stats", {})
    if not ok:
        return []
    return _op_stats_rows(data, top)


def _op_stats_rows(data, top):
    """Sums TF's framework op stats (a DataTable JSON) per op type: [(type, ms, share)]."""
    import json

    tables = json.loads(data)
    table = tables[0] if isinstance(tables, list) else tables
    columns = [c["id"] for c in table["cols"]]
    type_col, self_col = columns.index("type"), columns.index("total_self_time")
    host_col = columns.index("host_or_device") if "host_or_device" in columns else None
    totals = {}
    for row in table["rows"]:
        cells = [c["v"] if c else None for c in row["c"]]
        if cells[type_col] == "IDLE" or (host_col is not None and cells[host_col] != "Host"):
            continue
        totals[cells[type_col]] = totals.get(cells[type_col], 0.0) + float(cells[self_col])
    whole = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:top]
    # total_self_time is in microseconds
    return [(name, us / 1e3, us / whole) for name, us in ranked]


# --------------------------------------------------------------------------- PyTorch


def torch_i3d(num_classes):
    """Returns an InceptionI3d in PyTorch: the Keras port's layers, TF "SAME" padding."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch import nn

    from reslstm_tf.backbones.i3d import BN_EPSILON, INCEPTION_CHANNELS, MAX_POOLS

    def same_pads(sizes, kernel, stride):
        """F.pad's (left, right) pairs, last dimension first, of TF's SAME padding."""
        pads = []
        for size, k, s in zip(sizes, kernel, stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        return [p for pair in reversed(pads) for p in pair]

    def symmetric(kernel, stride):
        """Whether SAME padding is k // 2 on both sides for any input (stride 1, odd k)."""
        return all(s == 1 and k % 2 == 1 for k, s in zip(kernel, stride))

    class Unit3D(nn.Module):
        """Conv3d (no bias, SAME) -> BatchNorm3d (eps 1e-3, no learnt scale) -> ReLU."""

        def __init__(self, cin, cout, kernel, scope, stride=(1, 1, 1)):
            super().__init__()
            self.scope, self.kernel, self.stride = scope, kernel, stride
            self.native = symmetric(kernel, stride)
            padding = tuple(k // 2 for k in kernel) if self.native else 0
            self.conv = nn.Conv3d(cin, cout, kernel, stride, padding=padding, bias=False)
            self.bn = nn.BatchNorm3d(cout, eps=BN_EPSILON, momentum=0.001)
            self.bn.weight.requires_grad_(False)  # Keras' scale=False: gamma is 1

        def forward(self, x):
            if not self.native:
                x = F.pad(x, same_pads(x.shape[2:], self.kernel, self.stride))
            return F.relu(self.bn(self.conv(x)))

    class MaxPoolSame(nn.Module):
        """Max pool with TF's SAME padding (padded positions never win)."""

        def __init__(self, window, stride):
            super().__init__()
            self.window, self.stride = window, stride
            self.native = symmetric(window, stride)
            padding = tuple(k // 2 for k in window) if self.native else 0
            self.pool = nn.MaxPool3d(window, stride, padding=padding)

        def forward(self, x):
            if not self.native:
                x = F.pad(x, same_pads(x.shape[2:], self.window, self.stride), value=-math.inf)
            return self.pool(x)

    class Inception(nn.Module):
        """Four branches (1x1; 1x1-3x3; 1x1-3x3; pool-1x1) concatenated on channels."""

        def __init__(self, cin, ch, scope):
            super().__init__()
            self.b0 = Unit3D(cin, ch[0], (1, 1, 1), f"{scope}.Branch_0.Conv3d_0a_1x1")
            self.b1a = Unit3D(cin, ch[1], (1, 1, 1), f"{scope}.Branch_1.Conv3d_0a_1x1")
            self.b1b = Unit3D(ch[1], ch[2], (3, 3, 3), f"{scope}.Branch_1.Conv3d_0b_3x3")
            self.b2a = Unit3D(cin, ch[3], (1, 1, 1), f"{scope}.Branch_2.Conv3d_0a_1x1")
            self.b2b = Unit3D(ch[3], ch[4], (3, 3, 3), f"{scope}.Branch_2.Conv3d_0b_3x3")
            self.b3a = MaxPoolSame((3, 3, 3), (1, 1, 1))
            self.b3b = Unit3D(cin, ch[5], (1, 1, 1), f"{scope}.Branch_3.Conv3d_0b_1x1")
            self.out_channels = ch[0] + ch[2] + ch[4] + ch[5]

        def forward(self, x):
            branches = (
                self.b0(x),
                self.b1b(self.b1a(x)),
                self.b2b(self.b2a(x)),
                self.b3b(self.b3a(x)),
            )
            return torch.cat(branches, dim=1)

    class InceptionI3d(nn.Module):
        """Conv3d_1a_7x7 ... Mixed_5c, averaged over time and space, then a linear layer."""

        def __init__(self):
            super().__init__()
            self.endpoints = nn.ModuleDict()
            self.endpoints["Conv3d_1a_7x7"] = Unit3D(3, 64, (7, 7, 7), "Conv3d_1a_7x7", (2, 2, 2))
            self.endpoints["MaxPool3d_2a_3x3"] = MaxPoolSame(*MAX_POOLS["MaxPool3d_2a_3x3"])
            self.endpoints["Conv3d_2b_1x1"] = Unit3D(64, 64, (1, 1, 1), "Conv3d_2b_1x1")
            self.endpoints["Conv3d_2c_3x3"] = Unit3D(64, 192, (3, 3, 3), "Conv3d_2c_3x3")
            channels = 192
            for name in INCEPTION_CHANNELS:
                if name == "Mixed_3b":
                    self.endpoints["MaxPool3d_3a_3x3"] = MaxPoolSame(*MAX_POOLS["MaxPool3d_3a_3x3"])
                elif name == "Mixed_4b":
                    self.endpoints["MaxPool3d_4a_3x3"] = MaxPoolSame(*MAX_POOLS["MaxPool3d_4a_3x3"])
                elif name == "Mixed_5b":
                    self.endpoints["MaxPool3d_5a_2x2"] = MaxPoolSame(*MAX_POOLS["MaxPool3d_5a_2x2"])
                block = Inception(channels, INCEPTION_CHANNELS[name], name)
                self.endpoints[name] = block
                channels = block.out_channels
            self.classifier = nn.Linear(channels, num_classes)

        def forward(self, x):
            for layer in self.endpoints.values():
                x = layer(x)
            return self.classifier(x.mean(dim=(2, 3, 4)))

    return InceptionI3d()


def copy_weights(keras_model_, torch_model):
    """Copies the Keras model's weights into the PyTorch one (NDHWC kernels to NCDHW)."""
    import torch

    backbone = keras_model_.get_layer("i3d_rgb_features")
    units = [m for m in torch_model.modules() if hasattr(m, "scope")]
    with torch.no_grad():
        for unit in units:
            kernel = np.asarray(backbone.get_layer(f"{unit.scope}.conv").kernel)
            unit.conv.weight.copy_(torch.from_numpy(kernel.transpose(4, 3, 0, 1, 2).copy()))
            bn = backbone.get_layer(f"{unit.scope}.bn")
            unit.bn.weight.fill_(1.0)
            unit.bn.bias.copy_(torch.from_numpy(np.asarray(bn.beta)))
            unit.bn.running_mean.copy_(torch.from_numpy(np.asarray(bn.moving_mean)))
            unit.bn.running_var.copy_(torch.from_numpy(np.asarray(bn.moving_variance)))
        dense = keras_model_.get_layer("classifier")
        torch_model.classifier.weight.copy_(torch.from_numpy(np.asarray(dense.kernel).T.copy()))
        torch_model.classifier.bias.copy_(torch.from_numpy(np.asarray(dense.bias)))
    return len(units)


def freeze_torch(model):
    """Freezes as fine-tuning does: before Mixed_4f, and every BatchNorm (eval mode)."""
    from torch import nn

    names = list(model.endpoints)
    first = names.index(TRAINABLE_FROM)
    for name in names[:first]:
        model.endpoints[name].requires_grad_(False)
    model.train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.eval()
            module.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def torch_closures(model, params, x, y):
    """Returns (step, forward in training mode, forward + backward) closures."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    def forward():
        return F.cross_entropy(model(x), y).item()

    def gradients():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    return step, forward, gradients


def torch_op_profile(step, top):
    """Returns [(op, ms per step, share)] of one profiled `step()` (torch.profiler, self CPU)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    whole = sum(e.self_cpu_time_total for e in events) or 1.0
    ranked = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return [(e.key, e.self_cpu_time_total / 1e3, e.self_cpu_time_total / whole) for e in ranked]


# ---------------------------------------------------------------------------- timing


def alternate(fns, warmup, repeat):
    """Returns each fn's seconds per call over `repeat` rounds, the fns called in turn."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return times


def to_torch(x, layout):
    """NDHWC numpy clips -> an NCDHW torch tensor in the `layout` memory format."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))
    return tensor.contiguous(memory_format=layout)


def build_pair(args, x):
    """Returns (Keras model, torch model, its trained params, max logit difference)."""
    import torch

    model = keras_model(args)
    peer = torch_i3d(args.classes)
    units = copy_weights(model, peer)
    params = freeze_torch(peer)
    ours = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    theirs = sum(p.numel() for p in params)
    print(f"units copied: {units}; trained parameters: Keras {ours}, PyTorch {theirs}")
    if ours != theirs:
        raise SystemExit(f"the freezes differ: {ours} != {theirs} trained parameters")
    with torch.no_grad():
        peer_logits = peer(to_torch(x, torch.contiguous_format)).numpy()
    logits = np.asarray(model(x, training=False))
    return model, peer, params, float(np.abs(logits - peer_logits).max())


def main():
    """Checks the two models agree, times their steps alternately, prints the table."""
    parser = clip_parser(__doc__)  # --batch, --frames, --size, --warmup, --repeat
    from reslstm_tf.clip_spec import PRESETS

    # A fine-tuning step's clips: segments of the study's spec (16 frames at 112 px).
    parser.set_defaults(batch=4, size=PRESETS["cpu_small"].frame_size, repeat=9)
    parser.add_argument("--classes", type=int, default=51)
    parser.add_argument("--threads", type=int, default=0, help="threads of both (0: all cores)")
    parser.add_argument("--jit", action="store_true", help="compile our step with XLA")
    parser.add_argument(
        "--torch_layout",
        choices=("auto", "channels_last", "contiguous"),
        default="auto",
        help="PyTorch's memory format (auto: the faster of the two)",
    )
    parser.add_argument("--profile", action="store_true", help="time the parts and the ops")
    parser.add_argument("--top", type=int, default=8, help="ops listed by --profile")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        message = 'finetune_torch: PyTorch is not installed; pip install -e ".[bench]" first'
        if not args.json:
            raise SystemExit(message) from None
        # under run_all.py: a missing peer is a row saying so, not a failed area
        print(message, file=sys.stderr)
        row = ("I3D fine-tuning s/step from Mixed_4f", "-", "torch not installed", "-")
        report({"title": TITLE, "rows": [row], "ratios": {}}, args.json)
        return
    threads = args.threads or os.cpu_count()
    set_threads(threads)
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    policy = f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    print(machine_header((f"torch {torch.__version__}", policy)), flush=True)
    run(args, threads)


def pick_layout(args, peer, params, x, labels):
    """Returns PyTorch's memory format: `--torch_layout`, or the faster forward of the two."""
    import torch

    layouts = {"channels_last": torch.channels_last_3d, "contiguous": torch.contiguous_format}
    if args.torch_layout != "auto":
        return args.torch_layout, layouts[args.torch_layout]
    speeds = {}
    for name, layout in layouts.items():
        peer.to(memory_format=layout)
        forward = torch_closures(peer, params, to_torch(x, layout), labels)[1]
        speeds[name] = min(alternate([forward], 1, 2)[0])
    print("PyTorch forward s by memory format:", speeds, flush=True)
    name = min(speeds, key=speeds.get)
    return name, layouts[name]


def after_one_step(model, keras_step, peer, torch_step, x, tx):
    """Takes one step on each side; returns (Keras loss, PyTorch loss, max logit difference)."""
    import torch

    ours_loss, peer_loss = float(keras_step()), torch_step()
    peer.eval()
    with torch.no_grad():
        after = peer(tx).numpy()
    freeze_torch(peer)  # back to training mode, BatchNorm in inference mode
    error = float(np.abs(np.asarray(model(x, training=False)) - after).max())
    return ours_loss, peer_loss, error


def run(args, threads):
    """The body of `main` once PyTorch is known to be there."""
    import keras
    import torch

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (args.batch, args.frames, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, args.classes, args.batch)
    labels = torch.from_numpy(y)
    model, peer, params, logit_error = build_pair(args, x)
    print(f"max |logit difference| before training: {logit_error:.1e}", flush=True)
    optimizer = keras.optimizers.SGD(1e-3, momentum=0.9)
    keras_step = keras_step_and_forward(model, optimizer, x, y, jit_compile=args.jit)[0]
    layout_name, layout = pick_layout(args, peer, params, x, labels)
    peer.to(memory_format=layout)
    tx = to_torch(x, layout)
    torch_fns = torch_closures(peer, params, tx, labels)
    torch_step = torch_fns[0]
    ours_loss, peer_loss, step_error = after_one_step(model, keras_step, peer, torch_step, x, tx)
    print(
        f"first step loss: Keras {ours_loss:.6f}, PyTorch {peer_loss:.6f}; "
        f"max |logit difference| after it: {step_error:.1e}",
        flush=True,
    )

    times = alternate([keras_step, torch_step], args.warmup, args.repeat)
    ours_s, peer_s = (statistics.median(t) for t in times)
    ratio = ours_s / peer_s
    best_ratio = min(times[0]) / min(times[1])
    for side, spent in zip(("Keras", "PyTorch"), times):
        print(f"{side} s/step: " + " ".join(f"{t:.3f}" for t in spent))
    faster = "Keras" if ratio < 1 else "PyTorch"
    speedup = max(ratio, 1 / ratio)
    print(
        f"medians: Keras {ours_s:.3f} s, PyTorch {peer_s:.3f} s: {faster} is {speedup:.2f}x faster"
    )
    ours_label = "Keras graph + XLA" if args.jit else "Keras graph"
    peer_label = f"PyTorch eager, {layout_name.replace('_', '-')}"
    setting = (
        f"{args.batch} clips x {args.frames} x {args.size}^2, {threads} threads, "
        "SGD momentum, BN frozen"
    )
    rows = [
        (
            f"I3D fine-tuning s/step from {TRAINABLE_FROM} (ratio < 1: ours faster), {ours_label} "
            f"({setting}), median",
            f"{ours_s:.3f}",
            f"{peer_s:.3f} ({peer_label})",
            f"{ratio:.2f}",
        ),
        (
            "I3D fine-tuning s/step, the same steps' best (other jobs only ever add time)",
            f"{min(times[0]):.3f}",
            f"{min(times[1]):.3f}",
            f"{best_ratio:.2f}",
        ),
        (
            "I3D fine-tuning max logit difference Keras - PyTorch, before / after a step",
            f"{logit_error:.1e} / {step_error:.1e}",
            "same weights",
            "-",
        ),
        ("I3D fine-tuning first-step loss", f"{ours_loss:.6f}", f"{peer_loss:.6f}", "-"),
    ]
    if args.profile:
        rows += profile_rows(args, model, optimizer, x, y, keras_step, torch_fns)
    report(
        {
            "title": TITLE,
            "rows": rows,
            "ratios": {"finetune_torch": ratio, "finetune_torch_best": best_ratio},
        },
        args.json,
    )


def profile_rows(args, model, optimizer, x, y, keras_step, torch_fns):
    """Times the parts of the step on both sides, alternately; prints each side's top ops.

    Returns the rows: forward in training mode, forward + backward, the whole step, and
    the differences (backward alone, the update alone).
    """
    forward_train, gradients = keras_parts(model, optimizer, x, y, args.jit)
    torch_step, torch_forward, torch_gradients = torch_fns
    ours_fns = [forward_train, gradients, keras_step]
    peer_fns = [torch_forward, torch_gradients, torch_step]
    times = alternate([*ours_fns, *peer_fns], 1, max(3, args.repeat // 2))
    medians = [statistics.median(t) for t in times]
    ours, peer = medians[:3], medians[3:]
    parts = [
        ("forward, training mode", ours[0], peer[0]),
        ("forward + backward", ours[1], peer[1]),
        ("whole step", ours[2], peer[2]),
        ("backward alone (difference)", ours[1] - ours[0], peer[1] - peer[0]),
        ("update alone (difference)", ours[2] - ours[1], peer[2] - peer[1]),
    ]
    rows = []
    for name, mine, theirs in parts:
        ratio = f"{mine / theirs:.2f}" if theirs > 0 else "-"
        rows.append((f"  profile, s: {name}", f"{mine:.3f}", f"{theirs:.3f}", ratio))
    sides = (
        ("Keras (TensorFlow ops, self time)", tf_op_profile(keras_step, args.top)),
        ("PyTorch (aten ops, self CPU time)", torch_op_profile(torch_step, args.top)),
    )
    for side, ops in sides:
        print(f"\ntop ops of one step, {side}:")
        for name, ms, share in ops:
            print(f"  {name:40s} {ms:9.1f} ms  {share:6.1%}")
    return rows


if __name__ == "__main__":
    main()
