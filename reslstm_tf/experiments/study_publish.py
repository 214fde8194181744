"""From a finished study to zoo entries: select by cross-validation, train on every clip.

`select_recipes` reads the study's summary and picks, by mean cross-validated accuracy only:
the feature recipe for the depth entries ("frozen_aug" or "finetuned_features", the one whose
best head is best) and the best two-stream recipe. `train_final_models` then trains the
selected recipes on all the clips with the study's settings (seed 0): the fine-tuned
streams, the heads of every depth and the two-stream head, and `assemble_classifier` puts
them into one `build_video_classifier` model (video clips in, classes out) that
`reslstm_tf.zoo.publish_video_classifier` stores as a delta over the Kinetics-400 I3D
(`final_entries` returns them with their manifest entries).

`cv_publication` is what `reslstm-study --publish_manifest` publishes: the CV-best
recurrent head across clip specs (`study_results.select`), trained on every clip
(`train_selected`), with its entry (`cv_entry`: clip spec, CV accuracy with its 95%
interval, paired differences with the logistic regressions) under a new tag (`cv_name`).
"""

import dataclasses

import numpy as np

from reslstm_tf.experiments.config import RNN_ARCHS
from reslstm_tf.experiments.study import (
    LATE_FUSIONS,
    FinetuneRunner,
    Stream,
    run_head,
    study_heads,
    view_features,
)

TWO_STREAM_RECIPES = ("mid_product", *LATE_FUSIONS)


def _best(summary, **filters):
    candidates = [e for e in summary if all(e[k] == v for k, v in filters.items())]
    return max(candidates, key=lambda e: (e["mean"], -e["std"])) if candidates else None


def select_recipes(summary, two_stream_recipes=TWO_STREAM_RECIPES, clip=None):
    """The recipes to publish, chosen by mean CV accuracy (ties: smaller std, more runs).

    Args:
        summary: the study's summary list.
        clip: the tag of the study's own clip spec (the entries of other specs and the
            derived recipes are passed over; None: entries without a tag).
        two_stream_recipes: the two-stream recipes allowed (e.g. only "mid_product": a
            late-fusion entry carries a head per stream and may be too large to ship).

    Returns:
        dict with "depth_recipe" ("frozen_aug", "frozen" or "finetuned_features"), and
        "two_stream" (the best two-stream summary entry, or None).
    """
    own = [e for e in summary if e.get("clip", clip) == clip]
    best_by_recipe = {
        recipe: _best(own, recipe=recipe, stream="rgb")
        for recipe in ("frozen", "frozen_aug", "finetuned_features")
    }
    ranked = sorted(
        ((entry["mean"], recipe) for recipe, entry in best_by_recipe.items() if entry),
        reverse=True,
    )
    two_stream = [e for e in own if e["recipe"] in two_stream_recipes]
    return {
        "depth_recipe": ranked[0][1],
        "two_stream": max(two_stream, key=lambda e: (e["mean"], -e["std"], e["runs"]))
        if two_stream
        else None,
    }


def _copy_backbone(source_upper, classifier, encoder_name):
    """Copies the fine-tuned upper I3D blocks of an upper model into a classifier's backbone."""
    target = classifier.get_layer(encoder_name).backbone
    source = source_upper.get_layer("segment_encoder").backbone
    copied = 0
    for layer in source.layers:
        if layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())
            copied += 1
    return copied


def _copy_head(source_head, target_head, prefix=""):
    """Copies a one-stream head's layers into a head (`prefix` for a late two-stream head)."""
    for layer in source_head.layers:
        if layer.weights:
            target_head.get_layer(prefix + layer.name).set_weights(layer.get_weights())


