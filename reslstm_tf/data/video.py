"""Reads video frames: metadata probing, sparse decoding and frame transforms.

Only OpenCV (its FFmpeg backend) is used, so any container and codec that FFmpeg decodes
works, with audio and data streams too (OpenCV only ever reads the first video stream).
PyAV was measured side by side and decodes no faster here (bench/RESULTS.md).

Decoding is sequential: ``read_frames`` calls ``VideoCapture.grab()`` for every frame and
``retrieve()`` (the colour conversion) only for the frames asked for. It seeks only when
the gap to the next wanted frame exceeds ``seek_threshold`` frames: a seek decodes from
the previous key frame anyway and is frame-accurate only for well-formed files.
``read_clip`` samples and decodes with one opening (an opening costs several frames).

The frame count a container announces is often wrong (variable frame rate, edit lists,
truncated files), so readers must cope with getting fewer frames than announced: see
``on_missing`` in ``read_frames`` and ``probe(path, count_frames=True)``.

Rotation: OpenCV >= 4.5 reads the display-matrix rotation (``CAP_PROP_ORIENTATION_META``)
and, when ``CAP_PROP_ORIENTATION_AUTO`` is on (the default for the FFmpeg backend), returns
frames already rotated to display orientation.
``VideoInfo.width``/``height`` are those of the frames as returned (display orientation),
measured on the first decoded frame.
"""

import dataclasses
import os
import pathlib

import cv2
import numpy as np

from reslstm_tf.checks import check_choice, check_positive_int

ON_MISSING = ("error", "last", "loop")
_OPEN_FAILED = "OpenCV/FFmpeg could not open it (not a video, or an unsupported/corrupt file)"
CROP_MODES = ("center", "random")


class VideoReadError(ValueError):
    """A video cannot be read: missing, empty, not a video, or no decodable frame.

    Attributes:
        path: the file that failed.
        problem: a short description of what went wrong.
    """

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"cannot read video {self.path}: {problem}")


class VideoTooShortError(VideoReadError):
    """Fewer frames could be decoded than the requested indices need.

    Attributes:
        decoded_frames: how many frames the file actually yielded.
        max_index: the largest frame index that was requested.
        frames: dict {index: uint8 RGB frame} of the requested frames that were decoded,
            so a caller that re-samples for the real count can reuse them.
    """

    def __init__(self, path, decoded_frames, max_index, frames=None):
        self.decoded_frames = int(decoded_frames)
        self.max_index = int(max_index)
        self.frames = dict(frames or {})
        super().__init__(
            path,
            f"frame {max_index} was requested but only {decoded_frames} frames could be "
            "decoded (the container's frame count may be wrong)",
        )


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """Metadata of one video as OpenCV sees it.

    Attributes:
        path: the file.
        frame_count: frames announced by the container, or the exact decoded count when
            probed with ``count_frames=True`` (then ``frame_count_exact`` is True).
        fps: average frame rate announced by the container (0.0 when unknown).
        width: width of the frames as returned by OpenCV (after auto-rotation).
        height: height of the frames as returned by OpenCV (after auto-rotation).
        rotation: display rotation in degrees from the container metadata (0, 90, 180, 270).
        auto_rotated: whether OpenCV rotates frames by ``rotation`` itself.
        duration: seconds: ``frame_count / fps`` from the container (0.0 when the fps is
            unknown), or with ``count_frames=True`` measured from the decoded timestamps.
        codec: the FourCC of the video stream as a 4-character string ('' if unknown).
        frame_count_exact: whether ``frame_count`` was obtained by decoding every frame.
    """

    path: str
    frame_count: int
    fps: float
    width: int
    height: int
    rotation: int
    auto_rotated: bool
    duration: float
    codec: str
    frame_count_exact: bool = False

    @property
    def is_portrait(self):
        """Whether the frames, as returned, are taller than wide."""
        return self.height > self.width


