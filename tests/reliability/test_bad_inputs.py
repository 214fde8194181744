"""The bad-input corpus (`tests.reliability.corpus`) through the real entry points.

One test per category (videos, split files, features, weights and pickles, command-line
flags) checks each case's exact error class and that the message names the input and the
problem, or the documented outcome when the input is usable (an mp4 named ``.avi`` decodes).
The batch test runs `reslstm-extract` over real clips mixed with every bad video: it
completes, reports each bad one by name with its reason, and extracts every good one.
`test_tally` prints one line per case: ``pytest -s`` shows it, and so does ``-rA``.

Two cases found real bugs, since fixed: a truncated mp4 was refused instead of read up to
where it stops (the reader counted frames the decoder returned after an error), and
training accepted NaN features from a ``.npz`` file.
"""

import dataclasses
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

from reslstm_tf import extract as extract_lib
from reslstm_tf import files as cache_lib
from reslstm_tf import training as train_lib
from reslstm_tf import zoo
from reslstm_tf.backbones import convert
from reslstm_tf.data import datasets, video
from reslstm_tf.data import feature_cache as features
from reslstm_tf.data.datasets import SplitFileError
from reslstm_tf.data.feature_cache import FeatureCacheError
from reslstm_tf.data.pipeline import load_clip
from reslstm_tf.data.video import VideoReadError
from tests.reliability import corpus
from tests.reliability.corpus import TallyRow

SOURCE_FRAMES = 56  # frames of corpus.SOURCE_CLIP
UCF_SPLIT1 = (9537, 3783)
HMDB_SPLIT1 = (3570, 1530)


@dataclasses.dataclass
class Outcome:
    """What one case gave: a value, or the exception it raised."""

    value: object = None
    error: BaseException = None

    def row(self, case, ok_text):
        if self.error is not None:
            message = str(self.error)
            if "assertion failed: " in message:  # a tf.data assertion: its own text
                message = message[message.index("assertion failed: ") :]
            return TallyRow(case, f"error {type(self.error).__name__}", message)
        return TallyRow(case, ok_text(self.value) if callable(ok_text) else ok_text, "")


def attempt(function, *args, **kwargs):
    """Runs one case; returns its `Outcome` (never raises an `Exception`)."""
    try:
        return Outcome(value=function(*args, **kwargs))
    except Exception as error:  # noqa: BLE001 - the error is the outcome
        return Outcome(error=error)


def assert_error(outcome, cls, *fragments):
    """Asserts the case raised exactly `cls` with every fragment in its message."""
    assert outcome.error is not None, f"expected {cls.__name__}, got {outcome.value!r}"
    assert type(outcome.error) is cls, repr(outcome.error)
    for fragment in fragments:
        assert str(fragment) in str(outcome.error), (fragment, str(outcome.error))


@pytest.fixture(scope="module")
def made(shared_data, tmp_path_factory):
    """The corpus, built once for the module from the real clips and split files."""
    root = tmp_path_factory.mktemp("corpus")
    videos, good = corpus.build_video_corpus(shared_data, root / "videos")
    return {
        "root": root,
        "shared": shared_data,
        "videos": videos,
        "good": good,
        "splits": corpus.build_split_corpus(shared_data, root / "splits"),
    }


class Results:
    """Runs each case once per module, on first use; `rows` feeds the tally."""

    def __init__(self, made):
        self.made = made
        self.outcomes = {}
        self.rows = {}

    def get(self, case, function, *args, ok_text="ok", **kwargs):
        if case not in self.outcomes:
            self.outcomes[case] = attempt(function, *args, **kwargs)
            self.rows[case] = self.outcomes[case].row(case, ok_text)
        return self.outcomes[case]


@pytest.fixture(scope="module")
def results(made):
    return Results(made)


# --- videos --------------------------------------------------------------------------------


def decode_case(path):
    """What `reslstm-extract` does with one video (header check, then `load_clip`)."""
    extract_lib.check_frame_size(path)
    clip, sample, info = load_clip(path, 2, 2, frame_size=32, return_info=True)
    return clip, sample, info


