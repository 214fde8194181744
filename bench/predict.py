"""Prediction over many videos against feature extraction on the same clips.

Classifies the 150 skateboard clips (`../shared/data/skateboard`) with the
`skateboard_frozen_lstm3` entry through `reslstm_tf.predict.predict_videos` (the library of
`reslstm-classify`: one backbone, a video's segments in one batch, the next videos decoded
while the network runs) and extracts their features with `reslstm_tf.extract.extract` (the
library of `reslstm-extract`) with the same segment spec (16 segments of 16 frames, 224
crops, 'overlap'), in the same process, alternating chunks of 10 videos so that both see
the same load of a shared machine. Both times cover the loops over the videos, not the
backbones' construction. The ratio is classify's videos/s over extract's: classification
adds a head that costs next to nothing, so the target is at least 0.8.

    python bench/predict.py [--data DIR] [--limit N] [--json out.json]
"""

import argparse
import os
import pathlib
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_header, report  # noqa: E402

DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "skateboard"
MODEL = "skateboard_frozen_lstm3"


def run(data, limit=None, chunk=10):
    """Measures both, alternating chunks of `chunk` videos; returns the result for `report`.

    Alternating exposes both to the same load of a shared machine. Each chunk is extracted
    into the same cache (new videos only) and classified by the same predictor.
    """
    from reslstm_tf.data import datasets
    from reslstm_tf.extract import ExtractConfig, build_extractor, extract
    from reslstm_tf.predict import VideoPredictor, predict_videos

    print(machine_header())
    items = list(datasets.folder(data, data / "trainlist.txt"))[:limit]
    predictor = VideoPredictor(MODEL)
    seconds = {"extract": 0.0, "classify": 0.0}
    counts = {"extract": 0, "classify": 0}
    with tempfile.TemporaryDirectory() as out_dir:
        # the entry's own clip spec: both sides cut the same clips
        config = ExtractConfig(str(data), out_dir, clip=predictor.classifier.spec)
        extractor = build_extractor(config)
        for start in range(0, len(items), chunk):
            part = items[start : start + chunk]
            summary = extract(config, videos=part, extractor=extractor, progress=False)
            seconds["extract"] += summary["seconds"]
            counts["extract"] += summary["done"] + summary["failed"]
            batch = predict_videos(predictor, [str(data / i.path) for i in part], progress=False)
            seconds["classify"] += batch.seconds
            counts["classify"] += len(batch.predictions) + len(batch.failures)
            print(f"{start + len(part)} videos: {seconds}", flush=True)
    rates = {name: counts[name] / seconds[name] for name in seconds}
    ratio = rates["classify"] / rates["extract"]
    return {
        "title": f"Prediction over {len(items)} clips ({MODEL}) vs extraction, same segments",
        "rows": [
            (
                "predict: reslstm-classify vs reslstm-extract (videos/s, target >= 0.8)",
                f"{rates['classify']:.3f}",
                f"{rates['extract']:.3f}",
                f"{ratio:.2f}",
            )
        ],
        "ratios": {"predict": ratio},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    report(run(pathlib.Path(args.data), args.limit), args.json)
