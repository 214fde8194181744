"""Publishing the selected head (`reslstm_tf.experiments.publish`) and the skateboard entry."""

import pytest

SKATEBOARD_ENTRY = "skateboard_lstm3"


@pytest.mark.slow
def test_skateboard_entry_predicts_real_clips(shared_data):
    """Sanity check only: these clips were in the head's training set (not a held-out score)."""
    from reslstm_tf import zoo

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
        ranked = zoo.predict(model, path, top_k=2)
        assert abs(sum(p for _, p in ranked) - 1.0) < 1e-4
        correct += ranked[0][0] == name
    assert correct >= 5, f"{correct}/6 clips right"
