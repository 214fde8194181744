"""`reslstm-zoo`: list, info and the verbs it refuses, from the shell."""

import json

import pytest

from reslstm_tf import zoo
from tests.cli.helpers import run_cli


def _error_lines(stderr):
    """The tool's own lines of stderr (TensorFlow's start-up logs aside), no traceback."""
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("reslstm-zoo")]


@pytest.mark.slow
def test_zoo_list_and_info():
    listed = run_cli("zoo", "list")
    assert listed.returncode == 0, listed.stderr[-2000:]
    rows = listed.stdout.strip().splitlines()
    assert len(rows) == len(zoo.list())
    assert any(r.startswith("hmdb51_res3") and "not published" in r for r in rows)
    info = run_cli("zoo", "info", "ucf101_twostream_res3", "--json")
    assert json.loads(info.stdout)["architecture"]["fusion"] == "product"
    card = run_cli("zoo", "info", "ucf101_twostream_res3").stdout  # readable text by default
    assert card.startswith("ucf101_twostream_res3") and "{" not in card.splitlines()[0]
    bad = run_cli("zoo", "info", "ucf101_rez3")
    assert bad.returncode == 2 and "Did you mean 'ucf101_res3'" in bad.stderr
    (line,) = _error_lines(bad.stderr)
    assert line.startswith("reslstm-zoo: error: unknown zoo entry 'ucf101_rez3'. Did you mean ")
    assert line.endswith(f"? `reslstm-zoo list` gives all {len(zoo.list())} entries.")


@pytest.mark.slow
def test_bad_verbs_and_missing_flags_are_refused():
    result = run_cli("zoo", "launch")
    assert result.returncode == 2
    assert "give one of list, info, publish. Received: ['launch']" in result.stdout + result.stderr
    result = run_cli("zoo", "publish", "--name=x")
    assert result.returncode == 2
    assert "publish needs --entry_json, --model or --model_dir" in result.stdout + result.stderr
    result = run_cli("zoo", "publish", "--name=../x", "--model=m.keras", "--entry_json=e.json")
    assert result.returncode == 2
    assert _error_lines(result.stderr) == [
        "reslstm-zoo: error: the entry name must be a plain name (letters, digits, '._+-', "
        "no path, not hidden). Received: '../x'"
    ]


@pytest.mark.slow
def test_publish_from_the_shell(tmp_path):
    from reslstm_tf.models import build_single_stream

    build_single_stream(3, "res2", feature_dim=8, units=8, num_steps=4).save(
        tmp_path / "model.keras"
    )
    entry = {
        **zoo.info("hmdb51_res2"),
        "dataset": {"name": "lab", "classes": "hmdb51_classes.txt", "num_classes": 3},
        "architecture": {"kind": "single_stream", "preset": "res2", "units": 8, "num_steps": 4},
        "features": {"feature_dim": 8},
    }
    (tmp_path / "entry.json").write_text(json.dumps(entry))
    manifest = tmp_path / "zoo" / "manifest.json"
    result = run_cli(
        "zoo",
        "publish",
        f"--model={tmp_path / 'model.keras'}",
        "--name=lab_res2",
        f"--entry_json={tmp_path / 'entry.json'}",
        f"--manifest={manifest}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    sha256 = json.loads(manifest.read_text())["entries"]["lab_res2"]["weights"]["sha256"]
    assert f"published lab_res2: lab_res2-{sha256[:8]}.weights.h5 sha256 {sha256}" in (
        result.stdout
    )
