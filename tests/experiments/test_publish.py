"""Publishing the selected head (`reslstm_tf.experiments.publish`) and the skateboard entry."""

import pytest

from reslstm_tf.experiments.config import AblationError
from reslstm_tf.experiments.publish import train_selected_head
from tests.experiments.helpers import write_cache

SKATEBOARD_ENTRY = "skateboard_frozen_lstm3"


def _results(**best):
    head = dict(arch="lstm", depth=2, hidden=8, T=4, **best)
    # A record of an earlier release: its "train" held the dropout.
    train = {"epochs": 20, "batch_size": 8, "learning_rate": 1e-3, "dropout": 0.5}
    return {"best": head, "config": {"train": train}}


@pytest.mark.slow
def test_selected_head_is_trained_on_every_clip_and_stored_as_float16(tmp_path):
    rgb = write_cache(tmp_path / "rgb", num_clips=16)
    model, info = train_selected_head(rgb, _results(), dtype="float16", seeds=(0, 1))
    assert info["seed"] in (0, 1) and set(info["train_losses"]) == {0, 1}
    assert info["seed"] == min(info["train_losses"], key=info["train_losses"].get)
    assert info["train_accuracy_all_clips"] >= 0.9  # the tiny problem is separable
    assert info["float16_prediction_agreement"] == 1.0
    kernels = [w for w in model.weights if "kernel" in w.path and "logits" not in w.path]
    assert kernels and all(str(w.dtype) == "float16" for w in kernels)
    assert model.input_shape == (None, 4, 8)


def test_selected_head_needs_a_head_and_a_known_dtype(tmp_path):
    rgb = write_cache(tmp_path / "rgb", num_clips=6)
    with pytest.raises(AblationError, match="dtype must be one of"):
        train_selected_head(rgb, _results(), dtype="int8")
    with pytest.raises(AblationError, match="no cross-validated recurrent head"):
        train_selected_head(rgb, {"best": None, "config": {"train": {}}})


@pytest.mark.slow
def test_skateboard_entry_predicts_real_clips(shared_data):
    """Sanity check only: these clips were in the head's training set (not a held-out score)."""
    from reslstm_tf import zoo
    from reslstm_tf.predict import predict_video

    folder = shared_data / "skateboard"
    entry = zoo.info(SKATEBOARD_ENTRY)
    assert entry["dataset"]["num_classes"] == 2
    assert zoo.class_names(SKATEBOARD_ENTRY) == ["Kickflip", "Ollie"]
    model = zoo.load(SKATEBOARD_ENTRY)
    clips = [
        (name, path)
        for name in ("Kickflip", "Ollie")
        for path in sorted((folder / name).glob("*.mp4"))[:3]
    ]
    assert len(clips) == 6
    correct = 0
    for name, path in clips:
        ranked = predict_video(model, path, top_k=2).top_k
        assert abs(sum(p for _, p in ranked) - 1.0) < 1e-4
        correct += ranked[0][0] == name
    assert correct >= 5, f"{correct}/6 clips right"


def _study_entries():
    from reslstm_tf import zoo

    return [
        name for name in zoo.list()
        if name.startswith("skateboard_")
        and zoo.info(name)["architecture"]["kind"] == "video_classifier"
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", _study_entries())
def test_study_entries_are_small_carry_their_cv_and_predict_real_clips(name, shared_data):
    """Each entry ships <= 15 MB and reads real clips to the right class (training clips:
    a sanity check of the video-to-label path, not a held-out score)."""
    from reslstm_tf import zoo
    from reslstm_tf.predict import VideoPredictor

    entry = zoo.info(name)
    files = {entry["weights"]["file"]} | {d["file"] for d in entry["deltas"].values()}
    sizes = [(zoo.default_manifest_path().parent / f).stat().st_size for f in files]
    assert sum(sizes) <= 15.5e6, (name, sizes)
    metric = entry["metrics"][0]
    assert metric["folds"] == 5 and metric["runs"] >= 5 and 0.5 < metric["mean"] <= 1.0
    predictor = VideoPredictor(name, top_k=2)
    root = shared_data / "skateboard"
    clips = [root / "Kickflip" / f"Kickflip{i}.mp4" for i in (1, 2, 3)]
    clips += [root / "Ollie" / f"Ollie{i}.mp4" for i in (1, 2, 3)]
    predictions = [p for _, p, _ in predictor.predict(clips, progress=False)]
    right = sum(p.top_k[0][0] == clip.parent.name for p, clip in zip(predictions, clips))
    assert right >= 5, (name, right)