def _decoded_text(value):
    clip, sample, _ = value
    return f"decoded ({_frames(sample.num_frames)})"


def _frames(count):
    return f"{count} frame" + ("s" if count != 1 else "")


def video_outcome(results, name):
    path = results.made["videos"][name]
    return results.get(f"video:{name}", decode_case, path, ok_text=_decoded_text)


UNREADABLE_PROBLEMS = {
    "zero_byte": "file is empty (0 bytes)",
    "text_as_mp4": "could not open it (not a video",
    "audio_only": "could not open it (not a video",
    "huge_resolution": "its header declares 16000x16000 frames",
    "missing_on_disk": "file does not exist",
    "extreme_aspect": "4096x2 frames, an aspect ratio of 2048:1, over the limit of 16:1",
}


@pytest.mark.parametrize("name", list(corpus.VIDEO_CASES))
def test_bad_videos(results, name):
    path = results.made["videos"][name]
    outcome = video_outcome(results, name)
    if name in corpus.UNREADABLE:
        assert_error(outcome, VideoReadError, path, UNREADABLE_PROBLEMS[name])
        return
    if name in ("truncated", "corrupted_middle"):
        # Defined either way: the frames before the damage, or a clear error naming the file.
        if outcome.error is not None:
            assert isinstance(outcome.error, VideoReadError), repr(outcome.error)
            assert str(path) in str(outcome.error)
            return
        clip, sample, _ = outcome.value
        assert 0 < sample.num_frames < SOURCE_FRAMES
        assert np.all(np.isfinite(clip)) and np.abs(clip).max() <= 1
        return
    assert outcome.error is None, repr(outcome.error)
    clip, sample, _ = outcome.value
    assert clip.shape == (2, 2, 32, 32, 3)
    if name == "one_frame":  # every segment repeats the single frame
        assert sample.num_frames == 1
        assert np.all(clip == clip[0, 0])
    else:  # a real mp4 under another extension: recognised by content, decoded the same
        source = decode_case(results.made["shared"] / "skateboard" / corpus.SOURCE_CLIP)
        np.testing.assert_array_equal(clip, source[0])
        assert sample.num_frames == SOURCE_FRAMES


def test_truncated_video_reads_the_frames_that_are_there(results):
    path = results.made["videos"]["truncated"]
    clip, sample, _ = decode_case(path)
    assert sample.num_frames == video.count_frames(path)
    assert np.all(np.isfinite(clip))


# --- split files ---------------------------------------------------------------------------


def _counts(loader, folder, **kwargs):
    train = loader(folder, 1, "train", **kwargs)
    test = loader(folder, 1, "test", **kwargs)
    return len(train), len(test), len(train.problems) + len(test.problems)


def split_outcomes(results):
    splits = results.made["splits"]
    skate = results.made["shared"] / "skateboard"
    run = results.get
    return {
        "ucf_blank": run("split:ucf101 CRLF+blank lines", _counts, datasets.ucf101,
                         splits["ucf_blank"], ok_text=lambda v: f"parsed {v[0]}+{v[1]} videos"),
        "ucf_unknown_class": run("split:ucf101 unknown class", datasets.ucf101,
                                 splits["ucf_unknown_class"], 1, "train"),
        "ucf_unknown_skip": run("split:ucf101 unknown class, skip", datasets.ucf101,
                                splits["ucf_unknown_class"], 1, "train", on_error="skip",
                                ok_text=lambda v: f"skipped+reported ({len(v.problems)} line)"),
        "hmdb_blank": run("split:hmdb51 blank lines", _counts, datasets.hmdb51,
                          splits["hmdb_blank"], ok_text=lambda v: f"parsed {v[0]}+{v[1]} videos"),
        "hmdb_unknown_class": run("split:hmdb51 unknown class", datasets.hmdb51,
                                  splits["hmdb_unknown_class"], 1, "train"),
        "folder_unknown_class": run("split:folder unknown class", datasets.folder, skate,
                                    splits["folder_unknown_class"], classes=["Kickflip", "Ollie"]),
        "folder_missing": run("split:folder missing video", datasets.folder, skate,
                              splits["folder_missing"], check_files=True),
        "folder_class_typo": run("split:folder class-folder typos", datasets.folder, skate,
                                 splits["folder_class_typo"], on_error="skip",
                                 ok_text=lambda v: f"classes {v.classes}, {len(v.problems)} "
                                                   "lines skipped"),
        "folder_missing_skip": run("split:folder missing, skip", datasets.folder, skate,
                                   splits["folder_missing"], check_files=True, on_error="skip",
                                   ok_text=lambda v: f"skipped+reported ({len(v.problems)} line)"),
    }  # fmt: skip


