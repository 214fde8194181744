"""The study's clip specs and test-time views: frozen features of extra specs, TTA views.

The clip spec is a dimension of the study (`StudyConfig.frozen_clips`): besides the study's
own clip (`StudyConfig.clip`, every recipe), frozen-feature recipes ("logreg", "frozen" and,
with stored training views, "frozen_aug") also run on the features of other specs, e.g.
`PRESETS["paper"]` (16 segments at the backbone's native 224 px). Each spec has a short tag
(`clip_tag`: "i3d112_t4", "i3d224_t16") that every run row records, and the report and the
selection group by it.

Test-time augmentation (TTA) reads each clip in `tta_views(...)` deterministic views: every
segment's window moved by a fraction of its part of the video (`offsets`, never past the
video's ends), each unflipped and mirrored left to right. View 0 is the centred, unflipped
clip: exactly `read_clip(path, spec, "eval")`. The frames come from the one clip reader
(`reslstm_tf.data.reader`: its sampler, its per-frame resize and centred crop, the one
decoder), so a TTA view differs from the eval clip only by the shift and the flip.
"""

import dataclasses
import pathlib

import numpy as np

from reslstm_tf.clip_spec import PRESETS, ClipSpec, ClipSpecError
from reslstm_tf.data import reader, video
from reslstm_tf.data.clips import flip_clip
from reslstm_tf.files import atomic_write

# The default TTA views: windows moved by a quarter of a part back and forth, each flipped.
TTA_OFFSETS = (0.0, -0.25, 0.25)


def clip_tag(spec):
    """A spec's short tag: `<backbone><size>_t<segments>`, e.g. "i3d224_t16".

    Segments of other than 16 frames add `_l<L>` ("i3d112_t4_l8").
    """
    tag = f"{spec.backbone}{spec.frame_size}_t{spec.num_segments}"
    return tag if spec.segment_len == 16 else f"{tag}_l{spec.segment_len}"


def parse_clip(text):
    """The `ClipSpec` of a preset name with optional changes: "paper:short=overlap".

    Integer fields are read as integers; "none" as None.
    """
    name, *changes = [part.strip() for part in str(text).split(":") if part.strip()]
    if name not in PRESETS:
        raise ClipSpecError(f"unknown clip preset {name!r}; known: {sorted(PRESETS)}")
    values = {}
    for change in changes:
        field, _, value = change.partition("=")
        if not value:
            raise ClipSpecError(f"a clip change is field=value. Received: {change!r}")
        values[field.strip()] = _value(value.strip())
    return PRESETS[name].replace(**values)


def _value(text):
    if text.lower() == "none":
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def clip_from_record(record):
    """A spec stored in a study record (a dict), or given as a preset text."""
    if isinstance(record, ClipSpec):
        return record
    if isinstance(record, str):
        return parse_clip(record)
    return ClipSpec.from_dict(record)


# ------------------------------------------------------------------------- TTA views


@dataclasses.dataclass(frozen=True)
class TtaView:
    """One test-time view: windows moved by `offset` parts, mirrored if `flip`."""

    offset: float
    flip: bool

    @property
    def name(self):
        """e.g. "+0.25 flip"."""
        return f"{self.offset:+.2f}{' flip' if self.flip else ''}"


def tta_views(offsets=TTA_OFFSETS, flips=True):
    """The TTA views in order: each offset unflipped, then mirrored; view 0 the eval clip.

    Args:
        offsets: window shifts in parts of the video (n / K_v frames); the first must be 0.
        flips: also read each offset mirrored.
    """
    offsets = tuple(float(o) for o in offsets)
    if not offsets or offsets[0] != 0.0:
        raise ValueError(f"the first TTA offset must be 0 (the eval clip). Received: {offsets}")
    return [TtaView(o, f) for o in offsets for f in ((False, True) if flips else (False,))]


def tta_indices(spec, num_frames, offset):
    """The frames of a TTA view: the eval sample's windows moved by `offset` parts.

    Each window moves by `round(offset * num_frames / K_v)` frames, less where that would
    pass the video's first or last frame (the window then stops at the end), so every
    window keeps its frames in order and a view's frames all exist.

    Returns:
        int64 (K_v, frames per segment).
    """
    indices = reader.segment_indices(spec, num_frames, "eval").indices.astype(np.int64)
    shift = int(round(offset * num_frames / spec.num_segments))
    low, high = -indices.min(axis=1), num_frames - 1 - indices.max(axis=1)
    return indices + np.clip(shift, low, high)[:, None]


