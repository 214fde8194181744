"""`reslstm-train` and `reslstm-eval` refuse a feature cache that is still being written.

Before, `reslstm-train` started while `reslstm-extract` was writing trained on the videos
indexed so far and exited 0, and so did `reslstm-eval`. Now both stop in one line naming the
writer's pid (exit 2): the process holding the cache's lock, or the one that wrote an index
it never sealed. Each test uses real processes: the holder, and the tool.
"""

import json
import signal
import subprocess
import sys

import pytest

from tests.reliability.test_cache_readers import HOLDER
from tests.training.helpers import TINY_FLAGS, cli_env, tool_lines, write_cache_root

pytestmark = pytest.mark.slow


def _tool(module, *flags):
    return subprocess.run(
        [sys.executable, "-m", f"reslstm_tf.cli.{module}", *flags, "--noprogress"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _one_line(result, tool):
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    lines = tool_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), lines
    return lines[0]


def _unseal(cache, writer):
    index_path = cache / "index.json"
    index = json.loads(index_path.read_text())
    index.update(complete=False, writer=writer)
    index_path.write_text(json.dumps(index))


def test_train_and_eval_refuse_a_cache_being_written(tmp_path):
    root = tmp_path / "features"
    write_cache_root(root)
    model_dir = tmp_path / "run"
    base = [f"--features_dir={root}", "--modality=rgb", *TINY_FLAGS]
    trained = _tool("train", *base, f"--model_dir={model_dir}", "--epochs=1", "--batch_size=8")
    assert trained.returncode == 0, trained.stderr[-3000:]

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root / "test" / "rgb")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        evaluated = _tool("eval", f"--model_dir={model_dir}", f"--features_dir={root}")
        line = _one_line(evaluated, "reslstm-eval")
        assert f"is still being written by pid {holder.pid} " in line, line
        assert not (model_dir / "eval_test").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert _tool("eval", f"--model_dir={model_dir}", f"--features_dir={root}").returncode == 0

    _unseal(root / "train" / "rgb", "pid 4242")  # a writer killed before it finished
    again = _tool("train", *base, f"--model_dir={tmp_path / 'run2'}", "--epochs=1")
    line = _one_line(again, "reslstm-train")
    assert "is incomplete: index.json is not sealed, its writer (pid 4242)" in line, line
    assert not (tmp_path / "run2" / "model.keras").exists()


def test_extract_with_another_sharding_into_a_finished_cache_is_refused(shared_data, tmp_path):
    from tests.data.test_feature_cache import write
    from tests.reliability.test_extract_faults import FLAGS, _env, extract_command

    data_dir = shared_data / "skateboard"
    split_file = tmp_path / "list.txt"
    split_file.write_text("\n".join((data_dir / "trainlist.txt").read_text().split()[:3]) + "\n")
    cache = tmp_path / "cache"
    write(cache, range(3))  # a finished single-writer cache
    before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    command = extract_command(data_dir, split_file, cache, *FLAGS, "--num_shards=2")
    result = subprocess.run(
        [*command, "--shard_index=0"], env=_env(), capture_output=True, text=True, timeout=300
    )
    line = _one_line(result, "reslstm-extract")
    assert "already holds a feature cache written with --num_shards=1 (index.json)" in line
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == before
