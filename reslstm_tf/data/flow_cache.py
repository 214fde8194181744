"""A flow-frame cache: optical flow computed once per video, stored quantised to uint8.

Training a flow network end to end reads flow fields every epoch; TV-L1 costs about 0.8 s per
224x224 frame pair on a 2-core CPU, so flow is computed once, as MMAction2's `denseflow`
does: each field is clipped to [-bound, bound] pixels and mapped linearly onto 0..255
(`q = round((f + bound) * 255 / (2 * bound))`), a loss of at most bound / 255 pixels (0.08 px
at the usual bound of 20). `denseflow` writes each component as a JPEG; this cache keeps one
losslessly compressed `.npz` per video (uint8 (F, H, W, 2), F = frames - 1), which numpy
reads back without a decoder.

A cache folder holds `spec.json` (method, short side, bound) and the per-video files under
the video's id (its path relative to the data folder). Each file is written to a temporary
name and renamed, so a job killed at any moment leaves only whole files, and a rerun computes
only the videos that have none. One writer at a time holds the folder's lock.

Example:

    cache = FlowCache("flow/tvl1", method="tvl1", short_side=128)
    cache.fill([("Ollie/a.mp4", "/data/skate/Ollie/a.mp4"), ...])
    flow = cache.read("Ollie/a.mp4")  # float32 (F, H, W, 2) in [-1, 1]
"""

import json
import os
import pathlib

import numpy as np

from reslstm_tf.checks import check_choice, check_positive_int
from reslstm_tf.data import flow as flow_lib
from reslstm_tf.data import video as video_lib
from reslstm_tf.faults import fault_point
from reslstm_tf.files import atomic_path, atomic_write, folder_lock

SPEC_FILE = "spec.json"
SUFFIX = ".flow.npz"
FORMAT_VERSION = 1


class FlowCacheError(ValueError):
    """A flow cache that cannot be used as asked (another spec, a bad video id)."""


def quantize(flow, bound=flow_lib.DEFAULT_BOUND):
    """Maps flow in pixels to uint8: [-bound, bound] onto 0..255, values outside clipped."""
    scaled = (np.clip(np.asarray(flow, np.float32), -bound, bound) + bound) * (255.0 / (2 * bound))
    return np.rint(scaled).astype(np.uint8)


def dequantize(quantized):
    """Maps uint8 flow back to the network's [-1, 1] scale (flow / bound)."""
    return np.asarray(quantized, np.float32) / np.float32(127.5) - np.float32(1.0)


def video_flow(path, method="tvl1", short_side=128, bound=flow_lib.DEFAULT_BOUND):
    """Computes the quantised flow of every consecutive frame pair of a video.

    Args:
        path: the video file.
        method: "tvl1" or "farneback".
        short_side: frames are resized so their shorter side has this many pixels first.
        bound: the clip bound in pixels.

    Returns:
        uint8 array (F, H, W, 2), F = decodable frames - 1.

    Raises:
        VideoReadError: the file is missing, unreadable or has fewer than 2 frames.
    """
    count = video_lib.count_frames(path)
    if count < 2:
        raise video_lib.VideoReadError(path, f"{count} decodable frame(s); flow needs 2")
    frames = video_lib.read_frames(path, np.arange(count), on_missing="last")
    gray = flow_lib.to_gray(video_lib.resize_short_side(frames, short_side))
    tvl1 = flow_lib.make_tvl1() if method == "tvl1" else None
    fields = [
        quantize(flow_lib.compute_flow(gray[i], gray[i + 1], method, tvl1=tvl1), bound)
        for i in range(count - 1)
    ]
    return np.stack(fields)