def test_bad_split_files(results):
    out = split_outcomes(results)
    splits = results.made["splits"]
    assert out["ucf_blank"].value == (*UCF_SPLIT1, 0)  # CRLF and blank lines change nothing
    assert out["hmdb_blank"].value == (*HMDB_SPLIT1, 0)
    assert_error(
        out["ucf_unknown_class"],
        SplitFileError,
        splits["ucf_unknown_class"] / "trainlist01.txt",
        "line 3: unknown class 'Kickflip' (not in classInd.txt)",
    )
    skipped = out["ucf_unknown_skip"].value
    assert len(skipped) == UCF_SPLIT1[0]  # nothing valid lost
    assert [p.line for p in skipped.problems] == [3]
    assert_error(
        out["hmdb_unknown_class"],
        SplitFileError,
        splits["hmdb_unknown_class"] / "skateboarding_test_split1.txt",
        "unknown class 'skateboarding'",
    )
    assert_error(
        out["folder_unknown_class"],
        SplitFileError,
        splits["folder_unknown_class"],
        "line 2: unknown class 'Heelflip'",
    )
    assert_error(
        out["folder_missing"],
        SplitFileError,
        splits["folder_missing"],
        "line 3: video Ollie/Ollie_missing.mp4 not found",
    )
    kept = out["folder_missing_skip"].value
    assert len(kept) == 2 and [p.line for p in kept.problems] == [3]
    typos = out["folder_class_typo"].value  # a typo never becomes a class
    assert typos.classes == ["Kickflip", "Ollie"] and len(typos) == 3
    assert [p.line for p in typos.problems] == [2, 3]


# --- features ------------------------------------------------------------------------------

TRAIN_ARGS = dict(preset="res2", feature_dim=16, units=8, num_steps=4, epochs=1, batch_size=4)


def _train(results, name, **kwargs):
    model_dir = results.made["root"] / "runs" / name
    result = train_lib.run_training(model_dir=model_dir, progress=False, **{**TRAIN_ARGS, **kwargs})
    last = result.history[-1] if result.history else {}
    return last.get("loss", float("nan"))


def _cache_with_nan(results):
    writer = features.FeatureCacheWriter(results.made["root"] / "writer_nan", shard_size=4)
    bad = np.ones((4, 16), "float32")
    bad[2, 7] = np.nan
    return writer.add("Ollie/nan_features.mp4", 1, bad)


def feature_outcomes(results):
    root = results.made["root"]
    if not (root / "nan.npz").exists():
        corpus.write_feature_npz(root / "nan.npz", nan=True)
        corpus.write_feature_npz(root / "dim5.npz", dim=5)
        corpus.write_raw_cache(root / "cache_nan", nan_video=2)
        corpus.write_raw_cache(root / "cache_dim5", dim=5)
    trained = lambda loss: f"trained (loss {loss:.4g})"  # noqa: E731
    run = results.get
    return {
        "npz_nan": run("features:npz NaN -> train", _train, results, "npz_nan",
                       features_npz=root / "nan.npz", ok_text=trained),
        "npz_dim": run("features:npz d_f=5 -> train", _train, results, "npz_dim",
                       features_npz=root / "dim5.npz", ok_text=trained),
        "cache_nan_write": run("features:NaN -> cache writer", _cache_with_nan, results),
        "cache_nan_read": run("features:NaN cache -> read", features.read_features,
                              root / "cache_nan"),
        "cache_nan_train": run("features:NaN cache -> train", _train, results, "cache_nan",
                               features_dir=root / "cache_nan", ok_text=trained),
        "cache_dim": run("features:cache d_f=5 -> train", _train, results, "cache_dim",
                         features_dir=root / "cache_dim5", ok_text=trained),
    }  # fmt: skip


