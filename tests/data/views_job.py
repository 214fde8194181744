"""A small extraction with views, run in its own process by the tests (it may be killed).

    python -m tests.data.views_job DATA_DIR SPLIT_FILE OUT_DIR

Extracts 2 segments of 8 frames at 32 pixels and 2 views per video (seed 5), 2 videos per
batch and per shard, with `ProjectionExtractor`: a deterministic stand-in for a backbone
that every crop, flip and frame changes.
"""

import sys

import numpy as np


class ProjectionExtractor:
    """A fixed random linear map of each segment (8 x 32 x 32 x C) to 6 features."""

    segment_len = 8
    frame_size = 32
    feature_dim = 6

    def __init__(self, channels=3):
        size = self.segment_len * self.frame_size * self.frame_size * channels
        self.weights = np.random.default_rng(0).standard_normal((size, 6)).astype("float32")
        self.weights /= np.sqrt(size)

    def __call__(self, segments):
        segments = np.asarray(segments, "float32")
        return segments.reshape(len(segments), -1) @ self.weights


def config(data_dir, split_file, out_dir):
    """The job's `ExtractConfig`."""
    from reslstm_tf.clip_spec import ClipSpec
    from reslstm_tf.extract import ExtractConfig

    return ExtractConfig(
        data_dir=data_dir,
        out_dir=out_dir,
        split_file=split_file,
        clip=ClipSpec(num_segments=2, frame_size=32, segment_len=8),
        views=2,
        seed=5,
        batch_size=2,
        shard_size=2,
        decode_workers=1,
    )


def main(argv):
    """Runs the extraction of the command line's folders; prints the summary's counts."""
    from reslstm_tf.extract import extract

    summary = extract(config(*argv), extractor=ProjectionExtractor(), progress=False)
    print(summary["done"], summary["skipped"], summary["failed"])


if __name__ == "__main__":
    main(sys.argv[1:])
