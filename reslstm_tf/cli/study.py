r"""`reslstm-study`: the whole study on a labelled video folder, cross-validated, resumable.

Usage (the SkateboardML clips; about 1.5 hours on a 2-core CPU, see docs/skateboard.md):
    reslstm-study --data_dir=skateboard --split_file=skateboard/trainlist.txt \
        --out_dir=runs/skateboard_study

Computes the flow caches and the I3D trunk views once, then cross-validates every recipe
(frozen features with and without augmented views, fine-tuned RGB and flow I3D, two-stream
mid and late fusion, LSTM against Res-LSTM at each depth; the frozen-feature recipes also on
the clip specs of --frozen_clips, e.g. 16 segments at 224 px; every run also scored on
test-time views, and each fold's seeds as one ensemble) and writes `results.md`,
`results.json`, `runs.jsonl` and `depth.png` to --out_dir. The same command resumes a
stopped study. See `reslstm_tf.experiments.study`.
"""

import dataclasses
import functools

from absl import app, flags

from reslstm_tf.cli import define_once, refuse_arguments, run_tool
from reslstm_tf.clip_spec import PRESETS

FLAGS = flags.FLAGS
NAME = "reslstm-study"
_LISTS = ("flow_methods", "depths", "recipes")
# The study's clip: the "cpu_small" spec, its T, L and S set by the flags of those names.
_CLIP = PRESETS["cpu_small"]
_CLIP_FLAGS = ("num_segments", "segment_len", "frame_size")
# Flags that set a field of the study's TrainOptions: {flag: (StudyConfig field, option)}.
_TRAIN_FLAGS = {
    "head_epochs": ("head_train", "epochs"),
    "finetune_epochs": ("finetune_train", "epochs"),
}

_S, _I, _F, _B = flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float, flags.DEFINE_bool
_FLAGS = [
    (_S, "data_dir", None, "Folder of the videos (paths in the list are relative)."),
    (_S, "split_file", None, "The labelled list of <Class>/<video> lines."),
    (_S, "out_dir", None, "Where views, features, runs and results go (resumable)."),
    (_S, "flow_methods", "farneback", "Flow streams: farneback and/or tvl1 (opt-in); '' for none."),
    (_S, "flow_cache_dir", None, "Flow caches, one folder per method (default <out_dir>/flow)."),
    (_I, "num_segments", _CLIP.num_segments, "T, segments per video."),
    (_I, "segment_len", _CLIP.segment_len, "L, frames per segment."),
    (_I, "frame_size", _CLIP.frame_size, "S, the square crop side."),
    (_I, "views", 3, "Training views stored per video."),
    (_S, "trainable_from", "Mixed_5b", "First fine-tuned I3D block."),
    (_I, "folds", 5, "Stratified cross-validation folds."),
    (_I, "seeds", 3, "Training seeds per fold."),
    (_I, "finetune_seeds", None, "Seeds of the fine-tuning runs (default --seeds)."),
    (_I, "units", 256, "LSTM units of every head."),
    (_S, "depths", "3", "Stacked layers compared, e.g. 2,3,4 (opt-in: 240 more runs, ~22 min)."),
    (_I, "head_epochs", 15, "Epochs of a head on features."),
    (_I, "finetune_epochs", 8, "Epochs of a fine-tuning run."),
    (_S, "recipes", "", "Comma-separated recipes to run (default all)."),
    (
        _S,
        "frozen_clips",
        "paper:short=overlap",
        "Further clip specs the frozen-feature recipes (logreg, frozen, frozen_aug) also run "
        "on: comma-separated preset names with optional field changes "
        "('paper:short=overlap': 16 x 16 frames at 224 px); '' for none.",
    ),
    (_I, "frozen_clip_views", 0, "Training views per further clip spec (frozen_aug needs 1+)."),
    (_S, "frozen_clip_depths", "", "Head depths run on the further specs (default --depths)."),
    (
        _S,
        "tta_offsets",
        "0,-0.25,0.25",
        "Test-time views: window shifts in parts of the video (the first 0, the eval clip); "
        "'' for no test-time augmentation.",
    ),
    (_B, "tta_flips", True, "Also read each test-time view mirrored left to right."),
    (
        _S,
        "publish_manifest",
        None,
        "Then train the CV-best recurrent head on every clip, publish it to this zoo "
        "manifest (e.g. zoo/manifest.json) under a new tag and move its bare name there.",
    ),
    (
        _S,
        "dataset_name",
        "skateboard",
        "Published entry: <name>_<head>.<clip tag>_<recipe>_cv; classes <name>_classes.txt.",
    ),
    (_S, "dataset_title", "SkateboardML (Kickflip / Ollie)", "Published entries' dataset title."),
    (_B, "progress", True, "Show progress bars."),
]