def _check_file(path):
    """Raises `VideoReadError` for a missing, non-regular or zero-byte file."""
    path = pathlib.Path(path)
    if not path.exists():
        raise VideoReadError(path, "file does not exist")
    if not path.is_file():
        raise VideoReadError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise VideoReadError(path, "file is empty (0 bytes)")
    return path


def _open(path, params=()):
    """Opens a capture with the FFmpeg backend, raising `VideoReadError` on failure."""
    path = _check_file(path)
    capture = cv2.VideoCapture(os.fspath(path), cv2.CAP_FFMPEG, list(params))
    if not capture.isOpened():
        capture.release()
        raise VideoReadError(path, _OPEN_FAILED)
    return capture


def _fourcc(capture):
    """Returns the stream's FourCC as text, '' when unknown."""
    code = int(capture.get(cv2.CAP_PROP_FOURCC))
    if code <= 0:
        return ""
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return text if text.isprintable() else ""


def _orientation(capture):
    """Returns (rotation degrees, auto_rotated) from the capture's properties."""
    meta = getattr(cv2, "CAP_PROP_ORIENTATION_META", None)
    auto = getattr(cv2, "CAP_PROP_ORIENTATION_AUTO", None)
    rotation = int(round(capture.get(meta))) % 360 if meta is not None else 0
    auto_rotated = bool(capture.get(auto)) if auto is not None else False
    return rotation, auto_rotated


def probe(path, count_frames=False, decode_first=True):
    """Returns a video's metadata, checking that at least one frame decodes.

    Args:
        path: the video file.
        count_frames: decode every frame (``grab()`` only, no colour conversion) to get the
            exact frame count instead of the container's, which may be wrong.
        decode_first: decode and colour-convert the first frame, to check that one
            decodes and to measure width and height on it. False reads the container's
            header only (width and height as OpenCV reports them; a later
            `read_frames` still raises on a file with no decodable frame): the colour
            conversion set-up can cost a second on some files (Display-P3 primaries), so
            readers that decode the frames anyway skip it.

    Returns:
        A `VideoInfo`.

    Raises:
        VideoReadError: the file is missing, empty, not a video, or has no decodable frame.
    """
    capture = _open(path)
    try:
        info = _header_info(capture, path)
        if decode_first or count_frames:
            ok = capture.grab()
            frame = capture.retrieve()[1] if ok and decode_first else None
            if not ok or (decode_first and frame is None):
                raise VideoReadError(path, "the video stream has no decodable frame")
        if decode_first:
            info = dataclasses.replace(info, width=frame.shape[1], height=frame.shape[0])
        if count_frames:
            frame_count, duration = 1, info.duration
            first_ms = last_ms = capture.get(cv2.CAP_PROP_POS_MSEC)
            while capture.grab():
                frame_count += 1
                last_ms = capture.get(cv2.CAP_PROP_POS_MSEC)
            if frame_count > 1 and last_ms > first_ms:
                # timestamps span frame_count - 1 intervals; add one mean interval
                duration = (last_ms - first_ms) / 1000.0 * frame_count / (frame_count - 1)
            elif info.fps > 0:
                duration = frame_count / info.fps
            info = dataclasses.replace(
                info, frame_count=frame_count, duration=duration, frame_count_exact=True
            )
    finally:
        capture.release()
    return info


def _header_info(capture, path):
    """Returns the `VideoInfo` an open capture's header gives, without decoding."""
    fps = float(capture.get(cv2.CAP_PROP_FPS))
    fps = fps if np.isfinite(fps) and fps > 0 else 0.0
    frame_count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
    rotation, auto_rotated = _orientation(capture)
    return VideoInfo(
        path=os.fspath(path),
        frame_count=frame_count,
        fps=fps,
        width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        rotation=rotation,
        auto_rotated=auto_rotated,
        duration=frame_count / fps if fps > 0 else 0.0,
        codec=_fourcc(capture),
    )


def count_frames(path):
    """Returns the exact number of decodable frames of a video (decodes all of them)."""
    return probe(path, count_frames=True).frame_count


