"""Two `reslstm-extract` processes started at once into one `out_dir`.

Without a lock both wrote the folder's one index: the cache ended with some videos twice,
some missing, an index naming other videos than its shards, and a rerun that skipped the
missing ones. Now the second writer is refused in one line naming the first one's pid
(exit 2) before it touches the cache; run again after the first, it extracts what is left.
Each test starts two real processes on real clips (the same list in two orders, or two
disjoint lists), then checks the cache: every video exactly once, in the index and in the
shards.
"""

import subprocess

import pytest

from tests.reliability.test_extract_faults import FLAGS, _env, check_cache, extract_command

pytestmark = pytest.mark.slow

CLIPS = 6


def _lists(shared_data, tmp_path, kind):
    """Two split files over the same 6 clips: the same in two orders, or two halves."""
    data_dir = shared_data / "skateboard"
    clips = (data_dir / "trainlist.txt").read_text().split()[:CLIPS]
    if kind == "reversed":
        halves = (clips, clips[::-1])
    else:
        halves = (clips[: CLIPS // 2], clips[CLIPS // 2 :])
    paths = []
    for number, listed in enumerate(halves):
        path = tmp_path / f"list{number}.txt"
        path.write_text("\n".join(listed) + "\n")
        paths.append(path)
    return data_dir, paths, clips


def _start(data_dir, split_file, out_dir):
    command = extract_command(data_dir, split_file, out_dir, *FLAGS)
    return subprocess.Popen(
        command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.parametrize("kind", ["reversed", "disjoint"])
def test_two_writers_at_once_never_mix_their_records(shared_data, tmp_path, kind):
    data_dir, lists, clips = _lists(shared_data, tmp_path, kind)
    out_dir = tmp_path / "cache"
    processes = [_start(data_dir, split_file, out_dir) for split_file in lists]
    results = [(p, *p.communicate(timeout=900)) for p in processes]
    refused = [(p, err) for p, _, err in results if p.returncode != 0]
    finished = [(p, out) for p, out, _ in results if p.returncode == 0]
    # One held the folder for its whole run; the other, started at the same moment, was
    # refused before building its backbone (it cannot have waited for the whole run).
    states = [(p.returncode, e[-1500:]) for p, _, e in results]
    assert len(finished) == 1 and len(refused) == 1, states
    process, err = refused[0]
    assert process.returncode == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("reslstm-extract")]
    assert len(lines) == 1, err[-3000:]  # one line (TensorFlow's own logs aside)
    start = f"reslstm-extract: error: feature cache '{out_dir}' is in use by pid"
    assert lines[0].startswith(f"{start} {finished[0][0].pid} "), lines[0]
    assert lines[0].endswith("wait for it to finish, or use another folder")
    # The refused run, run again, extracts what the first left.
    again = subprocess.run(
        process.args, env=_env(), capture_output=True, text=True, timeout=900, check=False
    )
    assert again.returncode == 0, again.stderr[-3000:]
    skipped = CLIPS if kind == "reversed" else 0
    assert f"skipped {skipped} (already cached)" in again.stdout, again.stdout
    # Nothing failed: no pointer to failures.json; what to run next is said.
    assert "failed 0, " in again.stdout and "see " not in again.stdout, again.stdout
    assert f"next: reslstm-train --features_dir={out_dir} " in again.stdout, again.stdout
    check_cache(out_dir, clips)  # every video exactly once, index and shards agree