def define_flags():
    """Defines the tool's absl flags (at run time, so importing this module defines none)."""
    for definer, name, default, help_text in _FLAGS:
        define_once(definer, name, default, help_text)


def config_from_flags():
    """The `StudyConfig` of the flags: the clip flags set its `clip`, the epochs flags its
    `head_train` and `finetune_train` options, the others the fields of their names."""
    from reslstm_tf.experiments.study import StudyConfig
    from reslstm_tf.experiments.study_clips import parse_clip

    names = {field.name for field in dataclasses.fields(StudyConfig)}
    values = {name: FLAGS[name].value for name in names if name in FLAGS}
    for name in _LISTS:
        items = tuple(v.strip() for v in values[name].split(",") if v.strip())
        values[name] = tuple(int(v) for v in items) if name == "depths" else items
    if not values["recipes"]:
        del values["recipes"]
    values["frozen_clips"] = tuple(
        parse_clip(text) for text in FLAGS.frozen_clips.split(",") if text.strip()
    )
    depths = [int(d) for d in FLAGS.frozen_clip_depths.split(",") if d.strip()]
    values["frozen_clip_depths"] = tuple(depths) or None
    values["tta_offsets"] = tuple(float(o) for o in FLAGS.tta_offsets.split(",") if o.strip())
    values["clip"] = _CLIP.replace(**{name: FLAGS[name].value for name in _CLIP_FLAGS})
    defaults = StudyConfig(data_dir="", split_file="", out_dir="")
    for flag, (field, option) in _TRAIN_FLAGS.items():
        changed = {option: FLAGS[flag].value}
        values[field] = dataclasses.replace(values.get(field, getattr(defaults, field)), **changed)
    return StudyConfig(**values)


def main(argv):
    """Maps the flags onto `run_study` and prints where the results are."""
    refuse_arguments(argv)
    for name in ("data_dir", "split_file", "out_dir"):
        if not FLAGS[name].value:
            raise app.UsageError(f"{NAME} needs --{name}")
    from reslstm_tf.experiments.study import run_study

    config = config_from_flags()
    report = run_study(config)
    print(f"{report['runs']} runs; results in {FLAGS.out_dir}/results.md")
    if FLAGS.publish_manifest:
        from reslstm_tf.data import datasets

        videos = datasets.load_dataset("folder", data_dir=config.data_dir,
                                       split_file=config.split_file)  # fmt: skip
        classes = f"{FLAGS.dataset_name}_classes.txt"
        dataset = {"name": FLAGS.dataset_name, "title": FLAGS.dataset_title, "classes": classes,
                   "num_classes": len(videos.classes)}  # fmt: skip
        command = " ".join(["reslstm-study", *_recorded_flags()])
        publish_study(config, dataset, FLAGS.publish_manifest, command)
    return 0


def publish_study(config, dataset, manifest_path, command):
    """Publishes the study's CV-best recurrent head under a new tag; moves its bare name.

    The head and its entry come from `reslstm_tf.experiments.study_publish.cv_publication`
    (its recipe's tag, numbered when a rerun selects a recipe already published); the zoo
    publishes it (refusing an existing tag) and `zoo.publishing.move_alias` points
    the bare name at it, recording the change. Returns {name: entry}.
    """
    from reslstm_tf import zoo
    from reslstm_tf.experiments.study_publish import cv_publication
    from reslstm_tf.zoo.names import split
    from reslstm_tf.zoo.publishing import free_name, move_alias

    rename = functools.partial(free_name, manifest_path=manifest_path)
    name, classifier, entry, why = cv_publication(config, dataset, command, rename)
    entry = zoo.publish_video_classifier(classifier, name, entry, manifest_path=manifest_path)
    move_alias(split(name)[0], name, why, manifest_path)
    metric = entry["metrics"][0]
    low, high = metric["ci95"]
    print(f"published {name}: CV {100 * metric['mean']:.1f} % (95% CI {100 * low:.1f}-"
          f"{100 * high:.1f}); {entry['selection']}")  # fmt: skip
    return {name: entry}


def _recorded_flags():
    """The flags of this run that differ from their defaults, paths shown as placeholders."""
    paths = {"data_dir": "<videos>", "split_file": "<videos>/trainlist.txt",
             "out_dir": "<runs>/study", "publish_manifest": "zoo/manifest.json",
             "flow_cache_dir": "<cache>/flow"}  # fmt: skip
    shown = []
    for _, name, default, _ in _FLAGS:
        value = FLAGS[name].value
        if name in paths and value:
            shown.append(f"--{name}={paths[name]}")
        elif value != default:
            shown.append(f"--{name}={value}")
    return shown


def run():
    """Console-script entry point."""
    from reslstm_tf.experiments.config import AblationError
    from reslstm_tf.training.errors import TrainingInputError

    run_tool(NAME, main, define_flags, doc=__doc__, user_errors=(AblationError, TrainingInputError))


if __name__ == "__main__":
    run()
