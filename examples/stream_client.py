"""Streaming client: one segment feature per request to `serve_step`, carrying the LSTM states.

The server is TF Serving (REST) or, for a local check, the SavedModel loaded in
process. The client keeps the states the server returns and sends them back with
the next segment, so the prediction is always current while the video plays.

    python examples/stream_client.py --features clip_features.npy --saved_model export/1
    python examples/stream_client.py --features clip_features.npy \
        --url http://localhost:8501/v1/models/reslstm

`--features` is a .npy array (T, d_f) of segment features (e.g. from reslstm-extract).
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", required=True, help=".npy array (T, d_f)")
    parser.add_argument("--saved_model", help="local SavedModel directory")
    parser.add_argument("--url", help="TF Serving REST model URL, e.g. .../v1/models/reslstm")
    parser.add_argument("--layers", type=int, default=3, help="L (REST mode only)")
    parser.add_argument("--units", type=int, default=1024, help="H (REST mode only)")
    args = parser.parse_args()
    features = np.load(args.features)
    if args.saved_model:
        step, state_shape = local_step_fn(args.saved_model)
    elif args.url:
        step, state_shape = rest_step_fn(args.url), (1, args.layers, 2, args.units)
    else:
        parser.error("give --saved_model or --url")
    stream(step, features, state_shape)


if __name__ == "__main__":
    main()
