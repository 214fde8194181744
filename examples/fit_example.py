"""Train a Res-LSTM with plain `model.fit` on one host, on the tf.data input of reslstm-train.

`model.fit` is the simplest way to train on one machine (CPU, one GPU, or
`MirroredStrategy`). For multi-worker training, exact resume and step checkpoints
use `reslstm-train` (docs/training.md): Keras 3 `model.fit` does not run under
`MultiWorkerMirroredStrategy` on TensorFlow 2.21.

Run:

    python examples/fit_example.py                      # synthetic features
    python examples/fit_example.py --features_npz=train.npz --feature_dim=1024

The .npz holds `features` (N, T, d_f) float32, `labels` (N,) int and optionally
`class_names`, exactly what `reslstm-train --features_npz` reads.
"""

import argparse

import keras
import tensorflow as tf

from reslstm_tf.data import feature_sets
from reslstm_tf.models import build_single_stream


def fit_example(
    features_npz=None,
    preset="res2",
    units=128,
    num_steps=16,
    feature_dim=1024,
    num_classes=None,
    epochs=5,
    batch_size=16,
    learning_rate=1e-3,
    seed=0,
    verbose=2,
):
    """Fits a single-stream model with `model.fit`; returns `(model, history)`."""
    keras.utils.set_random_seed(seed)
    if features_npz:
        features, labels, class_names = feature_sets.load_npz_features(features_npz)
        features = feature_sets.select_modality(features, "rgb")
        num_classes = num_classes or (len(class_names) if class_names else int(labels.max()) + 1)
    else:
        num_classes = num_classes or 5
        features, labels = feature_sets.synthetic_features(
            num_videos=8 * num_classes,
            num_classes=num_classes,
            num_steps=num_steps,
            feature_dim=feature_dim,
            seed=seed,
        )

    # The unbatched (features (T, d_f), label) dataset that reslstm-train also takes.
    dataset = tf.data.Dataset.from_tensor_slices((features, labels))
    train_data = (
        dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )

    model = build_single_stream(
        num_classes, preset, feature_dim=feature_dim, units=units, num_steps=num_steps
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    # The dataset shuffles itself (seeded, reshuffled each epoch).
    history = model.fit(train_data, epochs=epochs, verbose=verbose, shuffle=False)
    return model, history


def main():
    """Parses the command line and runs `fit_example`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features_npz", default=None)
    parser.add_argument("--preset", default="res2")
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--num_steps", type=int, default=16)
    parser.add_argument("--feature_dim", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _, history = fit_example(**vars(args))
    print(f"final training accuracy: {history.history['accuracy'][-1]:.3f}")


if __name__ == "__main__":
    main()