def read_frames(
    path, indices, *, on_missing="error", seek_threshold=300, threads=None, transform=None
):
    """Decodes only the frames at `indices`, returning them as uint8 RGB.

    Args:
        path: the video file.
        indices: 1-D (or any shape) array of non-negative frame indices, in any order and
            with repeats; the output follows its flattened order.
        on_missing: what to do with indices past the last decodable frame (the container's
            frame count can be wrong): 'error' raises `VideoTooShortError` (which carries
            the real count, so the caller can re-sample), 'last' repeats the last decoded
            frame, 'loop' wraps around (index modulo the decoded count). 'last' and 'loop'
            have to decode up to the end of the file.
        seek_threshold: seek instead of decoding through when the next wanted frame is more
            than this many frames ahead (None: never seek). Seeking decodes from the
            previous key frame, so it pays off only for long gaps.
        threads: decoder threads (None: OpenCV's choice, one per core; 1: this thread).
        transform: a function applied to each wanted frame as it is decoded (e.g. a
            resize and crop), so that only its output is kept.

    Returns:
        uint8 array (N, H, W, 3), RGB (or what `transform` returns), N = ``indices.size``.

    Raises:
        VideoReadError: unreadable file or no decodable frame.
        VideoTooShortError: with ``on_missing='error'`` when an index is out of range.
        ValueError: bad arguments.
    """
    check_choice("on_missing", on_missing, ON_MISSING)
    flat = _check_indices(indices, threads)
    keep = transform or (lambda frame: frame)
    capture = _open(path, _params(threads))
    frames, decoded = _decode(path, capture, flat, seek_threshold, threads, keep)
    return _gather(path, flat, frames, decoded, on_missing, threads, keep)


def read_clip(path, sampler, *, threads=None, transform=None):
    """Samples frame indices from a video's length and decodes them, opening it once.

    Args:
        path: the video file.
        sampler: a function of the frame count (as the container announces it; counted by
            decoding when it announces none) returning the frame indices to read.
        threads: decoder threads, as in `read_frames`.
        transform: applied to each frame as it is decoded, as in `read_frames`.

    Returns:
        (info, frames): ``probe(path, decode_first=False)`` (``count_frames=True`` when the
        header has no count) and the frames at the sampler's indices, as `read_frames`.

    Raises:
        VideoReadError: unreadable file or no decodable frame.
        VideoTooShortError: an index past the last decodable frame.
    """
    capture = _open(path, _params(threads))
    try:
        info = _header_info(capture, path)
        if info.frame_count <= 0:  # no count in the container: count by decoding
            capture.release()
            info = probe(path, count_frames=True)
            capture = _open(path, _params(threads))
        flat = _check_indices(sampler(max(info.frame_count, 1)), threads)
    except BaseException:
        capture.release()
        raise
    keep = transform or (lambda frame: frame)
    frames, decoded = _decode(path, capture, flat, 300, threads, keep)
    return info, _gather(path, flat, frames, decoded, "error", threads, keep)


def _params(threads):
    """Returns the VideoCapture open parameters for `threads` decoder threads."""
    return [] if threads is None else [cv2.CAP_PROP_N_THREADS, int(threads)]


def _check_indices(indices, threads):
    """Returns the indices as flat int64, raising ValueError for bad indices or threads."""
    flat = np.asarray(indices).reshape(-1)
    if flat.size and not np.issubdtype(flat.dtype, np.integer):
        raise ValueError(f"indices must be integers. Received dtype {flat.dtype}")
    flat = flat.astype(np.int64)
    if flat.size and flat.min() < 0:
        raise ValueError(f"indices must be >= 0. Received min index {int(flat.min())}")
    if threads is not None:
        check_positive_int("threads", threads)
    return flat


