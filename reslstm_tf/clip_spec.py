"""ClipSpec: the one definition of a clip, from a video file to the network's input.

A video becomes the network's input in one way, set by a `ClipSpec`: K_v segments
(``num_segments``) of L frames (``segment_len``; flow: L fields from L + 1 frames) are
sampled over the video (`reslstm_tf.data.sampling`, ``short`` for videos shorter than K_v
windows), every frame's shorter side is resized to ``resize_short_side`` (default
``frame_size * 256 / 224``, the usual 8:7 ratio) and a ``frame_size`` square is cropped
(centred in eval mode, random in train mode); flow streams compute optical flow with
``flow_method``; the ``backbone`` with ``backbone_weights`` turns each segment into a feature.

Every default of a clip lives here, once. `reslstm_tf.data.reader.read_clip` is the one
decoder of a clip for a spec (extraction, prediction, classification, streaming and
fine-tuning all call it), and `reslstm_tf.data.reader.read_clip_tf` its TensorFlow-ops twin
for a SavedModel's ``serve_video``. A feature cache, a training run and a zoo entry each
record their spec (`ClipSpec.to_dict`), and whoever reads them takes the spec from there
(`ClipSpec.from_dict`), as keras-hub's preprocessors travel with their models and TF Model
Garden's ``DataConfig`` states a clip's shape once.

Example:

    from reslstm_tf.clip_spec import ClipSpec

    spec = ClipSpec(num_segments=8, frame_size=112)
    spec.short_side  # 128
    spec.shape  # (8, 16, 112, 112, 3)
    ClipSpec.from_dict(spec.to_dict()) == spec  # True
"""

import dataclasses

from reslstm_tf.checks import check_choice, check_positive_int

SHORT_POLICIES = ("loop", "pad", "overlap")
MODALITIES = ("rgb", "flow")
FLOW_METHODS = ("tvl1", "farneback")
BACKBONES = ("i3d", "c3d")
CHANNELS = {"rgb": 3, "flow": 2}
# The frame side each backbone was trained on: a spec's frame size unless it says otherwise.
NATIVE_FRAME_SIZE = {"i3d": 224, "c3d": 112}
# The other name some older records (caches, zoo entries) give a field.
_ALIASES = {"weights": "backbone_weights", "segments": "num_segments"}
# Keys a record may hold beside the spec: what the backbone gives back, not how clips are cut.
DESCRIPTIVE_KEYS = ("endpoint", "pooling", "feature_dim", "normalisation", "sampling")