def assemble_classifier(config, num_classes, arch, depth, uppers, head, modality="rgb",
                        fusion="product", level="late", clip=None):  # fmt: skip
    """One `build_video_classifier` model from fine-tuned upper models and a trained head.

    Args:
        config: the `StudyConfig`.
        num_classes: C.
        arch, depth: the head ("lstm" or "res", 2-4).
        uppers: {stream: fine-tuned upper model} ("rgb", and "flow" for two streams), or
            {} for the pretrained backbone (a frozen recipe).
        head: the trained head `keras.Model` (features in), or for a late two-stream model a
            dict {"rgb": head, "flow": head} of one-stream heads.
        modality, fusion, level: as `build_video_classifier`.
        clip: the `ClipSpec` of the clips (default the study's own).
    """
    import keras

    from reslstm_tf.video_classifier import build_video_classifier

    clip = clip or config.clip
    keras.utils.set_random_seed(0)
    classifier = build_video_classifier(
        num_classes, modality, clip.backbone, f"{arch}{depth}",
        num_segments=clip.num_segments, segment_len=clip.segment_len,
        frame_size=clip.frame_size, trainable_from=config.trainable_from,
        fusion=fusion, level=level, units=config.units, dropout=config.dropout,
        num_layers=depth, residual=arch == "res",
    )  # fmt: skip
    for stream, upper in uppers.items():
        encoder = "segment_encoder" if modality != "two_stream" else f"{stream}_encoder"
        _copy_backbone(upper, classifier, encoder)
    target = classifier.get_layer("head")
    if isinstance(head, dict):
        for stream, stream_head in head.items():
            _copy_head(stream_head, target, prefix=f"{stream}_")
    else:
        target.set_weights(head.get_weights())
    return classifier


@dataclasses.dataclass
class FinalModels:
    """What `train_final_models` returns: classifiers by entry name and their settings."""

    classifiers: dict
    settings: dict


def _upper_head(upper):
    return upper.get_layer("head")


def train_final_models(config, selection, videos, flow_method=None, depths=True):
    """Trains the selected recipes on every clip; returns `FinalModels`.

    Args:
        config: the study's `StudyConfig`.
        selection: `select_recipes`' dict.
        videos: the study's `VideoList`.
        flow_method: the flow stream of the two-stream entry (default: the selected one).
        depths: train the heads of every depth (False: the two-stream model only).
    """
    num_classes = len(videos.classes)
    depth_recipe = selection["depth_recipe"]
    two_stream = selection["two_stream"]
    if two_stream is not None:
        flow_method = flow_method or two_stream["stream"].split("+")[1]
    needed = ["rgb"] + ([flow_method] if two_stream is not None else [])
    streams = {name: Stream(config, name, videos, num_classes) for name in needed}
    labels = np.asarray(streams["rgb"].clips.labels)
    every = np.arange(len(labels))
    fine_tuned = [name for name in needed if name != "rgb" or two_stream is not None
                  or (depths and depth_recipe == "finetuned_features")]  # fmt: skip
    uppers, features = {}, {}
    for name in fine_tuned:
        uppers[name] = FinetuneRunner(streams[name], num_classes).train(every, seed=0)
        features[name] = view_features(uppers[name], streams[name].views)
    heads = study_heads(config, num_classes)
    classifiers, settings = {}, {}
    if not depths:
        rgb_features, rgb_uppers = None, {}
    elif depth_recipe == "finetuned_features":
        rgb_features, rgb_uppers = features["rgb"], {"rgb": uppers["rgb"]}
    else:
        rgb_features, rgb_uppers = streams["rgb"].frozen, {}
    augmented = depth_recipe != "frozen"
    for arch in RNN_ARCHS if depths else ():
        for depth in config.depths:
            run_head(heads, config, arch, depth, rgb_features, labels, every, every[:1], 0,
                     augmented)  # fmt: skip
            head = heads.model
            classifiers[f"{arch}{depth}"] = assemble_classifier(
                config, num_classes, arch, depth, rgb_uppers, head
            )
            settings[f"{arch}{depth}"] = {"recipe": depth_recipe}
    if two_stream is not None:
        arch, depth = two_stream["arch"], two_stream["depth"]
        recipe = two_stream["recipe"]
        pair = {"rgb": uppers["rgb"], "flow": uppers[flow_method]}
        if recipe == "mid_product":
            both = {"rgb": features["rgb"], "flow": features[flow_method]}
            run_head(heads, config, arch, depth, both, labels, every, every[:1], 0, True,
                     "product")  # fmt: skip
            head, fusion, level = heads.model, "product", "mid"
        else:
            head = {"rgb": _upper_head(pair["rgb"]), "flow": _upper_head(pair["flow"])}
            fusion, level = recipe.split("_")[1], "late"
        classifiers["two_stream"] = assemble_classifier(
            config, num_classes, arch, depth, pair, head, "two_stream", fusion, level
        )
        settings["two_stream"] = {"recipe": recipe, "flow_method": flow_method}
    return FinalModels(classifiers, settings)


