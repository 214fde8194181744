"""Which default learning rate `reslstm-train` should have: small and larger folders, real clips.

Trains `reslstm-train`'s default model (res3 on I3D features, 10 epochs, the automatic batch)
at each candidate learning rate on the same splits of a real feature cache, and prints per
rate: validation accuracy (mean ± std over the splits), how many runs collapsed onto one
class (on their validation videos) and how many ended with an epoch loss above twice its
lowest (diverging). Two regimes: "small", 5 training clips a class drawn at random (the
README's 10-clip folder; the other clips validate), and "folds", 5-fold stratified CV (120
training clips of 150). The choice is made on these splits, never on held-out clips.

    python bench/default_lr.py --features_dir=<cache> [--num_steps=16] [--repeats=5]

`<cache>` is a `reslstm-extract` cache of the 150 skateboard clips (`../shared/data`);
`--num_steps` reads T of its K segments (`step_segment_map`).
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from reslstm_tf.data import feature_sets  # noqa: E402
from reslstm_tf.experiments.splits import stratified_folds  # noqa: E402
from reslstm_tf.training import run_training  # noqa: E402

RATES = (1e-3, 3e-4, 1e-4)


def _splits(labels, regime, repeats):
    """(train, validation) index pairs of a regime."""
    everything = np.arange(len(labels))
    if regime == "folds":
        folds = stratified_folds(labels, 5, seed=0)[:repeats]
        return [(np.setdiff1d(everything, fold), fold) for fold in folds]
    out = []
    for repeat in range(repeats):
        rng = np.random.default_rng(repeat)
        train = np.concatenate(
            [rng.choice(np.flatnonzero(labels == c), 5, replace=False) for c in np.unique(labels)]
        )
        out.append((np.sort(train), np.setdiff1d(everything, train)))
    return out


def _run(features, labels, names, train, valid, rate, seed, scratch):
    """Trains one default run; returns (validation accuracy, collapsed, diverging)."""
    npz = os.path.join(scratch, f"train_{seed}.npz")
    feature_sets.write_npz_features(npz, features[train], labels[train], names)
    with tempfile.TemporaryDirectory(dir=scratch) as model_dir:
        result = run_training(
            model_dir=model_dir, features_npz=npz, learning_rate=rate, seed=seed, progress=False
        )
        predicted = result.model.predict(features[valid], verbose=0).argmax(-1)
    losses = [entry["loss"] for entry in result.history]
    diverging = len(losses) > 1 and losses[-1] > 2 * min(losses[:-1])
    collapsed = len(set(predicted.tolist())) == 1
    return float(np.mean(predicted == labels[valid])), collapsed, diverging


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features_dir", required=True)
    parser.add_argument("--num_steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rates", default=",".join(str(r) for r in RATES))
    args = parser.parse_args()
    data = feature_sets.load_feature_set(args.features_dir)
    features = feature_sets.select_steps(data.rgb, args.num_steps)
    labels, names = data.labels, data.class_names
    rates = [float(r) for r in args.rates.split(",")]
    print(f"{len(labels)} clips, features {features.shape[1:]}, rates {rates}")
    with tempfile.TemporaryDirectory() as scratch:
        for regime in ("small", "folds"):
            splits = _splits(labels, regime, args.repeats)
            for rate in rates:
                runs = [
                    _run(features, labels, names, train, valid, rate, seed, scratch)
                    for seed, (train, valid) in enumerate(splits)
                ]
                accuracy = 100 * np.array([r[0] for r in runs])
                print(
                    f"{regime:5s} lr={rate:g}: val accuracy {accuracy.mean():.1f} ± "
                    f"{accuracy.std():.1f} % over {len(runs)} splits; collapsed "
                    f"{sum(r[1] for r in runs)}, diverging {sum(r[2] for r in runs)}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