class ClipSpecError(ValueError):
    """A clip spec with a bad or unknown field."""


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """How clips are cut from a video and fed to a backbone (module docstring).

    Attributes:
        num_segments: K_v, segments per video. Defaults to 16 (the paper's T).
        segment_len: L, frames (flow: flow fields) per segment. Defaults to 16.
        frame_size: S, the side of the square crop; None (the default) means the size the
            backbone was trained on, `NATIVE_FRAME_SIZE` (224 for I3D, 112 for C3D).
        resize_short_side: the shorter side after resizing, before cropping; None (the
            default) means ``round(frame_size * 256 / 224)``.
        short: what to do with a video shorter than K_v windows: 'loop' (the default, as
            the kinetics-i3d recipe), 'pad' or 'overlap' (`reslstm_tf.data.sampling`).
        modality: 'rgb' or 'flow'.
        flow_method: 'tvl1' or 'farneback', the optical flow of a 'flow' clip.
        backbone: 'i3d' or 'c3d', the 3D CNN that embeds a segment.
        backbone_weights: its weights: 'kinetics400', None (untrained) or a file.
    """

    num_segments: int = 16
    segment_len: int = 16
    frame_size: int | None = None
    resize_short_side: int | None = None
    short: str = "loop"
    modality: str = "rgb"
    flow_method: str = "tvl1"
    backbone: str = "i3d"
    backbone_weights: str | None = "kinetics400"

    def __post_init__(self):
        """Checks every field; raises `ClipSpecError` naming the bad one."""
        check_choice("backbone", self.backbone, BACKBONES, error=ClipSpecError)
        if self.frame_size is None:
            object.__setattr__(self, "frame_size", NATIVE_FRAME_SIZE[self.backbone])
        for name in ("num_segments", "segment_len", "frame_size"):
            check_positive_int(name, getattr(self, name), error=ClipSpecError)
        if self.resize_short_side is not None:
            check_positive_int("resize_short_side", self.resize_short_side, error=ClipSpecError)
        check_choice("short", self.short, SHORT_POLICIES, error=ClipSpecError)
        check_choice("modality", self.modality, MODALITIES, error=ClipSpecError)
        check_choice("flow_method", self.flow_method, FLOW_METHODS, error=ClipSpecError)
        if self.backbone_weights is not None and not isinstance(self.backbone_weights, str):
            raise ClipSpecError(
                "backbone_weights must be 'kinetics400', None or a file path. "
                f"Received: backbone_weights={self.backbone_weights!r}"
            )

    @property
    def short_side(self):
        """The shorter side frames are resized to before cropping (at least `frame_size`)."""
        return max(self.resize_short_side or default_short_side(self.frame_size), self.frame_size)

    @property
    def frames_per_segment(self):
        """Video frames decoded per segment: L, or L + 1 for L flow fields."""
        return self.segment_len + int(self.modality == "flow")

    @property
    def channels(self):
        """Channels of a frame of the clip: 3 (RGB) or 2 (flow)."""
        return CHANNELS[self.modality]

    @property
    def shape(self):
        """The (K_v, L, S, S, C) shape of one clip."""
        size = self.frame_size
        return (self.num_segments, self.segment_len, size, size, self.channels)

    def replace(self, **changes):
        """A copy with `changes` applied (checked as a new spec)."""
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            raise ClipSpecError(f"unknown clip spec fields {unknown}; allowed: {field_names()}")
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """The spec as a JSON-serialisable dict, every field written out."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record, **overrides):
        """The spec a record (a cache index, a run, a zoo entry) states, then `overrides`.

        Older records' field names (`weights`, `segments`) are read as today's, and the
        descriptive keys (`feature_dim`, `endpoint`, ...) are ignored; any other key is
        refused, so a misspelt field never passes unnoticed.

        Raises:
            ClipSpecError: an unknown or bad field.
        """
        values = {}
        for key, value in {**(record or {}), **overrides}.items():
            key = _ALIASES.get(key, key)
            if key in DESCRIPTIVE_KEYS:
                continue
            if key not in field_names():
                raise ClipSpecError(
                    f"unknown clip spec field {key!r}; allowed: {list(field_names())}"
                )
            values[key] = value
        return cls(**values)

    @classmethod
    def from_record(cls, record, **overrides):
        """The spec whose fields a record holds among others (a cache index, a run's log).

        As `from_dict`, but keys that are not spec fields are passed over, and so are
        fields recorded as None (an RGB cache records no flow method).
        """
        known = set(field_names()) | set(_ALIASES)
        values = {k: v for k, v in (record or {}).items() if k in known and v is not None}
        return cls.from_dict(values, **overrides)

    def __getitem__(self, name):
        """Field access by name, as for the dict records specs are stored as."""
        if name not in field_names():
            raise KeyError(name)
        return getattr(self, name)

    def differences(self, other):
        """The fields in which `other` differs, as ["frame_size: 224 -> 112", ...]."""
        return [
            f"{name}: {getattr(self, name)!r} -> {getattr(other, name)!r}"
            for name in field_names()
            if getattr(self, name) != getattr(other, name)
        ]


def spec_of(**fields):
    """The `ClipSpec` of the given fields; a field given as None takes the spec's default."""
    return ClipSpec.from_dict({name: value for name, value in fields.items() if value is not None})


def field_names():
    """The names of `ClipSpec`'s fields, in order."""
    return tuple(field.name for field in dataclasses.fields(ClipSpec))


def default_short_side(frame_size):
    """Returns the resize target for a crop: 256 for 224 (the usual 8:7 ratio)."""
    return int(round(frame_size * 256 / 224))


# Named specs: the paper's regime, and the small one a 2-core CPU affords for whole studies.
PRESETS = {
    "paper": ClipSpec(),
    "cpu_small": ClipSpec(num_segments=4, frame_size=112, short="overlap"),
}


def preset(name):
    """The named `ClipSpec` of `PRESETS`."""
    check_choice("clip preset", name, tuple(PRESETS), error=ClipSpecError)
    return PRESETS[name]
