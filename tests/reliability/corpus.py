"""A corpus of bad inputs, made from the real skateboard clips and the real split files.

Every case is built from real data (`shared/data`): a real H.264 clip cut short, overwritten in
the middle, re-declared at a huge resolution, stripped of its video track, renamed; the
official UCF-101 / HMDB-51 split files with blank lines, unknown classes and missing videos
added; feature files with NaN or the wrong dimension; a tampered zoo weights file; a pickle
that would run a shell command. Tests call the ``build_*`` functions; by hand::

    python -m tests.reliability.corpus OUT_DIR [--shared-data DIR]

writes the whole corpus into OUT_DIR and prints one line per case.

`TallyRow` / `format_tally` print the outcome of each case as one line: case, outcome,
message head.
"""

import argparse
import dataclasses
import os
import pathlib
import pickle
import shutil
import struct
import sys

import cv2
import numpy as np

# Real clips the corpus is made from (``skateboard/<Class>/<name>``).
SOURCE_CLIP = "Kickflip/Kickflip1.mp4"  # 456x256 H.264, 56 frames, moov before mdat
AUDIO_SOURCE = "originals/Ollie6.mov"  # 720p H.264 + AAC audio, moov after mdat

# name -> (relative path in the corpus data folder, what it is)
VIDEO_CASES = {
    "zero_byte": ("Kickflip/zero_byte.mp4", "an empty file"),
    "truncated": ("Kickflip/truncated.mp4", "the first 30% of a real mp4"),
    "corrupted_middle": (
        "Kickflip/corrupted_middle.mp4",
        "a real mp4 with 4 KiB of random bytes written over the middle of its media data",
    ),
    "text_as_mp4": ("Ollie/text_as_mp4.mp4", "a text file named .mp4"),
    "one_frame": ("Ollie/one_frame.mp4", "a one-frame mp4 written from a real frame"),
    "audio_only": (
        "Ollie/audio_only.mp4",
        "a real .mov whose video track was turned into a 'free' box: audio and data only",
    ),
    "huge_resolution": (
        "Kickflip/huge_resolution.mp4",
        "a real mp4 whose H.264 SPS declares 16000x16000 pixels",
    ),
    "wrong_extension_avi": ("Ollie/wrong_extension.avi", "a real mp4 named .avi"),
    "wrong_extension_txt": ("Ollie/wrong_extension.txt", "a real mp4 named .txt"),
    "missing_on_disk": ("Kickflip/missing_on_disk.mp4", "listed, but no such file"),
    "extreme_aspect": (
        "Ollie/extreme_aspect.avi",
        "3 real frames squeezed to 4096x2 in an MJPEG avi (3 KB, under the 8K cap)",
    ),
}

# Cases the reader must refuse with `VideoReadError` (the rest decode, possibly fewer frames).
UNREADABLE = (
    "zero_byte",
    "text_as_mp4",
    "audio_only",
    "huge_resolution",
    "missing_on_disk",
    "extreme_aspect",
)


# --- ISO base media (mp4 / mov) boxes ------------------------------------------------------

# Container boxes, with the bytes of fields before their first child box.
_CONTAINERS = {
    b"moov": 0,
    b"trak": 0,
    b"mdia": 0,
    b"minf": 0,
    b"stbl": 0,
    b"edts": 0,
    b"dinf": 0,
    b"stsd": 8,
    b"avc1": 78,
    b"avc3": 78,
}


def iter_boxes(data, start=0, end=None):
    """Yields (offset, size, type, header length) of the boxes in data[start:end]."""
    end = len(data) if end is None else end
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
            header = 16
        elif size == 0:
            size = end - offset
        if size < header:
            raise ValueError(f"malformed box {kind!r} of size {size} at offset {offset}")
        yield offset, size, kind, header
        offset += size


def walk_boxes(data, start=0, end=None, parents=()):
    """Yields (path of types, offset, size, header length) of every box, depth first."""
    for offset, size, kind, header in iter_boxes(data, start, end):
        path = (*parents, kind)
        yield path, offset, size, header
        if kind in _CONTAINERS:
            yield from walk_boxes(data, offset + header + _CONTAINERS[kind], offset + size, path)


