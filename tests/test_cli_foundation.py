"""The CLI skeleton as a user meets it: version, info, global options, bad input."""
from __future__ import annotations

import json
import os

import pytest

from sgtool import __version__


def snapshot(root):
    """Every file under root with its size and mtime: 'nothing changed' means this is equal."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            stat = os.stat(path)
            out[path] = (stat.st_size, stat.st_mtime_ns)
    return out


def test_version(cli):
    result = cli("--version")
    assert result.code == 0 and result.out.strip() == f"sgtool {__version__}"


def test_prepare_then_info_reports_counts(cli, tmp_path):
    ws = tmp_path / "ws"
    assert cli("-w", ws, "prepare", "synth", "--images", "50", "--seed", "1", "--quiet").code == 0
    result = cli("-w", ws, "info", "--json")
    assert result.code == 0
    info = json.loads(result.out)
    counts = info["datasets"]["synth"]["counts"]
    assert {split: c["images"] for split, c in counts.items()} == {"train": 35, "val": 5, "test": 10}
    assert sum(c["objects"] for c in counts.values()) > 100
    assert info["datasets"]["synth"]["priors"] is True
    table = cli("-w", ws, "info")
    assert table.code == 0 and "synth" in table.out and "train" in table.out
    assert info["datasets"]["synth"]["status"] == "ok"


def _status(cli, ws, *options) -> str:
    result = cli("-w", ws, "info", "--json", *options)
    assert result.code == 0, result.err
    return json.loads(result.out)["datasets"]["synth"]["status"]


def test_info_names_what_is_damaged(cli, tmp_path):
    ws = tmp_path / "ws"
    assert cli("-w", ws, "prepare", "synth", "--images", "12", "--workers", "1", "-q").code == 0
    folder = ws / "data" / "synth"
    image = sorted((folder / "images").iterdir())[0]
    image.write_bytes(image.read_bytes()[:-1] + b"x")
    assert _status(cli, ws) == "ok"  # images are only checked with --verify
    assert _status(cli, ws, "--verify") == f"changed images/{image.name}"
    (folder / "image_data.json").unlink()
    assert _status(cli, ws) == "missing image_data.json"
    with open(folder / "sgg.h5", "r+b") as handle:
        handle.truncate(300)
    (folder / "image_data.json").write_text("[]")
    assert _status(cli, ws) == "sgg.h5 unreadable"


def test_workspace_from_environment(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("SGTOOL_WORKSPACE", str(tmp_path / "env-ws"))
    assert cli("prepare", "synth", "--images", "5", "-q").code == 0
    assert (tmp_path / "env-ws" / "data" / "synth" / "sgg.h5").exists()


@pytest.mark.parametrize("args, words", [
    (["prepare", "nosuch"], "No such command"),
    (["prepare", "synth", "--images", "0"], "--images"),
    (["prepare", "synth", "--size", "8"], "--size"),
    (["prepare", "synth", "--images", "5", "--seed", "9"], "other parameters"),
    (["--device", "tpu", "info"], "--device"),
])
def test_bad_input_is_one_sentence_exit_2_and_changes_nothing(cli, tmp_path, args, words):
    ws = tmp_path / "ws"
    assert cli("-w", ws, "prepare", "synth", "--images", "5", "-q").code == 0
    before = snapshot(ws)
    result = cli("-w", ws, *args)
    assert result.code == 2
    assert words in result.err
    assert "Traceback" not in result.err + result.out
    assert snapshot(ws) == before


def test_unwritable_workspace(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = cli("-w", blocker / "ws", "prepare", "synth", "--images", "5")
    assert result.code == 2
    assert "not writable" in result.err and "Traceback" not in result.err
    assert blocker.read_text() == "not a folder"


def test_corrupt_dataset_file_is_reported_not_raised(cli, tmp_path):
    ws = tmp_path / "ws"
    cli("-w", ws, "prepare", "synth", "--images", "5", "-q")
    h5 = ws / "data" / "synth" / "sgg.h5"
    h5.write_bytes(h5.read_bytes()[:100])
    from sgtool.data.prepared import load_prepared
    from sgtool.errors import SgtoolError
    from sgtool.workspace import Workspace

    with pytest.raises(SgtoolError, match="sgg.h5"):
        load_prepared(Workspace(ws))


def test_info_refuses_a_file_as_workspace(cli, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    result = cli("-w", a_file, "info")
    assert result.code == 2 and "is a file, not a folder" in result.err
    assert a_file.read_text() == "mine"
