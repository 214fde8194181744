"""Weight deltas: what fine-tuning changed in a backbone, relative to its base, stored compactly.

A video classifier fine-tuned from the Kinetics-400 I3D changes only the blocks from its
`trainable_from` endpoint on (Mixed_5b and Mixed_5c hold ~4.8 M of the I3D's 12.3 M
parameters); every other variable stays bit-equal to the base. A delta keeps only the
variables that differ, each as its difference to the base, so a published classifier is
the base (fetched and verified once, shared by every entry) plus a small file per stream:

- `compute_delta(trained, base)`: {variable path: float32 difference} of the variables
  that differ (exactly equal ones, the frozen layers, are left out);
- `save_delta(path, delta)` / `load_delta(path)`: an `.npz` file (no pickles), written
  atomically with fixed zip timestamps, so equal deltas give equal bytes (and one
  content-addressed file);
- `apply_delta(model, delta)`: adds the differences to a freshly built base.

Why int8 differences: a difference is stored as int8 `q` with one float32 `scale` per output
channel (the last axis), `scale = max|d| / 127` over the channel and `q = round(d / scale)`,
read back as `q * scale`. A 4.8 M-parameter delta takes ~4.8 MB instead of 19 MB as float32
(9.6 MB as float16), and each weight is off by at most `scale / 2` (plus the float32 rounding
of `q * scale`, under 1e-5 * scale): 1/254 of the largest change fine-tuning made in its
channel, a small fraction of the change itself, and far below the spread of the weights. A
channel fine-tuning left unchanged has scale 0 and is restored exactly. Quantising the
difference rather than the weights is what makes int8 safe: the base carries the weights'
full float32 range, the delta only the (small) fine-tuning step.

Variables are matched by `variable.path` (Keras 3), which names the layer and the variable
(`Mixed_5b.Branch_0.Conv3d_0a_1x1.conv/kernel`) and does not depend on the enclosing model,
so a delta taken from a trained classifier's backbone applies to a fresh backbone.
"""

import io
import os
import pathlib
import zipfile

import keras
import numpy as np

from reslstm_tf.files import atomic_write, verify_sha256

FORMAT = "reslstm_tf.weight_delta/1"
# The zip timestamp of every member (the earliest a zip can hold): equal deltas, equal bytes.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_LEVELS = 127


class DeltaFileError(ValueError):
    """A delta file that cannot be read: not an archive, truncated, altered or malformed."""


def _variables_by_path(model, what):
    """{variable.path: variable} of `model`; refuses two variables with one path."""
    by_path = {}
    for variable in model.variables:
        if variable.path in by_path:
            raise ValueError(
                f"{what} {model.name!r} has two variables with path {variable.path!r}; a "
                "delta needs unique paths: take it per backbone, not over a two-stream model"
            )
        by_path[variable.path] = variable
    return by_path


def compute_delta(trained, base):
    """Returns {variable path: float32 trained - base} for the variables that differ.

    Args:
        trained: the fine-tuned `keras.Model` (e.g. a classifier's I3D backbone).
        base: the same architecture with the weights fine-tuning started from.

    Returns:
        A dict from `variable.path` to a float32 numpy difference, in the order of
        `trained.variables`; variables equal bit for bit (frozen layers) are left out.

    Raises:
        ValueError: naming the first variable the two models do not share (or whose shapes
            differ), or a changed variable that is not floating point or not finite.
    """
    ours = _variables_by_path(trained, "trained model")
    theirs = _variables_by_path(base, "base model")
    for path, variable in ours.items():
        if path not in theirs:
            raise ValueError(
                f"trained model {trained.name!r} has variable {path!r}, base model "
                f"{base.name!r} has not: the two architectures differ"
            )
        if tuple(variable.shape) != tuple(theirs[path].shape):
            raise ValueError(
                f"variable {path!r} has shape {tuple(variable.shape)} in trained model "
                f"{trained.name!r} but {tuple(theirs[path].shape)} in base model {base.name!r}"
            )
    missing = [path for path in theirs if path not in ours]
    if missing:
        raise ValueError(
            f"base model {base.name!r} has variable {missing[0]!r}, trained model "
            f"{trained.name!r} has not: the two architectures differ"
        )
    delta = {}
    for path, variable in ours.items():
        after = keras.ops.convert_to_numpy(variable)
        before = keras.ops.convert_to_numpy(theirs[path])
        if np.array_equal(after, before):
            continue
        if not np.issubdtype(after.dtype, np.floating):
            raise ValueError(
                f"variable {path!r} ({after.dtype}) differs from the base; a delta holds "
                "floating-point differences only"
            )
        difference = (after.astype(np.float64) - before.astype(np.float64)).astype(np.float32)
        if not np.isfinite(difference).all():
            raise ValueError(f"variable {path!r} differs from the base by non-finite values")
        delta[path] = difference
    return delta


def quantize(difference):
    """Returns (int8 q, float32 scale per last-axis channel) with `q * scale ~ difference`.

    `scale = max|d| / 127` over each channel (0 for an all-zero channel, whose q is 0) and
    `q = round(d / scale)`, so `|q * scale - d| <= scale / 2`.
    """
    d = np.asarray(difference, dtype=np.float64)
    channels = d.reshape(-1, d.shape[-1]) if d.ndim else d.reshape(1, 1)
    scale = (np.abs(channels).max(axis=0, initial=0.0) / _LEVELS).astype(np.float32)
    divisor = np.where(scale > 0, scale, 1.0).astype(np.float64)
    q = np.clip(np.rint(d / (divisor if d.ndim else divisor[0])), -_LEVELS, _LEVELS)
    return q.astype(np.int8), scale