def _gather(path, flat, frames, decoded, on_missing, threads, keep):
    """Applies `on_missing` to the indices past the end and stacks the frames in order."""
    if decoded == 0:
        raise VideoReadError(path, "the video stream has no decodable frame")
    missing = sorted({int(i) for i in flat} - set(frames))
    if missing:
        if on_missing == "error":
            raise VideoTooShortError(path, decoded, max(missing), frames)
        if on_missing == "loop":
            frames.update(_read_wrapped(path, missing, decoded, frames, threads, keep))
        else:  # 'last': the real last frame (a second pass if it was not kept)
            if decoded - 1 not in frames:
                frames.update(_read_wrapped(path, [decoded - 1], decoded, frames, threads, keep))
            for index in missing:
                frames[index] = frames[decoded - 1]
    if flat.size == 0:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack([frames[int(i)] for i in flat])


def _decode(path, capture, flat, seek_threshold, threads, keep):
    """Returns ({index: keep(RGB frame)}, frames decoded), then releases `capture`.

    Grabs from the start, seeking over gaps longer than `seek_threshold`; the count is
    the stream's real length when a wanted frame is past its end.
    """
    wanted = [int(i) for i in np.unique(flat)]
    frames, decoded, exhausted = {}, 0, False  # decoded: the next index; exhausted: grab failed
    try:
        for index in wanted:
            gap = index - decoded
            if seek_threshold is not None and gap > seek_threshold:
                if capture.set(cv2.CAP_PROP_POS_FRAMES, index) and (
                    int(capture.get(cv2.CAP_PROP_POS_FRAMES)) == index
                ):
                    decoded = index
                else:  # seek failed or landed elsewhere: start over and grab
                    capture.release()
                    capture = _open(path, _params(threads))
                    decoded = 0
            while decoded < index and not exhausted:
                exhausted = not capture.grab()
                decoded += not exhausted
            ok, frame = (False, None) if exhausted or not capture.grab() else capture.retrieve()
            if not ok or frame is None:
                exhausted = True
                break
            decoded += 1
            frames[index] = keep(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        # Count to the end so the error/policy knows the real length. The stream ends at
        # the first failed grab (a damaged file's decoder may recover; we never look).
        while len(frames) < len(wanted) and not exhausted:
            exhausted = not capture.grab()
            decoded += not exhausted
    finally:
        capture.release()
    return frames, decoded


def _read_wrapped(path, missing, decoded, have, threads, transform):
    """Reads frames ``i % decoded`` for the missing indices in a second pass."""
    targets = {int(i): int(i) % decoded for i in missing}
    need = sorted({t for t in targets.values() if t not in have})
    options = dict(seek_threshold=None, threads=threads, transform=transform)
    got = {**have, **dict(zip(need, read_frames(path, need, **options) if need else []))}
    return {i: got[t] for i, t in targets.items()}


def resize_short_side(frames, size, interpolation=None):
    """Resizes frames so that their shorter side is `size`, keeping the aspect ratio.

    Args:
        frames: uint8 or float array (N, H, W, C) or a single frame (H, W, C).
        size: the target length of the shorter side, in pixels.
        interpolation: an OpenCV flag; default INTER_AREA when shrinking, else INTER_LINEAR.

    Returns:
        The resized frames with the same dtype; the long side is rounded to nearest.
    """
    if size is None or int(size) <= 0:
        raise ValueError(f"size must be a positive int. Received: size={size!r}")
    frames = np.asarray(frames)
    single = frames.ndim == 3
    batch = frames[None] if single else frames
    height, width = batch.shape[1:3]
    short = min(height, width)
    scale = size / short
    new_h = size if height == short else int(round(height * scale))
    new_w = size if width == short else int(round(width * scale))
    if (new_h, new_w) == (height, width):
        return frames
    if interpolation is None:
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(f, (new_w, new_h), interpolation=interpolation) for f in batch])
    if out.ndim == batch.ndim - 1:  # cv2 drops a single channel axis
        out = out[..., None]
    return out[0] if single else out