def test_bad_features(results):
    out = feature_outcomes(results)
    root = results.made["root"]
    assert_error(
        out["npz_dim"],
        train_lib.TrainingInputError,
        root / "dim5.npz",
        "dimension d_f=5 but the model expects 16",
    )
    assert_error(out["cache_nan_write"], FeatureCacheError, "'Ollie/nan_features.mp4'", "NaN")
    assert_error(
        out["cache_nan_read"], FeatureCacheError, root / "cache_nan", "Kickflip/clip2.mp4", "NaN"
    )
    # The trainer reports the dataset's failed assertion as a TrainingInputError.
    assert_error(out["cache_nan_train"], train_lib.TrainingInputError, "Kickflip/clip2.mp4")
    assert "hold NaN or infinite values" in str(out["cache_nan_train"].error)
    assert_error(
        out["cache_dim"],
        train_lib.TrainingInputError,
        root / "cache_dim5",
        "dimension d_f=5 but the model expects 16",
    )
    assert not (root / "runs" / "cache_nan" / "model.keras").exists()


def test_npz_with_nan_is_refused(results):
    out = feature_outcomes(results)
    assert_error(
        out["npz_nan"], train_lib.TrainingInputError, results.made["root"] / "nan.npz", "NaN"
    )


# --- weights and pickles -------------------------------------------------------------------


def _tampered_zoo_load(root):
    manifest = zoo.default_manifest_path()
    lab = root / "tampered_zoo"
    lab.mkdir(exist_ok=True)
    shutil.copyfile(manifest, lab / "manifest.json")
    name = zoo.info("skateboard_frozen_lstm3")["weights"]["file"]
    corpus.tampered_copy(manifest.parent / name, lab / name)
    old = {k: os.environ.get(k) for k in (zoo.MANIFEST_ENV, cache_lib.CACHE_ENV)}
    os.environ[zoo.MANIFEST_ENV] = os.fspath(lab / "manifest.json")
    os.environ[cache_lib.CACHE_ENV] = os.fspath(root / "home")
    try:
        return zoo.load("skateboard_frozen_lstm3")
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def weights_outcomes(results):
    root = results.made["root"]
    evil = corpus.malicious_pickle(root / "evil.ckpt", root / "pwned")
    huge = corpus.huge_array_pickle(root / "huge.ckpt")
    return {
        "zoo": results.get("weights:tampered zoo file", _tampered_zoo_load, root),
        "pickle": results.get("pickle:os.system payload", convert.safe_load_pickle, evil),
        "huge": results.get("pickle:16 GiB array", convert.safe_load_pickle, huge),
    }


def test_tampered_weights_and_malicious_pickle(results):
    out = weights_outcomes(results)
    root = results.made["root"]
    assert_error(
        out["zoo"],
        cache_lib.ChecksumError,
        root / "tampered_zoo" / zoo.info("skateboard_frozen_lstm3")["weights"]["file"],
        "tampered",
    )
    assert_error(out["pickle"], pickle.UnpicklingError, "forbidden global")
    assert "system" in str(out["pickle"].error)
    assert not (root / "pwned").exists()  # the payload never ran
    assert_error(out["huge"], pickle.UnpicklingError, "declares an array of 17179869184 bytes")


# --- command-line flags --------------------------------------------------------------------


def _cli_env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("RESLSTM_FAULT", None)
    return env