def dequantize(q, scale):
    """Returns the float32 differences `q * scale` (scale per last-axis channel)."""
    values = q.astype(np.float32) * np.asarray(scale, np.float32)
    return values.reshape(q.shape).astype(np.float32, copy=False)


def _write_member(archive, key, array):
    info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME)
    with archive.open(info, "w", force_zip64=True) as handle:
        np.lib.format.write_array(handle, np.asarray(array), allow_pickle=False)


def encode_delta(delta):
    """Returns the bytes of a delta's `.npz` file (see `save_delta`); equal deltas, equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        _write_member(archive, "format", np.array(FORMAT))
        _write_member(archive, "paths", np.array(list(delta), dtype=np.str_).reshape(-1))
        for index, difference in enumerate(delta.values()):
            q, scale = quantize(difference)
            _write_member(archive, f"q{index}", q)
            _write_member(archive, f"scale{index}", scale)
    return buffer.getvalue()


def save_delta(path, delta):
    """Writes `delta` as an int8 `.npz` file atomically; returns the bytes written.

    The file holds `format`, `paths` (the variable paths) and, per variable i, `q{i}` (int8,
    the variable's shape) and `scale{i}` (float32, one per last-axis channel); it is written
    under a temporary name and renamed, so `path` only ever holds a complete delta.

    Args:
        path: the file to write (conventionally `.npz`).
        delta: {variable path: float difference}, as `compute_delta` returns.

    Returns:
        int, the size of the file.
    """
    data = encode_delta(delta)
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return len(data)


def _read_arrays(path):
    """{key: array} of an `.npz` file, every member read (so every CRC is checked)."""
    if not zipfile.is_zipfile(path):
        raise DeltaFileError(f"delta file {path} is not an .npz archive (truncated or corrupt)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as error:
        raise DeltaFileError(f"delta file {path} is corrupt or altered: {error}") from None


def _check_member(path, index, q, scale):
    """Raises `DeltaFileError` unless q is int8 and scale has one finite scale per channel."""
    channels = q.shape[-1] if q.ndim else 1
    if q.dtype != np.int8 or scale.dtype != np.float32 or scale.shape != (channels,):
        raise DeltaFileError(
            f"delta file {path}: variable {index} has q {q.dtype} {q.shape} and scale "
            f"{scale.dtype} {scale.shape}; expected int8 q and float32 scale of shape "
            f"({channels},)"
        )
    if not (np.isfinite(scale).all() and (scale >= 0).all()):
        raise DeltaFileError(
            f"delta file {path}: variable {index} has negative or non-finite scales"
        )


def load_delta(path, sha256=None):
    """Reads a delta written by `save_delta`: {variable path: float32 difference}.

    Args:
        path: the `.npz` file.
        sha256: optional expected hex sha256 of the file, checked before it is read.

    Raises:
        FileNotFoundError: the file does not exist.
        reslstm_tf.files.ChecksumError: the file's sha256 differs from `sha256`.
        DeltaFileError: naming the file and the problem: not an archive, truncated, a member
            altered (zip CRC), pickled or missing members, or arrays of the wrong kind.
    """
    path = pathlib.Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"delta file {path} does not exist")
    if sha256 is not None:
        verify_sha256(path, sha256)
    arrays = _read_arrays(path)
    if "format" not in arrays or str(arrays["format"]) != FORMAT:
        found = str(arrays["format"]) if "format" in arrays else "none"
        raise DeltaFileError(f"delta file {path} has format {found!r}; expected {FORMAT!r}")
    paths = arrays.get("paths")
    if paths is None or paths.ndim != 1 or paths.dtype.kind != "U":
        raise DeltaFileError(f"delta file {path} has no 'paths' list of variable paths")
    expected = {"format", "paths"} | {f"{k}{i}" for i in range(len(paths)) for k in ("q", "scale")}
    if set(arrays) != expected or len(set(paths.tolist())) != len(paths):
        problem = sorted(set(arrays) ^ expected) or "repeated variable paths"
        raise DeltaFileError(f"delta file {path} has missing, extra or repeated members: {problem}")
    delta = {}
    for index, name in enumerate(paths.tolist()):
        q, scale = arrays[f"q{index}"], arrays[f"scale{index}"]
        _check_member(path, index, q, scale)
        delta[name] = dequantize(q, scale)
    return delta


def apply_delta(model, delta):
    """Adds a delta's differences to the matching variables of `model` (matched by path).

    Every path and shape is checked before any variable changes: on an error the model is
    left as it was.

    Args:
        model: the base `keras.Model` (e.g. a backbone built with its base weights).
        delta: {variable path: difference}, from `compute_delta` or `load_delta`.

    Raises:
        ValueError: naming the delta's variable paths the model does not have, or the first
            variable whose shape differs from its difference's.
    """
    variables = _variables_by_path(model, "model")
    unknown = [path for path in delta if path not in variables]
    if unknown:
        raise ValueError(
            f"the delta has {len(unknown)} variable(s) model {model.name!r} does not have: "
            f"{', '.join(map(repr, unknown[:5]))}{' ...' if len(unknown) > 5 else ''}"
        )
    for path, difference in delta.items():
        if tuple(variables[path].shape) != tuple(np.shape(difference)):
            raise ValueError(
                f"variable {path!r} of model {model.name!r} has shape "
                f"{tuple(variables[path].shape)}; the delta's difference has "
                f"{tuple(np.shape(difference))}"
            )
    for path, difference in delta.items():
        variable = variables[path]
        value = keras.ops.convert_to_numpy(variable) + np.asarray(difference, np.float32)
        variable.assign(value.astype(variable.dtype))