LICENSE = (
    "Apache-2.0 weights (deltas over the Kinetics-400 I3D of DeepMind, Apache-2.0); trained "
    "on SkateboardML clips, CC, academic use with citation zenodo 10.5281/zenodo.3986905"
)


def _metric(entry, config, command):
    """The manifest metric of a summary entry: CV mean/std and how it was measured."""
    return {
        "name": "val_accuracy",
        "protocol": (
            f"stratified {config.folds}-fold cross-validation on the {entry['num_clips']} clips "
            f"x {entry['seeds']} seed(s) (split seed {config.split_seed}); the same folds "
            "selected the recipe, so the estimate is optimistic"
        ),
        "mean": round(entry["mean"], 4),
        "std": round(entry["std"], 4),
        "folds": entry["folds"],
        "seeds": entry["seeds"],
        "runs": entry["runs"],
        "num_clips": entry["num_clips"],
        "command": command,
    }


def _architecture(config, modality, arch, depth, fusion=None, level=None, clip=None):
    clip = clip or config.clip
    spec = {
        "kind": "video_classifier", "modality": modality, "backbone": clip.backbone,
        "preset": f"{arch}{depth}", "num_segments": clip.num_segments,
        "segment_len": clip.segment_len, "frame_size": clip.frame_size,
        "trainable_from": config.trainable_from, "units": config.units,
        "num_layers": depth, "residual": arch == "res", "dropout": config.dropout,
    }  # fmt: skip
    if fusion:
        spec.update(fusion=fusion, level=level)
    return spec


def _features(config, streams, clip=None):
    clip = clip or config.clip
    out = {}
    for key, method in streams.items():
        out[key] = {"modality": key, "resize_short_side": clip.short_side, "short": clip.short}
        if key == "flow":
            out[key]["flow_method"] = method
    return out