def flag_cases(made):
    """(case, command, expected message) of out-of-range flags on the two main tools."""
    data = made["shared"] / "skateboard"
    root = made["root"]
    npz = root / "flags.npz"
    if not npz.exists():
        corpus.write_feature_npz(npz)
    extract = [
        sys.executable,
        "-m",
        "reslstm_tf.cli.extract",
        f"--data_dir={data}",
        f"--out_dir={root / 'flag_out'}",
    ]
    train = [
        sys.executable,
        "-m",
        "reslstm_tf.cli.train",
        f"--model_dir={root / 'flag_run'}",
        f"--features_npz={npz}",
        "--feature_dim=16",
        "--num_steps=4",
        "--noprogress",
    ]
    return [
        ("extract --segments=0", [*extract, "--segments=0"], "flag --segments=0: 0 is not"),
        ("extract --batch_size=-1", [*extract, "--batch_size=-1"], "flag --batch_size=-1"),
        ("extract --segment_len=0", [*extract, "--segment_len=0"], "flag --segment_len=0"),
        ("extract --split=4", [*extract, "--dataset=ucf101", "--split=4"], "flag --split=4"),
        ("extract --limit=0", [*extract, "--limit=0"], "flag --limit=0"),
        ("extract --shard_index=2", [*extract, "--num_shards=2", "--shard_index=2"],
         "--shard_index must be in [0, --num_shards). Received: --shard_index=2"),
        ("train --dropout=1.5", [*train, "--dropout=1.5"],
         "dropout must be in [0, 1). Received: dropout=1.5"),
        ("train --batch_size=-1", [*train, "--batch_size=-1"], "flag --batch_size=-1"),
        ("train --num_steps=0", [*train, "--num_steps=0"], "flag --num_steps=0"),
        ("train --weight_decay=inf", [*train, "--weight_decay=inf"],
         "weight_decay must be a finite number >= 0"),
        ("train --learning_rate=nan", [*train, "--learning_rate=nan"],
         "learning_rate must be a finite positive number"),
    ]  # fmt: skip