def find_box(data, *path):
    """Returns (offset, size, header length) of the first box at `path`, e.g. b"moov", b"trak"."""
    for found, offset, size, header in walk_boxes(data):
        if found == tuple(path):
            return offset, size, header
    raise KeyError(f"no box {b'/'.join(path)!r}")


def splice(data, start, end, replacement):
    """Replaces data[start:end] inside one box; fixes the enclosing sizes and chunk offsets."""
    data = bytes(data)
    delta = len(replacement) - (end - start)
    enclosing = [o for _, o, size, _ in walk_boxes(data) if o < start < o + size]
    offsets = []  # (position of a chunk-offset entry, its width in bytes)
    for path, offset, _, header in walk_boxes(data):
        if path[-1] in (b"stco", b"co64"):
            count = struct.unpack(">I", data[offset + header + 4 : offset + header + 8])[0]
            width = 4 if path[-1] == b"stco" else 8
            first = offset + header + 8
            offsets.extend((first + width * k, width) for k in range(count))
    out = bytearray(data[:start] + replacement + data[end:])
    for offset in enclosing:
        size = struct.unpack(">I", data[offset : offset + 4])[0]
        struct.pack_into(">I", out, offset, size + delta)
    fmt = {4: ">I", 8: ">Q"}
    for position, width in offsets:
        moved = position + (delta if position >= end else 0)
        value = struct.unpack(fmt[width], data[position : position + width])[0]
        if value >= end:  # media data after the change moved by delta
            struct.pack_into(fmt[width], out, moved, value + delta)
    return bytes(out)


# --- H.264 sequence parameter set ------------------------------------------------------------


