"""The head an ablation selected, trained on every clip and stored small, ready for the zoo.

The last step, `reslstm_tf.zoo.publish(model, name, entry, ...)`, is the caller's: the zoo
sits above the experiments in the package's layers, so nothing here imports it.
"""

import time

import numpy as np

from reslstm_tf.checks import check_choice
from reslstm_tf.data.feature_sets import select_steps
from reslstm_tf.experiments.ablation import load_data, train_final
from reslstm_tf.experiments.config import AblationError, RunSpec, options_from_record
from reslstm_tf.experiments.runner import build_head


def cast_weights(model, build_fn, dtype="float16"):
    """Returns a copy of `model` whose variables are stored as `dtype` (for smaller files).

    Args:
        model: the trained model.
        build_fn: a zero-argument function building the same architecture.
        dtype: the storage dtype, e.g. "float16". Layers pinned to float32 (the logits)
            stay float32. `load_weights` into a float32 model casts back.

    Returns:
        The cast model (same layer and variable paths, so its weights load into `model`'s
        architecture).
    """
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)
    try:
        cast = build_fn()
    finally:
        keras.config.set_dtype_policy(previous)
    for target, source in zip(cast.weights, model.weights):
        target.assign(np.asarray(source).astype(target.dtype))
    return cast


def _mean_cross_entropy(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def _train_candidates(data, best, options, dropout, seeds):
    """Trains the head once per seed; returns [(training loss, seed, model, logits), ...]."""
    x = select_steps(data.rgb, best["T"])
    head = (best["arch"], best["depth"], best["hidden"], best["T"])
    trained = []
    for seed in seeds:
        model = train_final(data, *head, options, dropout, seed)
        logits = np.asarray(model.predict(x, verbose=0), np.float64)
        trained.append((_mean_cross_entropy(logits, data.labels), seed, model, logits))
    return trained


def _cast_checked(model, logits, data, best, dropout, info):
    """Returns `model` cast to float16 if it predicts like the float32 model on every clip.

    Records the agreement and the largest logit difference in `info`.

    Raises:
        AblationError: the float16 copy changes a prediction.
    """
    spec = RunSpec(
        best["arch"], best["depth"], best["hidden"], best["T"], "rgb", "", "", "all", 0, 0
    )
    num_classes = int(data.labels.max()) + 1

    def build():
        return build_head(spec, num_classes, data.rgb.shape[-1], dropout, True)

    half_model = cast_weights(model, build, "float16")
    half = np.asarray(half_model.predict(select_steps(data.rgb, best["T"]), verbose=0), np.float32)
    agree = float(np.mean(half.argmax(-1) == logits.argmax(-1)))
    info["float16_prediction_agreement"] = agree
    info["float16_max_logit_difference"] = float(np.abs(half - logits).max())
    if agree < 1.0:
        raise AblationError(
            f"float16 weights change {100 * (1 - agree):.1f}% of the predictions; "
            "publish with dtype='float32'"
        )
    return half_model


def train_selected_head(features_dir, results, dtype="float16", seeds=(0, 1, 2)):
    """Trains the head an ablation selected on every clip of a cache, ready to publish.

    The architecture and training settings come from `results` (the dict `run_ablation`
    returns or its results.json): `results["best"]`, and `results["config"]`'s "train"
    options and "dropout" (`options_from_record`).
    One model is trained per seed in `seeds`; the one with the lowest training loss (in
    inference mode, on the training clips: no validation data exists here) is kept.
    With `dtype="float16"` the weights are stored as float16 if the float16 copy predicts
    the same class as the float32 model on every clip (checked here; raises otherwise).

    Args:
        features_dir: the RGB feature cache the ablation ran on.
        results: the ablation results dict.
        dtype: "float32" or "float16", the storage dtype of the weights.
        seeds: the training seeds to try.

    Returns:
        (model, info): the model to pass to `reslstm_tf.zoo.publish`, and a dict with the
        seed, the training losses and accuracy, the float16 check and the training time.

    Example:
        ```python
        model, info = train_selected_head("cache/skateboard_i3d_rgb", results)
        reslstm_tf.zoo.publish(model, "skateboard_frozen_lstm3", entry, "zoo/manifest.json", "zoo")
        ```
    """
    check_choice("dtype", dtype, ("float32", "float16"), error=AblationError)
    best = results["best"]
    if not best:
        raise AblationError("results hold no cross-validated recurrent head to publish")
    options, dropout = options_from_record(results["config"])
    data = load_data(features_dir)
    start = time.perf_counter()
    trained = _train_candidates(data, best, options, dropout, seeds)
    loss, seed, model, logits = min(trained, key=lambda item: item[0])
    info = {
        "seed": seed,
        "train_losses": {s: round(item_loss, 4) for item_loss, s, _, _ in trained},
        "train_seconds": round(time.perf_counter() - start, 1),
        "train_accuracy_all_clips": float(np.mean(logits.argmax(-1) == data.labels)),
        "dtype": dtype,
    }
    if dtype == "float16":
        model = _cast_checked(model, logits, data, best, dropout, info)
    return model, info
