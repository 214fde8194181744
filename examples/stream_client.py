"""Streaming client: one segment feature per request to `serve_step`, carrying the LSTM states.

The server is TF Serving (REST) or, for a local check, the SavedModel loaded in
process. The client keeps the states the server returns and sends them back with
the next segment, so the prediction is always current while the video plays.

    # One video of a reslstm-extract feature cache, class names from the cache:
    python examples/stream_client.py --features_dir features/test/rgb \
        --video Ollie/Ollie3.mp4 --saved_model export/reslstm/1
    # Or a .npy array (T, d_f) of segment features and a class list, to TF Serving:
    python examples/stream_client.py --features clip_features.npy --classes classes.txt \
        --url http://localhost:8501/v1/models/reslstm

It prints the top classes by name after every segment.
"""

import argparse
import json
import urllib.request

import numpy as np


def local_step_fn(saved_model_dir):
    """Returns step(features (1, d_f), states) -> dict, calling a SavedModel in process."""
    import tensorflow as tf

    serve_step = tf.saved_model.load(saved_model_dir).signatures["serve_step"]

    def step(features, states):
        out = serve_step(features=tf.constant(features), states=tf.constant(states))
        return {key: value.numpy() for key, value in out.items()}

    return step, serve_step.structured_input_signature[1]["states"].shape


def rest_step_fn(url):
    """Returns step(features, states) -> dict, posting to TF Serving's REST predict API."""

    def step(features, states):
        body = json.dumps(
            {
                "signature_name": "serve_step",
                "inputs": {"features": features.tolist(), "states": states.tolist()},
            }
        ).encode()
        request = urllib.request.Request(
            f"{url}:predict", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            outputs = json.loads(response.read())["outputs"]
        return {key: np.asarray(value, np.float32) for key, value in outputs.items()}

    return step


def stream(step, features, state_shape, class_names=None, top=3):
    """Feeds features (T, d_f) one step at a time; prints and returns the probabilities."""
    states = np.zeros((1, *state_shape[1:]), np.float32)
    history = []
    for t, feature in enumerate(features):
        out = step(feature[None].astype(np.float32), states)
        states = out["states"]  # Keep the server's states for the next request.
        probabilities = out["probabilities"][0]
        order = np.argsort(-probabilities)[:top]
        names = [class_names[i] if class_names else str(i) for i in order]
        ranked = ", ".join(f"{n} {probabilities[i]:.2f}" for n, i in zip(names, order))
        print(f"segment {t + 1}: {ranked}")
        history.append(probabilities)
    return np.stack(history)


def cached_features(features_dir, video):
    """Returns (features (K_v, d_f), class names) of one video of a feature cache."""
    from reslstm_tf.data.feature_cache import read_features, read_index

    metadata = read_index(features_dir)["metadata"]
    names = metadata.get("classes") or metadata.get("class_names") or None
    records = {record["id"]: record for record in read_features(features_dir)}
    if video not in records:
        known = ", ".join(sorted(records)[:5])
        raise SystemExit(f"no video {video!r} in {features_dir} (it holds {known}, ...)")
    return records[video]["features"], names


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", help=".npy array (T, d_f)")
    parser.add_argument("--features_dir", help="a reslstm-extract feature cache")
    parser.add_argument("--video", help="with --features_dir: the video id to stream")
    parser.add_argument("--classes", help="class names, one per line (default: the cache's)")
    parser.add_argument("--saved_model", help="local SavedModel directory")
    parser.add_argument("--url", help="TF Serving REST model URL, e.g. .../v1/models/reslstm")
    parser.add_argument("--layers", type=int, default=3, help="L (REST mode only)")
    parser.add_argument("--units", type=int, default=1024, help="H (REST mode only)")
    args = parser.parse_args()
    if args.features_dir:
        if not args.video:
            parser.error("--features_dir needs --video")
        features, class_names = cached_features(args.features_dir, args.video)
    elif args.features:
        features, class_names = np.load(args.features), None
    else:
        parser.error("give --features or --features_dir and --video")
    if args.classes:
        with open(args.classes, encoding="utf-8") as handle:
            class_names = [line.strip() for line in handle if line.strip()]
    if args.saved_model:
        step, state_shape = local_step_fn(args.saved_model)
    elif args.url:
        step, state_shape = rest_step_fn(args.url), (1, args.layers, 2, args.units)
    else:
        parser.error("give --saved_model or --url")
    stream(step, features, state_shape, class_names)


if __name__ == "__main__":
    main()