def crop_offsets(height, width, size, mode="center", rng=None):
    """Returns the (top, left) corner of a `size` x `size` crop.

    Args:
        height: frame height.
        width: frame width.
        size: crop side; must not exceed the frame.
        mode: 'center', or 'random' (uniform over all valid positions, using `rng`).
        rng: a `numpy.random.Generator`, an int seed, or None (fresh entropy).

    Returns:
        (top, left) ints.
    """
    check_choice("mode", mode, CROP_MODES)
    if size > height or size > width:
        raise ValueError(
            f"crop size {size} does not fit in frames of {height}x{width} (height x width); "
            "resize the short side to at least the crop size first"
        )
    if mode == "center":
        return (height - size) // 2, (width - size) // 2
    rng = np.random.default_rng(rng)
    return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))


def crop(frames, size, mode="center", rng=None):
    """Crops the same `size` x `size` window out of every frame (centre or random).

    Args:
        frames: array (N, H, W, C) or (H, W, C).
        size: crop side in pixels.
        mode: 'center' or 'random'.
        rng: numpy Generator or int seed for 'random'.

    Returns:
        The cropped frames (a view).
    """
    frames = np.asarray(frames)
    height, width = frames.shape[-3:-1]
    top, left = crop_offsets(height, width, size, mode, rng)
    return frames[..., top : top + size, left : left + size, :]


def to_float(frames):
    """Scales uint8 frames from [0, 255] to float32 in [-1, 1] (x / 127.5 - 1)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"to_float expects uint8 frames. Received dtype {frames.dtype}")
    # Two passes over one float array (not three arrays): same values as x / 127.5 - 1.
    out = np.divide(frames, np.float32(127.5), dtype=np.float32)
    np.subtract(out, np.float32(1.0), out=out)
    return out


def transform_frames(
    frames, *, short_side=None, crop_size=None, crop_mode="center", rng=None, as_float=True
):
    """Applies the standard clip transform: resize short side, crop, scale to [-1, 1].

    Args:
        frames: uint8 RGB (N, H, W, 3).
        short_side: resize the shorter side to this many pixels first (None: keep).
        crop_size: square crop side (None: no crop).
        crop_mode: 'center' or 'random'; the same window is used for every frame.
        rng: numpy Generator or int seed for the random crop.
        as_float: return float32 in [-1, 1] instead of uint8.

    Returns:
        The transformed frames.
    """
    if short_side is not None:
        frames = resize_short_side(frames, short_side)
    if crop_size is not None:
        frames = crop(frames, crop_size, crop_mode, rng)
    return to_float(np.ascontiguousarray(frames)) if as_float else np.ascontiguousarray(frames)


def transform_frames_tf(frames, *, short_side, crop_size):
    """The eval transform of `transform_frames` in TensorFlow ops, for exported graphs.

    Resizes the shorter side to `short_side` as `resize_short_side` does (OpenCV's
    INTER_AREA when shrinking, INTER_LINEAR when enlarging), centre-crops `crop_size` and
    scales to [-1, 1]. The uint8 frames it crops are bit-identical to OpenCV's when nothing
    is resized, when shrinking by exactly 2 and when enlarging (OpenCV's 11-bit fixed-point
    bilinear is reproduced); when shrinking by another ratio about 0.1% of the values differ
    by one grey level (OpenCV and TensorFlow sum the area weights in a different order).

    Args:
        frames: uint8 tensor (N, H, W, C).
        short_side: int, the shorter side after resizing (>= `crop_size`).
        crop_size: int, the side of the centred square crop.

    Returns:
        float32 tensor (N, crop_size, crop_size, C) in [-1, 1].
    """
    import tensorflow as tf

    resized = _resize_short_side_tf(tf.convert_to_tensor(frames), int(short_side))
    shape = tf.shape(resized)
    top = (shape[1] - crop_size) // 2
    left = (shape[2] - crop_size) // 2
    return to_float_tf(resized[:, top : top + crop_size, left : left + crop_size, :])


def to_float_tf(frames):
    """`to_float` in TensorFlow, e.g. on the GPU for ``dtype="uint8"`` clips from `load_clip`."""
    import tensorflow as tf

    return tf.cast(frames, tf.float32) / 127.5 - 1.0


def _resize_short_side_tf(frames, size):
    """`resize_short_side` on a uint8 tensor (N, H, W, C), with the same output size."""
    import tensorflow as tf

    shape = tf.shape(frames)
    height, width = shape[1], shape[2]
    short = tf.minimum(height, width)
    scale = tf.cast(size, tf.float64) / tf.cast(short, tf.float64)

    def target(side):  # Python's round() is half-to-even, like tf.round
        scaled = tf.cast(tf.round(tf.cast(side, tf.float64) * scale), tf.int32)
        return tf.where(side == short, size, scaled)

    new_h, new_w = target(height), target(width)
    unchanged = tf.logical_and(tf.equal(new_h, height), tf.equal(new_w, width))
    return tf.cond(
        unchanged,
        lambda: frames,
        lambda: tf.cond(
            scale < 1,
            lambda: _area_resize_tf(frames, new_h, new_w),
            lambda: _linear_resize_tf(frames, new_h, new_w),
        ),
    )


def _area_resize_tf(frames, new_h, new_w):
    """OpenCV's INTER_AREA shrink of uint8 frames (exact for a ratio of 2)."""
    import tensorflow as tf

    shape = tf.shape(frames)
    mean = tf.image.resize(tf.cast(frames, tf.float32), tf.stack([new_h, new_w]), method="area")
    # OpenCV's 2x2 fast path rounds halves up ((sum + 2) >> 2); elsewhere half to even.
    halves = tf.logical_and(tf.equal(shape[1], 2 * new_h), tf.equal(shape[2], 2 * new_w))
    rounded = tf.where(halves, tf.floor(mean + 0.5), tf.round(mean))
    return tf.cast(tf.clip_by_value(rounded, 0.0, 255.0), tf.uint8)