def _unescape(payload):
    """NAL payload -> RBSP (drops emulation-prevention bytes)."""
    out, zeros = bytearray(), 0
    for byte in payload:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _escape(rbsp):
    """RBSP -> NAL payload (inserts emulation-prevention bytes)."""
    out, zeros = bytearray(), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class _Bits:
    """Reads bits of an RBSP and writes a copy with some fields changed."""

    def __init__(self, data):
        self.data, self.pos, self.out = data, 0, []

    def read(self, count):
        value = 0
        for _ in range(count):
            value = (value << 1) | ((self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def read_ue(self):
        zeros = 0
        while self.read(1) == 0:
            zeros += 1
        return (1 << zeros) - 1 + self.read(zeros)

    def write(self, count, value):
        self.out.extend((value >> (count - 1 - i)) & 1 for i in range(count))

    def write_ue(self, value):
        value += 1
        self.write(value.bit_length() - 1, 0)
        self.write(value.bit_length(), value)

    def copy(self, count):
        self.write(count, self.read(count))
        return self.out[-1] if count == 1 else None

    def copy_ue(self):
        value = self.read_ue()
        self.write_ue(value)
        return value

    def finish(self):
        bits = [*self.out, 1]  # rbsp_stop_one_bit
        bits += [0] * (-len(bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


_HIGH_PROFILES = (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135)


def patch_sps_size(nal, width_mbs, height_mbs):
    """Returns an H.264 SPS NAL unit declaring width_mbs x height_mbs macroblocks, no crop."""
    bits = _Bits(_unescape(nal[1:]))
    profile = bits.read(8)
    bits.write(8, profile)
    bits.copy(16)  # constraint flags, level
    bits.copy_ue()  # seq_parameter_set_id
    if profile in _HIGH_PROFILES:
        if bits.copy_ue() == 3:  # chroma_format_idc
            bits.copy(1)
        bits.copy_ue()
        bits.copy_ue()
        bits.copy(1)
        if bits.copy(1):
            raise NotImplementedError("SPS with scaling matrices")
    bits.copy_ue()  # log2_max_frame_num_minus4
    poc_type = bits.copy_ue()
    if poc_type == 0:
        bits.copy_ue()
    elif poc_type == 1:
        raise NotImplementedError("SPS with pic_order_cnt_type 1")
    bits.copy_ue()  # max_num_ref_frames
    bits.copy(1)
    bits.read_ue()
    bits.read_ue()
    bits.write_ue(width_mbs - 1)
    bits.write_ue(height_mbs - 1)
    if not bits.copy(1):  # frame_mbs_only_flag
        bits.copy(1)
    bits.copy(1)  # direct_8x8_inference_flag
    if bits.read(1):  # frame cropping: dropped
        for _ in range(4):
            bits.read_ue()
    bits.write(1, 0)
    last = len(bits.data) * 8 - 1  # the stop bit ends the RBSP
    while not (bits.data[last >> 3] >> (7 - (last & 7))) & 1:
        last -= 1
    while bits.pos < last:
        bits.copy(1)
    return nal[:1] + _escape(bits.finish())


# --- video cases ---------------------------------------------------------------------------


def first_frame(path):
    """Returns the first frame of a real clip, BGR uint8."""
    capture = cv2.VideoCapture(os.fspath(path))
    ok, frame = capture.read()
    capture.release()
    if not ok:
        raise RuntimeError(f"cannot read the first frame of {path}")
    return frame


def truncated(data, fraction=0.3):
    """The first `fraction` of the bytes."""
    return data[: int(len(data) * fraction)]


def corrupted_middle(data, length=4096, seed=0):
    """`length` random bytes written over the middle of the media data ('mdat')."""
    offset, size, header = find_box(data, b"mdat")
    middle = offset + header + (size - header) // 2
    noise = np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8).tobytes()
    return data[:middle] + noise + data[middle + length :]


def audio_only(data):
    """The file with every video track's 'trak' box retyped 'free' (offsets unchanged)."""
    out = bytearray(data)
    moov, size, header = find_box(data, b"moov")
    count = 0
    for offset, _, kind, trak_header in iter_boxes(data, moov + header, moov + size):
        if kind != b"trak":
            continue
        trak = data[offset + trak_header : offset + _box_size(data, offset)]
        handler = trak.find(b"hdlr")
        if handler >= 0 and trak[handler + 12 : handler + 16] == b"vide":
            out[offset + 4 : offset + 8] = b"free"
            count += 1
    if not count:
        raise ValueError("no video track found")
    return bytes(out)


def _box_size(data, offset):
    return struct.unpack(">I", data[offset : offset + 4])[0]


def huge_resolution(data, width_mbs=1000, height_mbs=1000):
    """The H.264 mp4 with its SPS (in 'avcC') declaring width_mbs*16 x height_mbs*16 pixels."""
    offset, size, header = find_box(
        data, b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd", b"avc1"
    )
    avcc = data.find(b"avcC", offset, offset + size) - 4
    sps_count = data[avcc + 13] & 0x1F
    if sps_count != 1:
        raise ValueError(f"expected one SPS in avcC, found {sps_count}")
    length = struct.unpack(">H", data[avcc + 14 : avcc + 16])[0]
    start = avcc + 16
    sps = patch_sps_size(data[start : start + length], width_mbs, height_mbs)
    return splice(data, avcc + 14, start + length, struct.pack(">H", len(sps)) + sps)


def extreme_aspect_video(path, frame, size=(4096, 2), count=3):
    """Writes `count` copies of `frame` resized to `size` (width, height) as an MJPEG avi."""
    writer = cv2.VideoWriter(os.fspath(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, size)
    if not writer.isOpened():
        raise RuntimeError("cv2.VideoWriter cannot write MJPG")
    for _ in range(count):
        writer.write(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    writer.release()
    return path


def one_frame_video(path, frame):
    """Writes a one-frame mp4 of `frame` (BGR) with cv2.VideoWriter."""
    height, width = frame.shape[:2]
    writer = cv2.VideoWriter(os.fspath(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (width, height))
    if not writer.isOpened():
        raise RuntimeError("cv2.VideoWriter cannot write mp4v")
    writer.write(frame)
    writer.release()
    return path


def good_clips(shared_data, count=4):
    """`count` real clips from trainlist.txt, alternating classes: relative paths."""
    lines = (pathlib.Path(shared_data) / "skateboard" / "trainlist.txt").read_text().split()
    kick = [line for line in lines if line.startswith("Kickflip/")]
    ollie = [line for line in lines if line.startswith("Ollie/")]
    picked = [clip for pair in zip(kick, ollie) for clip in pair]
    return [clip for clip in picked if clip != SOURCE_CLIP][:count]


def build_video_corpus(shared_data, out_dir, good=4):
    """Writes the bad videos (and `good` real clips) under out_dir/<Class>/.

    Returns:
        (cases, good): {case name: path} and the relative paths of the good clips.
    """
    clips = pathlib.Path(shared_data) / "skateboard"
    out_dir = pathlib.Path(out_dir)
    for name in ("Kickflip", "Ollie"):
        (out_dir / name).mkdir(parents=True, exist_ok=True)
    good_paths = good_clips(shared_data, good)
    for rel in good_paths:
        shutil.copyfile(clips / rel, out_dir / rel)
    source = (clips / SOURCE_CLIP).read_bytes()
    contents = {
        "zero_byte": b"",
        "truncated": truncated(source),
        "corrupted_middle": corrupted_middle(source),
        "text_as_mp4": b"This is a plain text file, not a video.\n" * 40,
        "audio_only": audio_only((clips / AUDIO_SOURCE).read_bytes()),
        "huge_resolution": huge_resolution(source),
        "wrong_extension_avi": source,
        "wrong_extension_txt": source,
    }
    cases = {}
    for name, (rel, _) in VIDEO_CASES.items():
        path = out_dir / rel
        cases[name] = path
        if name in contents:
            path.write_bytes(contents[name])
    one_frame_video(cases["one_frame"], first_frame(clips / SOURCE_CLIP))
    extreme_aspect_video(cases["extreme_aspect"], first_frame(clips / SOURCE_CLIP))
    return cases, good_paths


def write_video_list(path, rel_paths):
    """Writes a folder-dataset split file of `rel_paths` (one `<Class>/<video>` per line)."""
    pathlib.Path(path).write_text("".join(f"{rel}\n" for rel in rel_paths))
    return path


# --- split-file cases ----------------------------------------------------------------------


def with_blank_lines(data, every=7):
    """Inserts a blank CRLF line (and one of spaces) after every `every`-th line."""
    lines = data.split(b"\n")
    out = []
    for number, line in enumerate(lines, start=1):
        out.append(line)
        if number % every == 0:
            out.append(b"\r" if number % (2 * every) else b"   \t\r")
    return b"\n".join(out)


def build_split_corpus(shared_data, out_dir):
    """Copies of the official split files with blank lines, unknown classes and missing videos.

    Returns:
        dict of folders / files: 'ucf_blank' (UCF-101 split folder, CRLF kept, blank lines
        added), 'ucf_unknown_class' (trainlist01 with a line of an unknown class at line 3),
        'hmdb_blank' (HMDB-51 split folder with blank lines), 'hmdb_unknown_class' (an extra
        split file of a class that is not one of the 51), 'folder_unknown_class' and
        'folder_missing' (skateboard lists), plus 'unknown_line' numbers.
    """
    shared_data = pathlib.Path(shared_data)
    out_dir = pathlib.Path(out_dir)
    result = {}
    ucf = out_dir / "ucf_blank"
    ucf.mkdir(parents=True, exist_ok=True)
    for path in (shared_data / "ucf101_splits").glob("*.txt"):
        (ucf / path.name).write_bytes(with_blank_lines(path.read_bytes()))
    result["ucf_blank"] = ucf
    unknown = out_dir / "ucf_unknown_class"
    shutil.copytree(shared_data / "ucf101_splits", unknown, dirs_exist_ok=True)
    lines = (unknown / "trainlist01.txt").read_bytes().split(b"\r\n")
    lines.insert(2, b"Kickflip/v_Kickflip_g01_c01.avi 7")
    (unknown / "trainlist01.txt").write_bytes(b"\r\n".join(lines))
    result["ucf_unknown_class"] = unknown
    hmdb = out_dir / "hmdb_blank"
    hmdb.mkdir(parents=True, exist_ok=True)
    for path in (shared_data / "hmdb51_splits").glob("*.txt"):
        (hmdb / path.name).write_bytes(with_blank_lines(path.read_bytes()))
    result["hmdb_blank"] = hmdb
    hmdb_unknown = out_dir / "hmdb_unknown_class"
    shutil.copytree(hmdb, hmdb_unknown, dirs_exist_ok=True)
    (hmdb_unknown / "skateboarding_test_split1.txt").write_bytes(b"kickflip_1.avi 1 \r\n")
    result["hmdb_unknown_class"] = hmdb_unknown
    lines = (shared_data / "skateboard" / "trainlist.txt").read_text().split()
    folder_unknown = out_dir / "folder_unknown_class.txt"
    folder_unknown.write_text("\n".join([lines[0], "Heelflip/Heelflip1.mp4", *lines[1:3]]) + "\n")
    result["folder_unknown_class"] = folder_unknown
    folder_missing = out_dir / "folder_missing.txt"
    folder_missing.write_bytes(
        ("\r\n".join([lines[0], "", "Ollie/Ollie_missing.mp4", lines[1]]) + "\r\n").encode()
    )
    result["folder_missing"] = folder_missing
    folder_typo = out_dir / "folder_class_typo.txt"  # class folders that do not exist
    kick = next(line for line in lines if line.startswith("Kickflip/"))
    typos = ["Nonexist/x.mp4", "kick" + kick[4:]]  # 'kickflip/...': the case differs
    folder_typo.write_text("\n".join([lines[0], *typos, *lines[1:3]]) + "\n")
    result["folder_class_typo"] = folder_typo
    result["unknown_line"] = {"ucf_unknown_class": 3, "folder_unknown_class": 2}
    return result


# --- features, weights, pickles ------------------------------------------------------------


def write_feature_npz(path, *, num_videos=8, steps=4, dim=16, nan=False, seed=0):
    """A small (N, T, d_f) `.npz` feature file; `nan` puts NaN into video 3, step 1."""
    rng = np.random.default_rng(seed)
    features = np.abs(rng.normal(size=(num_videos, steps, dim))).astype("float32") + 1e-3
    if nan:
        features[3, 1, :5] = np.nan
    labels = (np.arange(num_videos) % 2).astype("int64")
    np.savez(path, features=features, labels=labels, class_names=np.array(["Kickflip", "Ollie"]))
    return path


def write_raw_cache(out_dir, *, num_videos=4, steps=4, dim=16, nan_video=None, seed=0):
    """A feature cache written record by record, as a foreign or older writer would.

    Bypasses `FeatureCacheWriter` (which refuses non-finite features): `nan_video` (an
    index) gets NaN features. Ids are ``Kickflip/clip<i>.mp4`` / ``Ollie/clip<i>.mp4``.

    Returns:
        The list of video ids.
    """
    import json

    import tensorflow as tf

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = ["Kickflip", "Ollie"]
    ids = []
    with tf.io.TFRecordWriter(os.fspath(out_dir / "features-00000.tfrecord")) as writer:
        for i in range(num_videos):
            video_id = f"{classes[i % 2]}/clip{i}.mp4"
            feats = np.abs(rng.normal(size=(steps, dim))).astype("float32") + 1e-3
            if i == nan_video:
                feats[1, :3] = np.nan
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "id": tf.train.Feature(
                            bytes_list=tf.train.BytesList(value=[video_id.encode()])
                        ),
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
                        "features": tf.train.Feature(
                            float_list=tf.train.FloatList(value=feats.reshape(-1))
                        ),
                        "feature_shape": tf.train.Feature(
                            int64_list=tf.train.Int64List(value=[steps, dim])
                        ),
                        "index_shape": tf.train.Feature(
                            int64_list=tf.train.Int64List(value=[0, 0])
                        ),
                    }
                )
            )
            writer.write(example.SerializeToString())
            ids.append(video_id)
    index = {
        "version": 1,
        "metadata": {"modality": "rgb", "classes": classes, "feature_dim": dim},
        "feature_shape": [steps, dim],
        "shards": [{"file": "features-00000.tfrecord", "ids": sorted(ids)}],
    }
    (out_dir / "index.json").write_text(json.dumps(index))
    return ids


def tampered_copy(source, destination, offset_fraction=0.5, count=16):
    """Copies `source` with `count` bytes inverted at `offset_fraction` of its length."""
    data = bytearray(pathlib.Path(source).read_bytes())
    start = int(len(data) * offset_fraction)
    for index in range(start, start + count):
        data[index] ^= 0xFF
    pathlib.Path(destination).write_bytes(bytes(data))
    return destination


class ShellCommand:
    """Pickles into a call of os.system: what a malicious checkpoint does when unpickled."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def malicious_pickle(path, marker):
    """A checkpoint-like pickle whose loading would `touch marker` via os.system."""
    payload = {"params": {"w": np.ones(3, "float32"), "x": ShellCommand(f"touch {marker}")}}
    pathlib.Path(path).write_bytes(pickle.dumps(payload))
    return path


def huge_array_pickle(path, nbytes=16 << 30):
    """A 75-byte protocol-0 pickle asking numpy for an uninitialised `nbytes`-byte array."""
    data = f"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I{nbytes}\ntS'b'\ntR."
    pathlib.Path(path).write_bytes(data.encode())
    return path


# --- the tally -----------------------------------------------------------------------------


@dataclasses.dataclass
class TallyRow:
    """The outcome of one corpus case."""

    case: str
    outcome: str  # e.g. "error VideoReadError", "skipped+reported", "decoded"
    message: str = ""

    def line(self, width=28, head=110, replace=None):
        text = " ".join(str(self.message).split())
        for old, new in (replace or {}).items():
            text = text.replace(old, new)
        if len(text) > head:
            text = text[: head - 3] + "..."
        return f"{self.case:<{width}} {self.outcome:<32} {text}"


def format_tally(rows, title="bad-input tally", replace=None):
    """Returns the tally as text: a title, one line per case, and a count per outcome.

    `replace` maps text in the messages to shorter text (e.g. a temporary folder to a name).
    """
    rows = list(rows)
    width = max([len(r.case) for r in rows] + [4]) + 2
    counts = {}
    for row in rows:
        key = row.outcome.split()[0]
        counts[key] = counts.get(key, 0) + 1
    summary = ", ".join(f"{count} {key}" for key, count in sorted(counts.items()))
    lines = [f"== {title}: {len(rows)} cases ({summary})"]
    lines += [row.line(width, replace=replace) for row in rows]
    return "\n".join(lines)


def main(argv=None):
    """Builds the whole corpus into a folder and lists it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=pathlib.Path)
    default = os.environ.get("RESLSTM_SHARED_DATA") or (
        pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"
    )
    parser.add_argument("--shared-data", type=pathlib.Path, default=pathlib.Path(default))
    args = parser.parse_args(argv)
    cases, good = build_video_corpus(args.shared_data, args.out_dir / "videos")
    for name, path in cases.items():
        state = f"{path.stat().st_size} bytes" if path.exists() else "absent"
        print(f"video  {name:<22} {path}  ({state}): {VIDEO_CASES[name][1]}")
    for rel in good:
        print(f"good   {rel}")
    for name, path in build_split_corpus(args.shared_data, args.out_dir / "splits").items():
        print(f"split  {name:<22} {path}")
    print(f"npz    nan                    {write_feature_npz(args.out_dir / 'nan.npz', nan=True)}")
    print(f"npz    wrong_dimension        {write_feature_npz(args.out_dir / 'dim.npz', dim=5)}")
    evil = malicious_pickle(args.out_dir / "evil.ckpt", args.out_dir / "pwned")
    print(f"pickle malicious              {evil}")
    huge = huge_array_pickle(args.out_dir / "huge.ckpt")
    print(f"pickle 16 GiB array           {huge}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