def final_entries(
    config, dataset, command=None, parts=("depth", "two_stream"),
    two_stream_recipes=TWO_STREAM_RECIPES,
):  # fmt: skip
    """Selects by CV and trains on every clip: {tagged name: (model, entry)}.

    Names: `<dataset name>_<head>.<clip tag>_<recipe tag>` (`recipe_tag`); publish each with
    `reslstm_tf.zoo.publish_video_classifier(model, name, entry, ...)`.

    Args:
        config: the finished study's `StudyConfig`.
        dataset: the entries' `dataset` dict ("name", "title", "classes", "num_classes").
        command: the command recorded with the metrics.
        parts: what to train: "depth" (the heads of every depth) and/or "two_stream".
        two_stream_recipes: the two-stream recipes the selection may pick.

    Returns:
        {entry name: (the `build_video_classifier` model, its manifest entry)}.
    """
    import json
    import pathlib

    from reslstm_tf.data import datasets

    out = pathlib.Path(config.out_dir)
    summary = json.loads((out / "results.json").read_text(encoding="utf-8"))["summary"]
    selection = select_recipes(summary, two_stream_recipes, config.clip_tag)
    if "two_stream" not in parts:
        selection["two_stream"] = None
    videos = datasets.load_dataset("folder", data_dir=config.data_dir,
                                   split_file=config.split_file)  # fmt: skip
    for entry in summary:
        entry["num_clips"] = len(videos)
    final = train_final_models(config, selection, videos, depths="depth" in parts)
    published = {}
    for key, classifier in final.classifiers.items():
        setting = final.settings[key]
        if key == "two_stream":
            chosen = selection["two_stream"]
            arch, depth, modality = chosen["arch"], chosen["depth"], "two_stream"
            fusion, level = ("product", "mid") if chosen["recipe"] == "mid_product" else (
                chosen["recipe"].split("_")[1], "late")  # fmt: skip
            streams = {"rgb": None, "flow": setting["flow_method"]}
            name = (
                f"{dataset['name']}_twostream_{arch}{depth}.{config.clip_tag}_{recipe_tag(chosen)}"
            )
            description = (
                f"Two-stream ({fusion} fusion, {level} level) of fine-tuned RGB and "
                f"{setting['flow_method']} flow I3D with a {arch}{depth} head"
            )
        else:
            arch, depth = key[:-1], int(key[-1])
            chosen = _find_entry(summary, setting["recipe"], arch, depth, config.clip_tag)
            modality, fusion, level, streams = "rgb", None, None, {"rgb": None}
            name = f"{dataset['name']}_{key}.{config.clip_tag}_{recipe_tag(chosen)}"
            kind = "Res-LSTM" if arch == "res" else "Plain stacked LSTM"
            description = f"{kind}, {depth} layers of {config.units} units, on I3D RGB clips"
        entry = {
            "description": f"{description}, {dataset['title']} ({setting['recipe']})",
            "dataset": dataset,
            "architecture": _architecture(config, modality, arch, depth, fusion, level),
            "base": "kinetics400_i3d",
            "features": _features(config, streams),
            "metrics": [_metric(chosen, config, command or "reslstm-study")],
            "training": {
                "recipe": setting["recipe"],
                "clips": f"all {len(videos)} clips",
                "seed": 0,
                "study": config.to_record(),
            },  # fmt: skip
            "license": LICENSE,
        }
        entry["training"]["study"] = {
            k: v for k, v in entry["training"]["study"].items()
            if k not in ("data_dir", "split_file", "out_dir", "flow_cache_dir")
        }  # fmt: skip
        published[name] = (classifier, entry)
    return published


def _find_entry(summary, recipe, arch, depth, clip=None):
    return next(
        e for e in summary
        if (e["recipe"], e["stream"], e["arch"], e["depth"]) == (recipe, "rgb", arch, depth)
        and e.get("clip", clip) == clip
    )  # fmt: skip


# ----------------------------------------------------- the CV-best recipe, tagged

RECIPE_TAGS = {
    "frozen": "frozen", "frozen_aug": "frozenaug", "finetuned_features": "ft",
    "mid_product": "ft_mid", "late_product": "ft_lateproduct", "late_sum": "ft_latesum",
}  # fmt: skip


def recipe_tag(entry):
    """The tag part of a study recipe: "frozen", "frozenaug", "ft", ... with "_cv" (selected
    by cross-validation)."""
    return f"{RECIPE_TAGS[entry['recipe']]}_cv"


def cv_name(dataset_name, entry):
    """The tagged name of a study entry, e.g. "skateboard_lstm3.i3d224_t16_frozen_cv"."""
    from reslstm_tf.experiments.study_report import head_name

    return f"{dataset_name}_{head_name(entry)}.{entry['clip']}_{recipe_tag(entry)}"


def _selected_features(config, chosen, videos, num_classes):
    """(features (V + 1, N, T, D), fine-tuned uppers, labels) of a selected recipe, all clips."""
    from reslstm_tf.data.clips import video_items
    from reslstm_tf.experiments.study_clips import spec_features

    if chosen["clip"] != config.clip_tag:
        tag = chosen["clip"]
        path = f"{config.out_dir}/features/rgb_frozen_{tag}.npy"
        seed = config.finetune_train.seed
        features = spec_features(config.clips[tag], videos, config.data_dir, path,
                                 views=config.frozen_clip_views, seed=seed,
                                 progress=config.progress)  # fmt: skip
        return features, {}, video_items(videos)[1]
    stream = Stream(config, "rgb", videos, num_classes)
    labels = np.asarray(stream.clips.labels)
    if chosen["recipe"] != "finetuned_features":
        return stream.frozen, {}, labels
    upper = FinetuneRunner(stream, num_classes).train(np.arange(len(labels)), seed=0)
    return view_features(upper, stream.views), {"rgb": upper}, labels