def _linear_taps_tf(size, new_size, clamp):
    """OpenCV's bilinear source taps and 11-bit weights along one axis (int32 tensors)."""
    import tensorflow as tf

    scale = 1.0 / (tf.cast(new_size, tf.float64) / tf.cast(size, tf.float64))
    position = (tf.cast(tf.range(new_size), tf.float64) + 0.5) * scale - 0.5
    position = tf.cast(position, tf.float32)
    floor = tf.floor(position)
    fraction, first = position - floor, tf.cast(floor, tf.int32)
    if clamp:  # OpenCV clamps the horizontal taps at both borders (weights 1, 0)
        low, high = first < 0, first >= size - 1
        fraction = tf.where(tf.logical_or(low, high), 0.0, fraction)
        first = tf.where(low, 0, tf.where(high, size - 1, first))
    weight0 = tf.cast(tf.math.rint((1.0 - fraction) * 2048.0), tf.int32)
    weight1 = tf.cast(tf.math.rint(fraction * 2048.0), tf.int32)
    last = size - 1
    return tf.clip_by_value(first, 0, last), tf.clip_by_value(first + 1, 0, last), weight0, weight1


def _linear_resize_tf(frames, new_h, new_w):
    """OpenCV's INTER_LINEAR enlargement of uint8 frames, in its fixed-point arithmetic."""
    import tensorflow as tf

    shift = tf.bitwise.right_shift
    shape = tf.shape(frames)
    pixels = tf.cast(frames, tf.int32)
    left, right, a0, a1 = _linear_taps_tf(shape[2], new_w, clamp=True)
    rows = (
        tf.gather(pixels, left, axis=2) * a0[:, None]
        + tf.gather(pixels, right, axis=2) * (a1[:, None])
    )
    top, bottom, b0, b1 = _linear_taps_tf(shape[1], new_h, clamp=False)
    upper = shift(tf.gather(rows, top, axis=1), 4)
    lower = shift(tf.gather(rows, bottom, axis=1), 4)
    b0, b1 = b0[:, None, None], b1[:, None, None]
    value = shift(shift(b0 * upper, 16) + shift(b1 * lower, 16) + 2, 2)
    return tf.cast(tf.clip_by_value(value, 0, 255), tf.uint8)
