"""Res-LSTM head: training samples/s and batch-1 latency against an equivalent PyTorch model.

The peer is a stack of `torch.nn.LSTM` layers with the same identity shortcuts,
the same shapes (T=16 steps of 1024-d features, 3 layers of 1024 units, 51
classes) and the same optimizer (Adam). Run: `python bench/head.py` (PyTorch
from the `bench` extra; without it the peer column says so).
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_header, print_table, time_call  # noqa: E402


def keras_head(args, jit_compile, masking=True):
    """Returns (train_step, infer_one) closures for the Keras Res-LSTM head."""
    import keras
    import tensorflow as tf

    from reslstm_tf.models import build_single_stream

    model = build_single_stream(
        args.classes,
        f"res{args.layers}",
        feature_dim=args.dim,
        units=args.units,
        num_steps=args.steps,
        masking=masking,
    )
    optimizer = keras.optimizers.Adam(1e-4)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((args.batch, args.steps, args.dim), dtype=np.float32))
    y = tf.constant(rng.integers(0, args.classes, args.batch))
    one = tf.constant(x[:1])

    @tf.function(jit_compile=jit_compile)
    def train_step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    @tf.function(jit_compile=jit_compile)
    def infer():
        return model(one, training=False)

    return (lambda: train_step().numpy()), (lambda: infer().numpy())


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
                x = lstm(x)[0] + x
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
        with torch.no_grad():
            return model(one).numpy()

    return train_step, infer


def run(args):
    """Measures both heads and returns the summary ratios (ours over peer)."""
    try:
        import torch

        peer = torch_head(args)
        peer_version = (f"torch {torch.__version__}",)
    except ImportError:
        peer, peer_version = None, ()
    print(machine_header(peer_version))
    print(
        f"shapes: batch {args.batch}, T={args.steps}, d_f={args.dim}, {args.layers} layers of "
        f"{args.units} units, {args.classes} classes"
    )
    peer_train = peer_infer = None
    if peer:
        peer_train = args.batch / time_call(peer[0], repeat=args.repeat)
        peer_infer = time_call(peer[1], repeat=args.repeat * 4) * 1e3
    rows, best_train, best_infer = [], 0.0, float("inf")
    for label, jit, masking in (
        ("eager graph", False, True),
        ("XLA", True, True),
        ("XLA, no masking", True, False),
    ):
        train, infer = keras_head(args, jit, masking)
        samples = args.batch / time_call(train, repeat=args.repeat)
        latency = time_call(infer, repeat=args.repeat * 4) * 1e3
        best_train, best_infer = max(best_train, samples), min(best_infer, latency)
        rows.append(
            (
                f"train samples/s ({label})",
                f"{samples:.1f}",
                f"{peer_train:.1f}" if peer else "torch not installed",
                f"{samples / peer_train:.2f}x" if peer else "-",
            )
        )
        rows.append(
            (
                f"batch-1 latency ms ({label})",
                f"{latency:.2f}",
                f"{peer_infer:.2f}" if peer else "torch not installed",
                f"{peer_infer / latency:.2f}x" if peer else "-",
            )
        )
    print_table("Res-LSTM head vs PyTorch (ratio > 1: ours faster; target 1.2x)", rows)
    ratios = {
        "head_train": best_train / peer_train if peer else float("nan"),
        "head_infer": peer_infer / best_infer if peer else float("nan"),
    }
    return ratios


def parse_args(argv=None):
    """Parses the benchmark's shape options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--units", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--classes", type=int, default=51)
    parser.add_argument("--repeat", type=int, default=5)
    return parser.parse_args(argv)


if __name__ == "__main__":
    ratios = run(parse_args())
    print("ratios: " + " ".join(f"{k}={v:.2f}" for k, v in ratios.items()))