def read_tta_clip(path, spec, view):
    """The uint8 RGB frames (K_v, L, S, S, 3) of one TTA view of a video, by the one reader.

    Decoded by `reslstm_tf.data.video.read_clip` with the reader's frame transform (resize
    the shorter side, centred crop), as `reader.read_clip` in eval mode does.
    """
    if spec.modality != "rgb":
        raise ValueError(f"TTA views are read for RGB clips. Received: {spec.modality!r}")
    crop = reader.frame_transform(spec, "eval")
    try:
        _, frames = video.read_clip(
            path, lambda count: tta_indices(spec, count, view.offset), transform=crop
        )
    except video.VideoTooShortError as err:  # the container over-announced its length
        count = err.decoded_frames
        crop = reader.frame_transform(spec, "eval")
        _, frames = video.read_clip(
            path, lambda _: tta_indices(spec, count, view.offset), transform=crop
        )
    frames = frames.reshape((spec.num_segments, spec.segment_len) + frames.shape[1:])
    return flip_clip(frames, "rgb") if view.flip else frames


# ------------------------------------------------------------- features of a spec


def _stored_by_part(path, parts, compute):
    """Stacks per-part arrays, each computed once into `<path>.parts/` (a killed run resumes)."""
    path = pathlib.Path(path)
    if path.exists():
        return np.load(path)
    folder = path.with_name(path.name + ".parts")
    folder.mkdir(parents=True, exist_ok=True)
    arrays = []
    for part in parts:
        file = folder / f"{part}.npy"
        if not file.exists():
            with atomic_write(file) as handle:
                np.save(handle, np.asarray(compute(part), np.float32))
        arrays.append(np.load(file))
    array = np.stack(arrays)
    with atomic_write(path) as handle:
        np.save(handle, array)
    for file in folder.iterdir():
        file.unlink()
    folder.rmdir()
    return array


def spec_features(spec, videos, data_dir, out_path, views=0, seed=0, progress=True):
    """Frozen features of every video for a spec: float32 (1 + views, N, T, D).

    Row 0 is the centred clip, rows 1.. the training views (`VideoClips.load("train", v)`
    with `seed`: random windows, crops and flips, as the study's own views); every clip goes
    through the whole pretrained backbone (`feature_model`). Stored at `out_path`, computed
    video by video once (a killed computation resumes).
    """
    from tqdm.auto import tqdm

    from reslstm_tf.backbones.extractor import feature_model
    from reslstm_tf.data.clips import VideoClips

    clips = VideoClips(videos, data_dir, spec, modality="rgb", seed=seed)
    encoder = feature_model(spec.backbone, "rgb", spec.backbone_weights)
    runs = [("eval", 0)] + [("train", v) for v in range(views)]
    bar = tqdm(total=len(runs) * len(clips), desc=f"features {clip_tag(spec)}", unit="clip",
               disable=not progress)  # fmt: skip

    def compute(part):
        mode, view, index = part.split("_")
        (clip,) = clips.load(int(index), mode, int(view))
        bar.update(1)
        return encoder(clip, training=False)

    parts = [f"{m}_{v}_{i:05d}" for m, v in runs for i in range(len(clips))]
    flat = _stored_by_part(out_path, parts, compute)
    bar.close()
    return flat.reshape(len(runs), len(clips), *flat.shape[1:])


def tta_trunk_outputs(trunk, spec, videos, data_dir, view, batch_size=4):
    """A trunk's outputs on one TTA view of every video: float32 (N, T, *trunk output)."""
    from reslstm_tf.data.clips import video_items
    from reslstm_tf.video_classifier import SegmentEncoder

    encoder = SegmentEncoder(trunk)
    paths, _ = video_items(videos)
    out = []
    for start in range(0, len(paths), batch_size):
        batch = [read_tta_clip(pathlib.Path(data_dir, p), spec, view)
                 for p in paths[start : start + batch_size]]  # fmt: skip
        out.append(np.asarray(encoder(video.to_float(np.stack(batch)), training=False)))
    return np.concatenate(out).astype(np.float32)
