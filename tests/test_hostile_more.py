"""Issue 34: one writer per run and dataset, no input that hangs or overflows, no traceback left.

Each case ends in exit code 0 (valid input) or 2 with one sentence, and a refused command leaves the
workspace byte for byte as it was. A concurrent writer is played by this test process holding the lock.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from sgg_fixtures import save_tiny
from sgtool import atomic, inputs
from sgtool.data.predictions import read_predictions
from sgtool.errors import SgtoolError
from sgtool.workspace import Workspace
from test_hostile import refused, snapshot, trained

TENSOR = ("train", "--head", "tensor", "--epochs", "1", "--set", "sel_epochs=0")
LAUNCH = "import sys; from sgtool.cli import main; main(sys.argv[1:])"


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    return ws


def sgtool_process(*args, timeout: int = 120, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    """sgtool in a process of its own (for what could hang or take the process down)."""
    def file_size_limit() -> None:  # writes beyond it fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-c", LAUNCH, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout, preexec_fn=file_size_limit if limit_bytes else None)


def unfinished(cli, ws: Workspace, name: str = "t") -> Path:
    """A tensor run that run.json says is still running (as a killed one is), resumable from its last.pt."""
    assert cli("-w", ws.root, "-q", *TENSOR, "--name", name).code == 0
    run = ws.run_dir(name)
    (run / "run.json").write_text(json.dumps({**json.loads((run / "run.json").read_text()), "status": "running"}))
    return run


# ---------------------------------------------------------------- 1, 2: one writer per run and dataset

def test_a_second_writer_of_a_run_is_refused_while_the_first_holds_it(ws, cli):
    run = unfinished(cli, ws)
    before = snapshot(ws.root)
    with ws.training("t", "tiny"):  # a `train --resume t` in progress
        refused(cli("-w", ws.root, "train", "--resume", "t"), "Another sgtool process", "the run 't'")
        refused(cli("-w", ws.root, "prepare", "synth", "--images", "4", "--name", "tiny", "--force"),
                "training run 't' on the dataset 'tiny'")
    assert snapshot(ws.root) == before
    assert not (ws.root / "runs" / ".t.lock").exists()  # the run's lock goes with its writer
    assert cli("-w", ws.root, "-q", "train", "--resume", "t").code == 0
    assert json.loads((run / "run.json").read_text())["status"] == "complete"


def test_a_run_does_not_start_on_a_dataset_being_replaced(ws, cli):
    with atomic.exclusive(ws.data_dir("tiny"), "the dataset 'tiny'"):  # a `prepare --force` in progress
        refused(cli("-w", ws.root, "train", "--head", "freq", "--name", "f"), "is writing the dataset 'tiny'")
    assert ws.runs() == []


def test_resume_on_a_dataset_prepared_again_is_refused(ws, cli):
    unfinished(cli, ws)
    assert "dataset_sha256: " in (ws.run_dir("t") / "config.yaml").read_text()
    shutil.rmtree(ws.data_dir("tiny"))
    save_tiny(ws, seed=1)  # same name, other content
    before = snapshot(ws.root)
    refused(cli("-w", ws.root, "train", "--resume", "t"), "was prepared again since run 't' started")
    assert snapshot(ws.root) == before


# ---------------------------------------------------------------- 4, 7, 12: files that hang, overflow or repeat keys

def test_a_config_fifo_or_device_is_refused_without_blocking(ws, tmp_path):
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        done = sgtool_process("-w", ws.root, "train", "--head", "tensor", "--config", path, timeout=120)
        assert done.returncode == 2 and "not a regular file" in done.stderr and "Traceback" not in done.stderr


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.json"
    path.write_text("[" + "0," * 50 + "0]")
    with pytest.raises(SgtoolError, match="more than the 0 MB"):
        inputs.read_text(path, "The file", 64, "hint")
    assert inputs.read_text(path, "The file", 1 << 20, "hint").startswith("[0,")


@pytest.mark.parametrize("text, words", [
    ("epochs: 1\nepochs: 2\n", "the key 'epochs' is given twice"),
    ("1: 2\n", "The key 1 is not a setting name"),
    ("null: 2\n", "The key None is not a setting name"),
    ("a: " + "[" * 100_000 + "\n", "nested more than 100 levels deep"),
    ("a:\n" + "".join(" " * i + "- \n" for i in range(1, 400)), "nested more than 100 levels deep"),
])
def test_a_config_with_repeated_odd_or_deep_keys_is_one_sentence(ws, cli, tmp_path, text, words):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    before = snapshot(ws.root)
    refused(cli("-w", ws.root, "train", "--head", "tensor", "--config", path), words)
    assert snapshot(ws.root) == before


@pytest.mark.parametrize("text, words", [
    ("[" * 100_000 + "]" * 100_000, "too many levels deep"),
    ('{"objects": [], "objects": [], "relations": []}', "gives the key 'objects' twice"),
])
def test_json_nested_too_deep_or_with_a_repeated_key_is_one_sentence(ws, cli, tmp_path, text, words):
    path = tmp_path / "g.json"
    path.write_text(text)
    refused(cli("draw", path, "--out", tmp_path / "g.png"), words)
    refused(cli("-w", ws.root, "prepare", "custom", "--source", path, "--name", "c"), words)
    assert "c" not in ws.datasets()


# ---------------------------------------------------------------- 6, 11: numbers out of range

@pytest.mark.parametrize("setting", ["epochs=.inf", "epochs=1.0e+400", "rank=100000000000000000000", "lr=inf",
                                     "grad_clip=.nan", "weight_decay=.inf", "minutes=.nan",
                                     "batch_size=99999999999999999999"])
def test_every_number_setting_is_finite_and_in_range_before_anything_is_written(ws, cli, setting):
    before = snapshot(ws.root)
    refused(cli("-w", ws.root, "train", "--head", "tensor", "--set", setting), "The setting " + setting.split("=")[0])
    assert snapshot(ws.root) == before and ws.runs() == []


def test_an_override_of_a_value_and_its_part_is_one_sentence(ws, cli):
    refused(cli("-w", ws.root, "train", "--head", "tensor", "--set", "rank=1", "--set", "rank.x=2"), "plain value")


# ---------------------------------------------------------------- 12: --k and --metric

def test_k_and_metric_take_ascii_integers_and_names_as_written(ws, cli):
    trained(cli, ws)
    for option in (("--k", "5_0"), ("--k", "\u0665\u0660"), ("--k", "+50"), ("--metric", "r@50"),
                   ("--metric", "R@5_0"), ("--metric", "R@\u0665\u0660")):
        refused(cli("-w", ws.root, "eval", *option), option[1])
    assert cli("-w", ws.root, "-q", "eval", "--k", "50", "--metric", "R@50").code == 0


# ---------------------------------------------------------------- 8: predictions written by someone else

def _restore(path: Path, change) -> None:
    with h5py.File(path, "r+") as h5:
        change(h5)


def _pairs_as_bytes(h5) -> None:
    del h5["pairs"]
    h5["pairs"] = np.bytes_(b"0123")


def _scalar_boxes(h5) -> None:
    del h5["boxes"]
    h5["boxes"] = 1.0


CHANGES = [
    (lambda h5: h5.attrs.__setitem__("meta", "{not json"), "not a JSON object"),
    (lambda h5: h5.attrs.__setitem__("meta", "[1, 2]"), "not a JSON object"),
    (_pairs_as_bytes, "stores pairs as"),
    (_scalar_boxes, "stores boxes as 0-d"),
]


def test_a_predictions_file_of_odd_types_is_refused_by_eval(ws, cli):
    path = trained(cli, ws) / "predictions" / "test.h5"
    good = path.read_bytes()
    for change, words in CHANGES:
        path.write_bytes(good)
        _restore(path, change)
        before = snapshot(ws.root)
        refused(cli("-w", ws.root, "eval", "--run", "run"), words)
        assert snapshot(ws.root) == before


def test_predictions_for_an_earlier_preparation_say_so(ws, cli):
    run = trained(cli, ws)
    path = run / "predictions" / "test.h5"
    predictions = read_predictions(path)
    _restore(path, lambda h5: h5.attrs.__setitem__("meta", json.dumps({**predictions.meta,
                                                                       "vocabulary_fingerprint": "0" * 16})))
    refused(cli("-w", ws.root, "eval", "--run", "run"), "an earlier preparation of 'tiny'", "Train the run again")


# ---------------------------------------------------------------- 3, 9, 13, 15: predict

def test_graph_names_never_clash():
    from sgtool.engine.predict import graph_names

    names = graph_names([Path("d1/same.png"), Path("d2/same.png"), Path("same.jpg"), Path("other.png"),
                         Path("d3/same-2.png")])
    assert names == ["same.graph.json", "same-2.graph.json", "same-3.graph.json", "other.graph.json",
                     "same-2-2.graph.json"]
    assert len(set(names)) == len(names)


def test_predict_out_is_checked_before_any_model_loads(ws, tmp_path):
    from sgtool.engine.predict import output_folder

    fifo, loop, file = tmp_path / "fifo", tmp_path / "loop", tmp_path / "file"
    os.mkfifo(fifo)
    loop.symlink_to(loop)
    file.write_text("x")
    for out, words in ((fifo, "is not a folder"), (file, "is not a folder"), (Path("/dev/full"), "is not a folder"),
                       (loop, "symbolic links"), (ws.root / "runs" / "x", "inside the workspace's runs/"),
                       (ws.data_dir("tiny"), "inside the workspace's data/")):
        with pytest.raises(SgtoolError, match=words):
            output_folder(ws, out)
    assert output_folder(ws, tmp_path / "new" / "folder").is_dir()
    assert not (ws.root / "runs").exists()


def test_an_image_too_thin_for_the_detector_is_one_sentence(tmp_path):
    from PIL import Image

    from sgtool.engine.predict import read_user_image

    Image.new("RGB", (5000, 1)).save(tmp_path / "thin.png")
    with pytest.raises(SgtoolError, match="5000 x 1 pixels"):
        read_user_image(tmp_path / "thin.png")
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    assert read_user_image(tmp_path / "dot.png").shape == (3, 1, 1)


def test_a_workspace_that_is_a_file_is_named(tmp_path, cli):
    file = tmp_path / "file"
    file.write_text("x")
    refused(cli("-w", file, "train"), "is a file, not a folder")
    refused(cli("-w", file, "prepare", "synth", "--images", "4"), "is a file, not a folder")
    assert file.read_text() == "x"


# ---------------------------------------------------------------- 5, 13: prepare

def test_an_image_with_too_many_objects_is_one_sentence(tmp_path, cli):
    objects = [{"box": [i % 90, i % 80, i % 90 + 5, i % 80 + 5], "label": "a"} for i in range(2001)]
    records = [{"file": None, "width": 100, "height": 100, "split": split, "objects": objects[:n],
                "relations": [{"subject": 0, "predicate": "on", "object": 1}]} for split, n in (("train", 2001), ("test", 2))]
    source = tmp_path / "big.json"
    source.write_text(json.dumps(records))
    refused(cli("-w", tmp_path / "ws", "prepare", "custom", "--source", source), "2,001 objects", "2,000 per image")
    assert not (tmp_path / "ws" / "data").exists()  # a failed first prepare leaves no empty data/


def test_a_disk_filling_up_during_prepare_is_one_sentence(tmp_path):
    done = sgtool_process("-w", tmp_path / "ws", "prepare", "synth", "--images", "60", "--workers", "1",
                          limit_bytes=30_000)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.count("Error: ") == 1 and not (tmp_path / "ws" / "data").exists()


# ---------------------------------------------------------------- 10, 14: draw

def test_draw_of_absurd_boxes_and_a_missing_image(tmp_path, cli):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "img.png")
    graph = {"width": 64, "height": 64, "relations": [{"subject": 0, "predicate": "on", "object": 1, "score": 0.5}],
             "objects": [{"id": 0, "label": "a", "box": [0, 0, 1e308, 1e308]},
                         {"id": 1, "label": "\u4e2d", "box": [-1e308, 3, 10, 10]}]}
    for image in ("img.png", "missing.png"):
        (tmp_path / "g.json").write_text(json.dumps({**graph, "image": image}))
        done = cli("draw", tmp_path / "g.json", "--out", tmp_path / "g.png")
        assert done.code == 0 and (tmp_path / "g.png").stat().st_size > 0
        assert ("drawn without it" in done.err) == (image == "missing.png")


def test_quiet_keeps_matplotlib_warnings_off_the_terminal(tmp_path):
    graph = {"image": None, "width": 64, "height": 64, "relations": [],
             "objects": [{"id": 0, "label": "\u4e2d\u6587", "box": [0, 0, 10, 10]}]}
    (tmp_path / "g.json").write_text(json.dumps(graph))
    loud = sgtool_process("draw", tmp_path / "g.json", "--out", tmp_path / "g.png")
    quiet = sgtool_process("-q", "draw", tmp_path / "g.json", "--out", tmp_path / "q.png")
    assert loud.returncode == quiet.returncode == 0
    assert "Glyph" in loud.stderr and quiet.stderr == ""