def train_selected(config, chosen, videos):
    """Trains a selected recipe's head (a summary entry) on every clip with seed 0; returns
    the `build_video_classifier` model (clips of the entry's spec in, classes out)."""
    num_classes = len(videos.classes)
    features, uppers, labels = _selected_features(config, chosen, videos, num_classes)
    every = np.arange(len(labels))
    heads = study_heads(config, num_classes)
    arch, depth = chosen["arch"], chosen["depth"]
    run_head(heads, config, arch, depth, features, labels, every, every[:1], 0,
             augmented=chosen["recipe"] != "frozen")  # fmt: skip
    return assemble_classifier(config, num_classes, arch, depth, uppers, heads.model,
                               clip=config.clips[chosen["clip"]])  # fmt: skip


def _interval(entry):
    return [round(entry["ci_low"], 4), round(entry["ci_high"], 4)]


def _versus_logreg(comparison):
    """The entry's paired difference with the reference logistic regression."""
    if comparison is None:
        return None
    d, test = comparison["difference"], comparison["mcnemar"]
    return {"against": comparison["b"], "mean": round(d["mean"], 4),
            "ci95": [round(d["low"], 4), round(d["high"], 4)], "pairs": d["pairs"],
            "mcnemar_p": round(test["p_value"], 4) if test else None,
            "significant": comparison["significant"]}  # fmt: skip


def _named(entry):
    """e.g. "logreg i3d224_t16 logreg, 86.0 % (95% CI 79.9-92.1)"."""
    from reslstm_tf.experiments.study_results import group_name
    from reslstm_tf.experiments.study_variants import SPEC_FIELDS

    low, high = 100 * entry["ci_low"], 100 * entry["ci_high"]
    name = group_name(tuple(entry[k] for k in SPEC_FIELDS))
    return f"{name}, {100 * entry['mean']:.1f} % (95% CI {low:.1f}-{high:.1f})"


def best_logreg(report):
    """The summary entry of the best logistic regression (of any clip spec)."""
    from reslstm_tf.experiments.study_results import _best

    return _best([e for e in report["summary"] if e["recipe"] == "logreg"])


def selection_note(report, chosen):
    """In words: what the CV selected overall, and what the entry is against it."""
    selection = report["selection"]
    best = selection["best"]
    if selection["best_is_logreg"]:
        return (f"The CV-best recipe overall is the mean-pooled logistic regression "
                f"({_named(best)}); it ships no video model, so this entry is the best "
                "recurrent head, compared with the logistic regressions in its metric's "
                "`vs_logreg` and `vs_best_logreg`.")  # fmt: skip
    if all(best[k] == chosen[k] for k in ("recipe", "clip", "stream", "arch", "depth")):
        return f"This entry is the CV-best recipe overall ({_named(best)})."
    note = f"The CV-best recipe overall is {_named(best)}"
    if "+" in best["recipe"]:
        note += ", scored with several views or models per clip"
    if selection.get("logreg_ties_best"):
        note += (f"; the mean-pooled logistic regression ({_named(best_logreg(report))}) "
                 "has the same mean")  # fmt: skip
    return note + ("; this entry is the best recurrent head read as one model on one view "
                   "(what loading it gives).")  # fmt: skip


