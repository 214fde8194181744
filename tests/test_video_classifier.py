"""End-to-end models: backbone per segment + Res-LSTM head, freezing, recompute, round trip."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from reslstm_tf.backbones.i3d import VALID_ENDPOINTS
from reslstm_tf.testing import run_model_saving_test
from reslstm_tf.video_classifier import build_video_classifier, freeze_below

SMALL = dict(num_segments=3, segment_len=8, frame_size=32, backbone_weights=None, units=16)


def _clips(batch=2, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = (batch, SMALL["num_segments"], SMALL["segment_len"], 32, 32, channels)
    return rng.uniform(-1, 1, shape).astype("float32")


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_video_classifier(4, preset="res2", trainable_from="Mixed_4f", **SMALL)


def test_equals_the_backbone_on_each_segment_then_the_head(model):
    clips = _clips()
    backbone = model.get_layer("segment_encoder").backbone
    head = model.get_layer("head")
    # Reference: every segment of every video through the backbone on its own.
    features = np.stack(
        [
            np.stack([keras.ops.convert_to_numpy(backbone(clip[t : t + 1]))[0] for t in range(3)])
            for clip in clips
        ]
    )
    expected = keras.ops.convert_to_numpy(head(features))
    actual = keras.ops.convert_to_numpy(model(clips))
    assert actual.shape == (2, 4) and actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_layers_before_the_endpoint_and_batchnorm_stay_fixed_in_training(model):
    backbone = model.get_layer("segment_encoder").backbone
    before = {v.path: v.numpy().copy() for v in model.variables}
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(_clips(4), np.array([0, 1, 2, 3]), epochs=1, batch_size=4, verbose=0)
    after = {v.path: v.numpy() for v in model.variables}
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    first = VALID_ENDPOINTS.index("Mixed_4f")
    for layer in backbone.layers:
        scope = layer.name.split(".")[0]
        early = scope in VALID_ENDPOINTS and VALID_ENDPOINTS.index(scope) < first
        for variable in layer.weights:
            if early or isinstance(layer, keras.layers.BatchNormalization):
                assert variable.path not in changed, f"{variable.path} changed"
    conv = backbone.get_layer("Mixed_5c.Branch_0.Conv3d_0a_1x1.conv").kernel.path
    assert conv in changed, "a layer after the endpoint was not trained"
    head = {v.path for v in model.get_layer("head").trainable_weights}
    assert head <= changed, f"head weights not trained: {sorted(head - changed)}"


def test_freeze_below_refuses_an_unknown_endpoint(model):
    with pytest.raises(ValueError, match="trainable_from must be one of"):
        freeze_below(model.get_layer("segment_encoder").backbone, "Mixed_9z")


def test_recompute_gives_the_same_gradients():
    grads = []
    for recompute in (False, True):
        keras.utils.set_random_seed(1)
        model = build_video_classifier(
            3, preset="res2", trainable_from=None, recompute=recompute, **SMALL
        )
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(_clips(seed=2), training=True) ** 2)
        grads.append([g.numpy() for g in tape.gradient(loss, model.trainable_variables)])
    assert len(grads[0]) == len(grads[1]) > 10
    for plain, recomputed in zip(*grads):
        np.testing.assert_allclose(recomputed, plain, rtol=1e-4, atol=1e-5)


def test_saves_and_loads(model):
    run_model_saving_test(model, _clips(), atol=1e-5)


def test_two_stream_equals_its_parts():
    keras.utils.set_random_seed(3)
    model = build_video_classifier(4, "two_stream", preset="res2", **SMALL)
    rgb, flow = _clips(channels=3, seed=4), _clips(channels=2, seed=5)
    logits = keras.ops.convert_to_numpy(model({"rgb": rgb, "flow": flow}))
    features = {
        name: keras.ops.convert_to_numpy(model.get_layer(f"{name}_encoder")(clips))
        for name, clips in (("rgb", rgb), ("flow", flow))
    }
    expected = keras.ops.convert_to_numpy(model.get_layer("head")(features))
    assert logits.shape == (2, 4)
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_segment_encoder_keeps_a_cut_backbone_s_per_segment_shape(model):
    from reslstm_tf.video_classifier import SegmentEncoder

    backbone = model.get_layer("segment_encoder").backbone
    cut = keras.Model(backbone.input, backbone.get_layer("Mixed_4f").output)
    clips = _clips()
    encoded = keras.ops.convert_to_numpy(SegmentEncoder(cut)(clips))
    expected = keras.ops.convert_to_numpy(cut(clips[1, 2:3]))[0]
    assert encoded.shape == (2, 3, *expected.shape) and expected.ndim == 4
    np.testing.assert_allclose(encoded[1, 2], expected, atol=1e-5)
    assert SegmentEncoder(cut).compute_output_shape(clips.shape) == (2, 3, *expected.shape)