class FlowCache:
    """A folder of per-video quantised flow fields with one spec (method, short side, bound).

    Args:
        root: the cache folder (created).
        method: "tvl1" or "farneback".
        short_side: the frames' shorter side before flow is computed, in pixels.
        bound: the clip bound in pixels.

    Raises:
        FlowCacheError: `root` holds a cache of another spec.
    """

    def __init__(self, root, method="tvl1", short_side=128, bound=flow_lib.DEFAULT_BOUND):
        self.root = pathlib.Path(root)
        self.method = check_choice("method", method, flow_lib.METHODS)
        self.short_side = check_positive_int("short_side", short_side)
        if not bound > 0:
            raise ValueError(f"bound must be > 0. Received: bound={bound!r}")
        self.bound = float(bound)
        self._check_spec()

    @property
    def spec(self):
        """The spec recorded in `spec.json`."""
        return {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "short_side": self.short_side,
            "bound": self.bound,
        }

    def _check_spec(self):
        """Refuses a folder made with another spec, naming each differing field."""
        path = self.root / SPEC_FILE
        if not path.is_file():
            return
        recorded = json.loads(path.read_text(encoding="utf-8"))
        differ = [
            f"{key}: cache {recorded.get(key)!r}, asked {value!r}"
            for key, value in self.spec.items()
            if recorded.get(key) != value
        ]
        if differ:
            raise FlowCacheError(
                f"flow cache {str(self.root)!r} was made with another spec ({'; '.join(differ)}); "
                "use another folder or the same flags"
            )

    def path_for(self, video_id):
        """The file of `video_id` inside the cache; refuses ids that would leave the folder."""
        relative = pathlib.PurePosixPath(str(video_id))
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise FlowCacheError(
                f"video id {video_id!r} must be a relative path inside the data folder"
            )
        return self.root.joinpath(*relative.parts).with_name(relative.name + SUFFIX)

    def has(self, video_id):
        """True when the flow of `video_id` is cached."""
        return self.path_for(video_id).is_file()

    def read(self, video_id, quantized=False):
        """Returns the cached flow of `video_id`: float32 in [-1, 1], or the raw uint8.

        Raises:
            FileNotFoundError: the video's flow is not cached.
        """
        path = self.path_for(video_id)
        if not path.is_file():
            raise FileNotFoundError(f"no cached flow for {video_id!r} in {str(self.root)!r}")
        with np.load(path) as stored:
            flow = stored["flow"]
        return flow if quantized else dequantize(flow)

    def write(self, video_id, quantized_flow):
        """Stores uint8 flow (F, H, W, 2) for `video_id`, atomically."""
        flow = np.asarray(quantized_flow)
        if flow.dtype != np.uint8 or flow.ndim != 4 or flow.shape[-1] != 2:
            raise ValueError(
                f"flow for {video_id!r} must be uint8 (F, H, W, 2). "
                f"Received {flow.dtype} {flow.shape}"
            )
        target = self.path_for(video_id)
        tmp = atomic_path(target)
        try:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, flow=flow)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def fill(self, items, progress=True):
        """Computes and stores the flow of every (video_id, path) not cached yet.

        A video that cannot be read is skipped and reported; the others go on.

        Args:
            items: iterable of (video_id, video path).
            progress: show a progress bar with videos/s and ETA.

        Returns:
            dict with "computed" and "skipped" counts and "failed": [(video_id, reason)].
        """
        from tqdm.auto import tqdm

        items = list(items)
        summary = {"computed": 0, "skipped": 0, "failed": []}
        with folder_lock(self.root, "flow cache"):
            with atomic_write(self.root / SPEC_FILE, "w") as handle:
                json.dump(self.spec, handle, indent=2, sort_keys=True)
            for video_id, path in tqdm(items, disable=not progress, unit="video", desc="flow"):
                if self.has(video_id):
                    summary["skipped"] += 1
                    continue
                try:
                    flow = video_flow(path, self.method, self.short_side, self.bound)
                except (video_lib.VideoReadError, ValueError, OSError) as error:
                    summary["failed"].append((video_id, str(error)))
                    continue
                self.write(video_id, flow)
                fault_point("flow_written")
                summary["computed"] += 1
        return summary
