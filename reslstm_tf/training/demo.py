"""The `reslstm-demo` smoke test: a Res-LSTM and its plain-LSTM twin fit synthetic features."""

from reslstm_tf.data.feature_sets import synthetic_features
from reslstm_tf.models import build_single_stream
from reslstm_tf.training.trainer import Trainer

NUM_CLASSES = 5


def run_demo(preset="res3", epochs=5, seed=0):
    """Fits `preset` and its plain-LSTM twin on synthetic features.

    No data and no weights are needed: a check that the install trains.

    Args:
        preset: a Res-LSTM preset ("res2" to "res4"); its twin is "lstm<depth>".
        epochs: training epochs.
        seed: seeds the features, the weights and the shuffles.

    Returns:
        {preset: training accuracy of the last epoch} for both models.
    """
    x, y = synthetic_features(
        num_videos=64, num_classes=NUM_CLASSES, num_steps=16, feature_dim=1024, seed=seed, noise=2.0
    )
    results = {}
    for name in (preset, preset.replace("res", "lstm")):
        trainer = Trainer(
            lambda name=name: build_single_stream(NUM_CLASSES, name, units=128),
            num_classes=NUM_CLASSES,
            epochs=epochs,
            batch_size=16,
            seed=seed,
            progress=False,
        )
        results[name] = trainer.fit(x, y).history[-1]["accuracy"]
    return results
