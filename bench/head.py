"""Res-LSTM head: training samples/s and batch-1 latency against an equivalent PyTorch model.

The peer is a stack of `torch.nn.LSTM` layers with the same identity shortcuts,
the same shapes (T=16 steps of 1024-d features, 3 layers of 1024 units, 51
classes), the same input dropout (one mask per sequence, the presets' 0.5) and the
same optimizer (Adam). Ours is shown as a graph, under XLA (what `model.fit` picks by
default, and `reslstm-train --jit_compile`) and in mixed_bfloat16 with the logit
change it causes. Run: `python bench/head.py` (PyTorch
from the `bench` extra; without it the peer column says so).
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    cpu_flags,
    keras_step_and_forward,
    machine_header,
    paired_best,
    report,
    set_threads,
    time_call,
)


def keras_head(args, jit_compile, policy="float32"):
    """Returns (train_step, infer_one, model) for the Keras Res-LSTM head (preset dropout)."""
    import keras
    import tensorflow as tf

    from reslstm_tf.models import build_single_stream
    from reslstm_tf.precision import dtype_policy

    keras.utils.set_random_seed(0)
    with dtype_policy(policy):
        model = build_single_stream(
            args.classes,
            f"res{args.layers}",
            feature_dim=args.dim,
            units=args.units,
            num_steps=args.steps,
            dropout=args.dropout,
        )
    optimizer = keras.optimizers.Adam(1e-4)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((args.batch, args.steps, args.dim), dtype=np.float32))
    y = tf.constant(rng.integers(0, args.classes, args.batch))
    train_step, infer = keras_step_and_forward(
        model, optimizer, x, y, forward_x=x[:1], jit_compile=jit_compile
    )
    return train_step, infer, model


def torch_head(args):
    """Returns (train_step, infer_one) closures for the equivalent PyTorch model."""
    import torch
    from torch import nn

    torch.set_num_threads(os.cpu_count())

    class ResLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstms = nn.ModuleList(
                nn.LSTM(args.dim if i == 0 else args.units, args.units, batch_first=True)
                for i in range(args.layers)
            )
            self.fc = nn.Linear(args.units, args.classes)

        def forward(self, x):
            for lstm in self.lstms:
                inputs = x
                if self.training and args.dropout > 0:  # one input mask per sequence
                    keep = torch.bernoulli(torch.full_like(x[:, :1], 1.0 - args.dropout))
                    inputs = x * keep / (1.0 - args.dropout)
                x = lstm(inputs)[0] + x
            return self.fc(x[:, -1])

    model = ResLSTM()
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((args.batch, args.steps, args.dim), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, args.classes, args.batch))
    one = x[:1].clone()

    def train_step():
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    def infer():
        model.eval()
        with torch.no_grad():
            out = model(one).numpy()
        model.train()
        return out

    return train_step, infer


def run(args):
    """Measures the Keras head (graph, XLA, bfloat16) against PyTorch; returns the result."""
    set_threads(args.threads)
    try:
        import torch

        peer = torch_head(args)
        peer_version = (f"torch {torch.__version__}",)
    except ImportError:
        peer, peer_version = None, ()
    print(machine_header(peer_version))
    print(
        f"shapes: batch {args.batch}, T={args.steps}, d_f={args.dim}, {args.layers} layers of "
        f"{args.units} units, {args.classes} classes, input dropout {args.dropout}, Adam"
    )
    configs = [("fp32 graph", False, "float32"), ("fp32 + XLA", True, "float32")]
    if "avx512_bf16" in cpu_flags() or "amx_bf16" in cpu_flags():
        configs.append(("mixed_bfloat16 graph", False, "mixed_bfloat16"))
        configs.append(("mixed_bfloat16 + XLA", True, "mixed_bfloat16"))
    rows, measured, outputs = [], {}, {}
    probe = np.random.default_rng(1).random((4, args.steps, args.dim), dtype=np.float32)
    for label, jit, policy in configs:
        train, infer, model = keras_head(args, jit, policy)
        outputs[label] = np.asarray(model(probe, training=False), np.float32)
        if peer:  # timed alternately with the peer: both see the same machine load
            ours_train, peer_train = paired_best(train, peer[0], repeat=args.repeat)
            ours_infer, peer_infer = paired_best(infer, peer[1], repeat=args.repeat * 8)
        else:
            ours_train = time_call(train, repeat=args.repeat)
            ours_infer = time_call(infer, repeat=args.repeat * 8)
        samples, latency = args.batch / ours_train, ours_infer * 1e3
        measured[label] = (samples, latency, None)
        if peer:
            peer_samples, peer_ms = args.batch / peer_train, peer_infer * 1e3
            measured[label] = (samples, latency, (peer_samples, peer_ms))
            rows.append(
                (
                    f"head train samples/s: {label}",
                    f"{samples:.1f}",
                    f"{peer_samples:.1f} (torch nn.LSTM)",
                    f"{samples / peer_samples:.2f}x",
                )
            )
            rows.append(
                (
                    f"head batch-1 latency ms: {label}",
                    f"{latency:.2f}",
                    f"{peer_ms:.2f} (torch nn.LSTM)",
                    f"{peer_ms / latency:.2f}x",
                )
            )
        else:
            rows.append((f"head train samples/s: {label}", f"{samples:.1f}", "no torch", "-"))
            rows.append((f"head batch-1 latency ms: {label}", f"{latency:.2f}", "no torch", "-"))
    base = outputs["fp32 graph"]
    for label, out in outputs.items():
        if label != "fp32 graph":
            error = float(np.abs(out - base).max())
            rows.append((f"head max logit error: {label}", f"{error:.1e}", "fp32 graph", "-"))
    samples, latency, peer_numbers = measured["fp32 + XLA"]
    ratios = {}
    if peer:
        ratios = {
            "head_train": samples / peer_numbers[0],
            "head_infer": peer_numbers[1] / latency,
        }
    title = "Res-LSTM head vs PyTorch (ratio > 1: ours faster; target 1.2x)"
    return {"title": title, "rows": rows, "ratios": ratios}


def parse_args(argv=None):
    """Parses the benchmark's shape options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--units", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--classes", type=int, default=51)
    parser.add_argument("--dropout", type=float, default=0.5, help="the presets' dropout")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: all)")
    parser.add_argument("--json", help="also write the result to this JSON file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    report(run(arguments), arguments.json)
