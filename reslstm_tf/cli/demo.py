"""`reslstm-demo`: builds a Res-LSTM and a plain LSTM and fits both on synthetic segment features.

A self-contained check that the install works: no data, no weights. Real recognition
is `reslstm-classify`.
"""

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    if "preset" in FLAGS:
        return
    flags.DEFINE_string("preset", "res3", "Architecture preset of the Res-LSTM model.")
    flags.DEFINE_integer("epochs", 5, "Training epochs.", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Random seed.")


def synthetic_features(num_classes=5, videos=64, steps=16, dim=1024, seed=0):
    """Returns (features (videos, steps, dim), labels): a class direction buried in noise."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_classes, dim))
    labels = rng.integers(0, num_classes, size=videos)
    noise = rng.normal(scale=2.0, size=(videos, steps, dim))
    features = np.maximum(centers[labels][:, None, :] + noise, 0.0) + 1e-3
    return features.astype("float32"), labels


def run_demo(preset="res3", epochs=5, seed=0):
    """Fits `preset` and its plain-LSTM twin on synthetic features; returns final accuracies."""
    import keras

    from reslstm_tf.models import build_single_stream

    keras.utils.set_random_seed(seed)
    x, y = synthetic_features(seed=seed)
    results = {}
    for name in (preset, preset.replace("res", "lstm")):
        model = build_single_stream(5, name, units=128)
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        history = model.fit(x, y, epochs=epochs, batch_size=16, verbose=2)
        results[name] = history.history["accuracy"][-1]
    for name, accuracy in results.items():
        print(f"{name}: training accuracy {accuracy:.3f}")
    return results


def main(argv):
    del argv
    run_demo(FLAGS.preset, FLAGS.epochs, FLAGS.seed)


def run():
    """Console-script entry point."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