def cv_entry(config, report, chosen, dataset, command, num_clips):
    """The manifest entry of the CV-selected head: its clip spec, CV accuracy with its 95%
    interval, the paired difference with the logistic regression, the selection in words."""
    from reslstm_tf.experiments.study_results import difference_to_reference

    spec = config.clips[chosen["clip"]]
    arch, depth = chosen["arch"], chosen["depth"]
    metric = _metric(dict(chosen, num_clips=num_clips), config, command)
    metric.update(ci95=_interval(chosen), clip=chosen["clip"],
                  vs_logreg=_versus_logreg(difference_to_reference(report, chosen)))  # fmt: skip
    variants = {}
    for suffix in ("+tta", "+ens", "+tta+ens"):  # the same head read on more views or seeds
        same = dict(chosen, recipe=chosen["recipe"] + suffix)
        fields = ("recipe", "clip", "stream", "arch", "depth")
        found = [e for e in report["summary"] if all(e[k] == same[k] for k in fields)]
        if found:
            variants[suffix] = {"mean": round(found[0]["mean"], 4), "ci95": _interval(found[0]),
                                "runs": found[0]["runs"]}  # fmt: skip
    if variants:
        metric["not_shipped"] = variants
    logreg = best_logreg(report)
    if logreg is not None and logreg["clip"] != report["config_clip_tag"]:
        found = difference_to_reference(report, chosen, logreg)
        metric["vs_best_logreg"] = _versus_logreg(found)
    kind = "Res-LSTM" if arch == "res" else "Plain stacked LSTM"
    trained = "fine-tuned" if chosen["recipe"] == "finetuned_features" else "frozen"
    description = (f"{kind}, {depth} layers of {config.units} units, on {trained} I3D RGB "
                   f"features of {spec.num_segments} x {spec.segment_len} frames at "
                   f"{spec.frame_size} px, {dataset['title']} ({chosen['recipe']}, selected "
                   "by cross-validation)")  # fmt: skip
    study = {k: v for k, v in config.to_record().items()
             if k not in ("data_dir", "split_file", "out_dir", "flow_cache_dir")}  # fmt: skip
    return {
        "description": description, "dataset": dataset,
        "architecture": _architecture(config, "rgb", arch, depth, clip=spec),
        "base": "kinetics400_i3d", "features": _features(config, {"rgb": None}, clip=spec),
        "clip": {"tag": chosen["clip"], "spec": spec.to_dict()},
        "metrics": [metric], "selection": selection_note(report, chosen),
        "training": {"recipe": chosen["recipe"], "clips": f"all {num_clips} clips", "seed": 0,
                     "study": study},
        "license": LICENSE,
    }  # fmt: skip


def cv_publication(config, dataset, command, rename=None):
    """The study's CV-best recurrent head, trained on every clip, ready to publish.

    Reads the finished study's `results.json` (`study_results`), trains the selected head on
    every clip (`train_selected`) and names it `cv_name(...)`, a new tag, or `rename` of it
    (chosen before training; `reslstm-study` passes `zoo.publishing.free_name`, which
    numbers a tag its manifest already publishes, `..._cv2`): the caller
    publishes it (`reslstm_tf.zoo.publish_video_classifier`, which refuses an existing tag)
    and points the bare name (`<dataset>_<head>`) at it through the aliases table
    (`reslstm_tf.zoo.publishing.move_alias`, with `why` in its history), as
    `reslstm-study --publish_manifest` does.

    Returns:
        (the tagged name, the `build_video_classifier` model, its manifest entry, why).
    """
    import json
    import pathlib

    from reslstm_tf.data import datasets

    report = json.loads((pathlib.Path(config.out_dir) / "results.json").read_text("utf-8"))
    chosen = report["selection"]["best_recurrent"]
    videos = datasets.load_dataset("folder", data_dir=config.data_dir,
                                   split_file=config.split_file)  # fmt: skip
    name = cv_name(dataset["name"], chosen)
    if rename is not None:
        name = rename(name)
    entry = cv_entry(config, report, chosen, dataset, command, len(videos))
    classifier = train_selected(config, chosen, videos)
    why = (f"reslstm-study's CV-best recurrent head across clip specs "
           f"({100 * chosen['mean']:.1f} % CV)")  # fmt: skip
    return name, classifier, entry, why