def _run_flag_cases(made):
    """Runs every flag case (2 at a time); returns {case: (returncode, stderr)}."""
    cases = flag_cases(made)
    done, running = {}, []
    for case, command, _ in cases:
        process = subprocess.Popen(
            command, env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        running.append((case, process))
        while len(running) >= 2 or (running and len(done) + len(running) == len(cases)):
            name, oldest = running.pop(0)
            _, err = oldest.communicate(timeout=300)
            done[name] = (oldest.returncode, err)
    return done


def flag_outcomes(results):
    if "flags" not in results.outcomes:
        results.outcomes["flags"] = Outcome(value=_run_flag_cases(results.made))
        for case, _, _ in flag_cases(results.made):
            code, err = results.outcomes["flags"].value[case]
            lines = [line for line in err.splitlines() if "error" in line or "must be" in line]
            head = lines[-1] if lines else (err.strip().splitlines() or [""])[-1]
            outcome = f"exit {code}" if code else "exit 0 (accepted)"
            results.rows[f"flag:{case}"] = TallyRow(f"flag:{case}", outcome, str(head))
    return results.outcomes["flags"].value


@pytest.mark.slow
def test_out_of_range_flags(results):
    runs = flag_outcomes(results)
    for case, _, message in flag_cases(results.made):
        code, err = runs[case]
        # A mistake is one line with exit status 2 (`reslstm_tf.cli.run_tool`).
        assert code == 2, (case, code, err[-2000:])
        assert message in err, (case, err[-2000:])
        assert "Traceback" not in err, (case, err[-2000:])
    assert not (results.made["root"] / "flag_run" / "checkpoints").exists()


# --- the batch job -------------------------------------------------------------------------


def _run_batch(made):
    """`reslstm-extract` over good clips, every bad video, a blank and a malformed line."""
    listed = [corpus.VIDEO_CASES[name][0] for name in corpus.VIDEO_CASES]
    good = made["good"]
    lines = [good[0], good[1], "", *listed[:5], "Kickflip/too/deep.mp4", *listed[5:], *good[2:]]
    split_file = made["root"] / "batch.txt"
    split_file.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    out_dir = made["root"] / "batch_cache"
    command = [
        sys.executable, "-m", "reslstm_tf.cli.extract", "--dataset=folder",
        f"--data_dir={made['root'] / 'videos'}", f"--split_file={split_file}",
        f"--out_dir={out_dir}", "--segments=2", "--segment_len=2", "--batch_size=4",
    ]  # fmt: skip
    result = subprocess.run(
        command, env=_cli_env(), capture_output=True, text=True, timeout=900, check=False
    )
    return result, out_dir, split_file


def batch_outcome(results):
    if "batch" in results.outcomes:
        return results.outcomes["batch"].value
    result, out_dir, split_file = _run_batch(results.made)
    value = {"result": result, "out_dir": out_dir, "split_file": split_file, "records": {}}
    if result.returncode == 0:
        value["records"] = {r["id"]: r for r in features.read_features(out_dir)}
    results.outcomes["batch"] = Outcome(value=value)
    reported = {}
    for line in result.stdout.splitlines():
        if line.startswith("failed: "):
            video_id, _, reason = line[len("failed: ") :].partition(": ")
            reported[video_id] = reason
    value["reported"] = reported
    for name, (rel, _) in corpus.VIDEO_CASES.items():
        if rel in value["records"]:
            frames = _frames(value["records"][rel]["num_frames"])
            row = TallyRow(f"batch:{name}", f"extracted ({frames})")
        elif rel in reported:
            row = TallyRow(f"batch:{name}", "skipped+reported", reported[rel])
        else:
            row = TallyRow(f"batch:{name}", "LOST: neither extracted nor reported")
        results.rows[f"batch:{name}"] = row
    problems = [line for line in result.stdout.splitlines() if line.startswith("skipped split")]
    results.rows["batch:malformed split line"] = TallyRow(
        "batch:malformed split line",
        "skipped+reported" if problems else "NOT REPORTED",
        problems[0].split(": ", 1)[-1] if problems else "",
    )
    summary = [line for line in result.stdout.splitlines() if line.startswith("done ")]
    results.rows["batch:exit"] = TallyRow(
        "batch:reslstm-extract", f"exit {result.returncode}", summary[0] if summary else ""
    )
    return value


@pytest.mark.slow
def test_batch_extraction_reports_bad_videos_and_keeps_good_ones(results):
    batch = batch_outcome(results)
    result, records, reported = batch["result"], batch["records"], batch["reported"]
    assert result.returncode == 0, result.stderr[-3000:]
    videos = results.made["videos"]
    for name in corpus.UNREADABLE:
        rel = corpus.VIDEO_CASES[name][0]
        assert rel not in records
        assert reported[rel].startswith(f"VideoReadError: cannot read video {videos[name]}: ")
        assert UNREADABLE_PROBLEMS[name] in reported[rel], (name, reported[rel])
    must_extract = [*results.made["good"], *(corpus.VIDEO_CASES[n][0] for n in (
        "one_frame", "wrong_extension_avi", "wrong_extension_txt"))]  # fmt: skip
    for rel in must_extract:  # nothing valid is lost
        assert rel in records, (rel, reported.get(rel))
        assert records[rel]["features"].shape == (2, 1024)
        assert np.all(np.isfinite(records[rel]["features"]))
    for name in ("truncated", "corrupted_middle"):  # extracted or reported, never lost
        rel = corpus.VIDEO_CASES[name][0]
        assert (rel in records) != (rel in reported), name
        if rel in records:
            assert records[rel]["num_frames"] < SOURCE_FRAMES
        else:
            assert reported[rel].startswith(("VideoReadError", "VideoTooShortError")), name
    assert set(records) | set(reported) == {
        *results.made["good"],
        *(rel for rel, _ in corpus.VIDEO_CASES.values()),
    }
    assert f"failed {len(reported)} (see" in result.stdout
    assert "line 9: expected '<Class>/<video>' [label]" in result.stdout
    assert f"{batch['split_file']}, line 9" in result.stdout


# --- the tally -----------------------------------------------------------------------------


@pytest.mark.slow
def test_tally(results):
    """Runs every case (reusing the ones already run) and prints one line per case."""
    for name in corpus.VIDEO_CASES:
        video_outcome(results, name)
    split_outcomes(results)
    feature_outcomes(results)
    weights_outcomes(results)
    flag_outcomes(results)
    batch_outcome(results)
    rows = list(results.rows.values())
    text = corpus.format_tally(rows, replace={str(results.made["root"]): "<corpus>"})
    print("\n" + text)
    assert len(rows) >= 40
    lost = [row.case for row in rows if row.outcome.startswith(("LOST", "NOT REPORTED"))]
    assert not lost, lost
