"""Hostile input: corrupt files, bad boxes and labels, empty splits, unwritable workspaces, failing writes.

Every case must end in one clear sentence (plus a hint) on stderr, exit code 2, no traceback, and a
workspace whose files are byte for byte what they were before the command.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sgg_fixtures import save_tiny
from sgtool.data.predictions import read_predictions, write_predictions
from sgtool.workspace import Workspace


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}


def leftovers(root: Path) -> list[str]:
    """Temp files and staging folders of atomic writes."""
    return [str(p) for p in Path(root).rglob(".*") if p.name.endswith((".tmp", ".staging", ".old"))]


def refused(result, *words: str) -> None:
    assert result.code == 2, (result.code, result.out, result.err)
    assert "Traceback" not in result.err and result.err.count("Error: ") == 1, result.err
    message = result.err.split("Error: ", 1)[1].splitlines()[0]
    assert message.endswith("."), message  # one sentence on one line (the hint follows on its own)
    for word in words:
        assert word in result.err, (word, result.err)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    return ws


def trained(cli, ws: Workspace, name: str = "run") -> Path:
    assert cli("-w", ws.root, "-q", "train", "--head", "freq", "--name", name).code == 0
    return ws.run_dir(name)


# ---------------------------------------------------------------- corrupt h5 files

@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_corrupt_dataset_h5_is_refused(ws, cli, damage):
    path = ws.data_dir("tiny") / "sgg.h5"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3] if damage == "truncate" else os.urandom(len(data)))
    before = snapshot(ws.root)
    refused(cli("-w", ws.root, "train", "--head", "freq"), "sgg.h5")
    refused(cli("-w", ws.root, "eval"), "sgg.h5") if ws.runs() else None
    assert snapshot(ws.root) == before


def test_a_truncated_predictions_h5_is_refused_by_eval(ws, cli):
    run = trained(cli, ws)
    path = run / "predictions" / "test.h5"
    path.write_bytes(path.read_bytes()[:1000])
    before = snapshot(ws.root)
    refused(cli("-w", ws.root, "eval", "--run", "run"), "test.h5")
    assert snapshot(ws.root) == before and not ws.report_dir("run").exists()


def _rewrite_predictions(path: Path, **changes) -> None:
    predictions = read_predictions(path)
    for name, change in changes.items():
        setattr(predictions, name, change(getattr(predictions, name).copy()))
    path.unlink()
    write_predictions(path, predictions)


def _nan_first(a: np.ndarray) -> np.ndarray:
    a[0, 0] = np.nan
    return a


def _label_99(a: np.ndarray) -> np.ndarray:
    a[0] = 99
    return a


def _too_few_columns(a: np.ndarray) -> np.ndarray:
    return a[:, :2]


@pytest.mark.parametrize("change, words", [
    ({"boxes": _nan_first}, "not finite"),
    ({"rel_scores": _nan_first}, "not finite"),
    ({"labels": _label_99}, "label 99 is outside the vocabulary"),
    ({"rel_scores": _too_few_columns}, "predicate columns"),
])
def test_bad_numbers_in_a_predictions_file_are_refused(ws, cli, change, words):
    run = trained(cli, ws)
    _rewrite_predictions(run / "predictions" / "test.h5", **change)
    before = snapshot(ws.root)
    refused(cli("-w", ws.root, "eval", "--run", "run"), words)
    assert snapshot(ws.root) == before


def test_degenerate_predicted_boxes_are_evaluated_not_crashed(ws, cli):
    run = trained(cli, ws)

    def flip(boxes: np.ndarray) -> np.ndarray:
        boxes[::3, 2:] = boxes[::3, :2]  # zero width and height
        boxes[1::3, [0, 2]] = boxes[1::3, [2, 0]]  # x2 < x1
        return boxes

    _rewrite_predictions(run / "predictions" / "test.h5", boxes=flip)
    result = cli("-w", ws.root, "--json", "eval", "--run", "run")
    assert result.code == 0, result.err
    assert 0 <= json.loads(result.out)["metrics"]["R@100"] <= 1


# ---------------------------------------------------------------- images and boxes

def test_train_detector_on_a_dataset_with_an_undecodable_png(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws, with_images=True, splits=(4, 1, 1))
    for image in (ws.data_dir("tiny") / "images").glob("*.png"):  # whichever comes first in the shuffled order
        image.write_bytes(image.read_bytes()[:40])
    before = snapshot(ws.root)
    refused(cli("-w", ws.root, "train-detector", "--epochs", "1", "--batch-size", "2", "--threads", "1"),
            "Cannot read the image")
    assert snapshot(ws.root) == before and not leftovers(ws.root)


def _custom(tmp_path: Path, records: list) -> Path:
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(records))  # json writes NaN as NaN, which json reads back
    return path


def _record(split: str, objects: list, relations: list) -> dict:
    return {"file": None, "width": 100, "height": 100, "split": split, "objects": objects, "relations": relations}


GOOD = [{"box": [0, 0, 20, 20], "label": "cup"}, {"box": [10, 10, 50, 40], "label": "table"}]
ON = [{"subject": 0, "predicate": "on", "object": 1}]


def test_images_with_zero_boxes_and_degenerate_boxes_are_kept_or_dropped_and_counted(tmp_path, cli):
    records = [_record("train", GOOD, ON), _record("train", [], []),
               _record("train", [*GOOD, {"box": [5, 5, 5, 30], "label": "cup"}], [*ON, {"subject": 2, "predicate": "on", "object": 1}]),
               _record("test", GOOD, ON), _record("test", [], [])]
    ws = tmp_path / "ws"
    result = cli("-w", ws, "--json", "prepare", "custom", "--source", _custom(tmp_path, records))
    assert result.code == 0, result.err
    manifest = json.loads((ws / "data" / "custom" / "manifest.json").read_text())
    assert manifest["counts"]["train"]["images"] == 3 and manifest["counts"]["test"]["images"] == 2
    assert cli("-w", ws, "-q", "train", "--head", "freq", "--name", "r").code == 0
    assert cli("-w", ws, "-q", "eval", "--run", "r").code == 0


@pytest.mark.parametrize("objects, relations, words", [
    ([{"box": [0, 0, float("nan"), 20], "label": "cup"}, GOOD[1]], ON, "a box must be 4 finite numbers"),
    ([{"box": [0, 0, float("inf"), 20], "label": "cup"}, GOOD[1]], ON, "a box must be 4 finite numbers"),
    ([{"box": [0, 0, 20], "label": "cup"}, GOOD[1]], ON, "a box must be 4 finite numbers"),
    (GOOD, [{"subject": 0, "predicate": "on", "object": 7}], "the image has 2 objects"),
])
def test_bad_boxes_and_references_in_a_custom_dataset_are_refused(tmp_path, cli, objects, relations, words):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    before = snapshot(ws.root)
    source = _custom(tmp_path, [_record("train", GOOD, ON), _record("test", objects, relations)])
    refused(cli("-w", ws.root, "prepare", "custom", "--source", source, "--name", "tiny", "--force"), words, "record 1")
    assert snapshot(ws.root) == before and not leftovers(ws.root)


def test_labels_outside_the_vocabulary_are_refused(ws, cli):
    refused(cli("-w", ws.root, "prepare", "custom", "--source",
                _custom(ws.root.parent, {"objects": ["cup"], "predicates": ["on"],
                                         "images": [_record("train", GOOD, ON)]}), "--name", "c"),
            "'table' is not in the given vocabulary")
    path = ws.data_dir("tiny") / "sgg.h5"
    with h5py.File(path, "r+") as h5:
        h5["labels"][0] = 99
    before = snapshot(ws.root)
    refused(cli("-w", ws.root, "train", "--head", "freq"), "object label 99 is outside the vocabulary")
    assert snapshot(ws.root) == before


def test_an_empty_test_split_is_named_by_eval(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws, splits=(10, 3, 0))
    trained(cli, ws)
    before = snapshot(ws.root)
    refused(cli("-w", ws.root, "eval", "--run", "run"), "test split", "holds no")
    assert snapshot(ws.root) == before


# ---------------------------------------------------------------- unwritable workspaces and failing writes

def test_a_workspace_under_a_regular_file_is_refused(tmp_path, cli):
    (tmp_path / "file").write_text("not a folder")
    refused(cli("-w", tmp_path / "file" / "ws", "prepare", "synth", "--images", "4", "--workers", "1"), "not writable")
    assert (tmp_path / "file").read_text() == "not a folder"


def test_a_rename_refused_by_the_filesystem_leaves_the_workspace_as_it_was(ws, cli, monkeypatch):
    trained(cli, ws)
    before = snapshot(ws.root)

    def deny(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", deny)
    refused(cli("-w", ws.root, "train", "--head", "freq", "--name", "second"), "Permission denied")
    refused(cli("-w", ws.root, "eval", "--run", "run"), "Permission denied")
    monkeypatch.undo()
    assert snapshot(ws.root) == before and not leftovers(ws.root)


def test_a_write_failing_half_way_keeps_the_old_dataset(ws, cli, monkeypatch):
    import sgtool.data.prepared as prepared

    before = snapshot(ws.root)
    real = prepared.write_sgg_h5

    def half(path, graphs):
        real(path, graphs)
        with open(path, "r+b") as handle:
            handle.truncate(100)
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(prepared, "write_sgg_h5", half)
    source = _custom(ws.root.parent, [_record("train", GOOD, ON), _record("test", GOOD, ON)])
    refused(cli("-w", ws.root, "prepare", "custom", "--source", source, "--name", "tiny", "--force"),
            "No space left on device")
    assert snapshot(ws.root) == before and not leftovers(ws.root)


def test_a_checkpoint_write_failing_half_way_keeps_the_last_checkpoint(ws, cli, monkeypatch):
    import torch

    from sgtool.engine.loop import LAST, load_state

    assert cli("-w", ws.root, "-q", "train", "--head", "tensor", "--epochs", "1", "--name", "t",
               "--set", "sel_epochs=0").code == 0
    last = ws.run_dir("t") / "checkpoints" / LAST
    good = last.read_bytes()
    real = torch.save

    def half(obj, f, *args, **kwargs):
        real(obj, f, *args, **kwargs)
        with open(f, "r+b") as handle:
            handle.truncate(50)
        raise OSError(28, "No space left on device", str(f))

    run = ws.run_dir("t")
    (run / "run.json").write_text(json.dumps({**json.loads((run / "run.json").read_text()), "status": "failed"}))
    # pretend the run had more epochs to go: resume writes its next checkpoint, which fails half-way
    config = (run / "config.yaml").read_text().replace("epochs: 1\n", "epochs: 2\n", 1)
    (run / "config.yaml").write_text(config)
    monkeypatch.setattr(torch, "save", half)
    refused(cli("-w", ws.root, "train", "--resume", "t"), "No space left on device")
    monkeypatch.undo()
    assert last.read_bytes() == good and load_state(last)["loop"]["epoch"] == 1 and not leftovers(ws.root)


# ---------------------------------------------------------------- graph.json fuzzing

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
NUMBER = st.one_of(st.integers(-5, 300), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3))
OBJECT = st.fixed_dictionaries({"id": st.one_of(st.integers(0, 3), st.text(max_size=2)),
                                "label": st.one_of(st.text(max_size=5), st.integers()),
                                "box": st.lists(NUMBER, min_size=0, max_size=5), "score": NUMBER})
RELATION = st.fixed_dictionaries({"subject": st.integers(0, 4), "predicate": st.text(max_size=5),
                                  "object": st.integers(0, 4), "score": NUMBER})
GRAPH = st.fixed_dictionaries({"image": st.none(), "width": NUMBER, "height": NUMBER,
                               "objects": st.lists(OBJECT, max_size=3), "relations": st.lists(RELATION, max_size=3)})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(graph=st.one_of(JSON, GRAPH))
def test_draw_on_arbitrary_json_exits_0_or_2_with_one_sentence(tmp_path, cli, graph):
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(graph))
    out = tmp_path / "graph.svg"
    result = cli("draw", path, "--out", out)
    if result.code == 0:
        assert out.is_file()
        out.unlink()
    else:
        refused(result, "graph")


KILL_BETWEEN_RENAMES = """
import os, signal, sys
from pathlib import Path
from sgtool import atomic

real_replace = os.replace

def replace(source, target):
    real_replace(source, target)
    if str(target).endswith("old"):  # the old folder is moved aside, the new one not yet in place
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace
with atomic.atomic_directory(Path(sys.argv[1])) as staging:
    (staging / "version.txt").write_text("new")
"""


def test_what_a_killed_writer_leaves_is_swept_and_the_old_folder_restored(tmp_path):
    import subprocess
    import sys

    from sgtool import atomic

    target = tmp_path / "reports" / "run1"
    target.mkdir(parents=True)
    (target / "version.txt").write_text("old")
    killed = subprocess.run([sys.executable, "-c", KILL_BETWEEN_RENAMES, str(target)])
    assert killed.returncode == -9
    assert not target.exists() and len(leftovers(tmp_path)) == 2  # the old folder aside, the new one staged
    mine = tmp_path / "reports" / f".run1.{atomic._HOST}-{os.getpid()}.x.staging"  # a live writer's: kept
    mine.mkdir()
    assert Workspace(tmp_path).reports() == ["run1"]  # listing puts the moved-aside folder back
    assert (target / "version.txt").read_text() == "old"
    assert leftovers(tmp_path) == [str(mine)]  # the killed writer's staging folder is gone too
    with atomic.atomic_directory(target) as staging:
        (staging / "version.txt").write_text("newer")
    assert (target / "version.txt").read_text() == "newer" and mine.exists()


# ---------------------------------------------------------------- names are never paths (issue 19, item 1)

def tree(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder (None) under root."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in Path(root).rglob("*")}


BAD_NAMES = ["", ".", "..", "../runs", "../../outside", "a/b", "a\\b", "x" * 200, " lead", "-dash", "new\nline",
             "nul\x00l", "caf\u00e9", ".hidden"]


def bad_names(outside: Path) -> list[str]:
    """The names of the issue's data-loss probes (every other bad name meets the same checker, tested below)."""
    return ["", "..", "../runs", str(outside)]


def name_commands(ws: Workspace, custom: Path, image: Path, source: Path) -> list[tuple[str, ...]]:
    """Every command and option that takes a name, with BAD where the name goes."""
    w = ("-w", str(ws.root))
    return [(*w, "prepare", "synth", "--images", "4", "--workers", "1", "--name", "BAD"),
            (*w, "prepare", "shapes", "--images", "4", "--workers", "1", "--name", "BAD"),
            (*w, "prepare", "vg", "--source", str(source), "--name", "BAD"),
            (*w, "prepare", "vg", "--source", str(source), "--split", "BAD"),
            (*w, "prepare", "vrd", "--source", str(source), "--name", "BAD"),
            (*w, "prepare", "custom", "--source", str(custom), "--name", "BAD"),
            (*w, "train", "--head", "freq", "--name", "BAD"),
            (*w, "train", "--head", "freq", "--dataset", "BAD"),
            (*w, "train", "--head", "freq", "--detector", "BAD"),
            (*w, "train", "--resume", "BAD"),
            (*w, "train", "--from", "BAD", "--task", "sgcls"),
            (*w, "train-detector", "--name", "BAD", "--epochs", "1"),
            (*w, "train-detector", "--dataset", "BAD", "--epochs", "1"),
            (*w, "train-detector", "--resume", "BAD"),
            (*w, "eval", "--run", "BAD"),
            (*w, "predict", str(image), "--run", "BAD"),
            (*w, "predict", str(image), "--detector", "BAD")]


def test_no_name_reaches_outside_the_workspace(tmp_path, cli, own_image):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws)
    trained(cli, ws)
    outside = tmp_path / "outside"  # a sibling folder a path-like name would reach
    (outside / "sub").mkdir(parents=True)
    (outside / "keep.txt").write_text("mine")
    (outside / "sub" / "deep.bin").write_bytes(os.urandom(64))
    source = tmp_path / "source"
    source.mkdir()
    custom = _custom(tmp_path, [_record("train", GOOD, ON), _record("test", GOOD, ON)])
    before = tree(tmp_path)
    for command in name_commands(ws, custom, own_image, source):
        for name in bad_names(outside):
            args = [name if a == "BAD" else a for a in command]
            refused(cli(*args), "not a usable")
        assert tree(tmp_path) == before, (command, set(tree(tmp_path)) ^ set(before))


def test_the_name_checker_takes_plain_names_and_nothing_else():
    from sgtool.errors import SgtoolError
    from sgtool.workspace import MAX_NAME, check_name

    for good in ("synth", "vg150", "freq-tiny-predcls", "a.b_c+d-2", "x" * MAX_NAME):
        assert check_name(good) == good
    for bad in (*BAD_NAMES, "/abs", "x" * (MAX_NAME + 1), "a b", None, 7):
        with pytest.raises(SgtoolError):
            check_name(bad)


# ---------------------------------------------------------------- concurrent writers and orphans (items 2, 3)

def _sgtool_process(*args) -> "subprocess.Popen":
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "sgtool", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})


def _wait_for(condition, seconds: float = 60.0) -> bool:
    import time

    end = time.time() + seconds
    while time.time() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(p) for p in task.read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_a_second_prepare_of_the_same_name_is_refused_while_the_first_writes(tmp_path, cli):
    import signal

    ws = tmp_path / "ws"
    first = _sgtool_process("-w", ws, "-q", "prepare", "synth", "--images", "20000", "--workers", "1", "--name", "s")
    try:
        assert _wait_for(lambda: (ws / "data" / ".s.lock").exists() or first.poll() is not None)
        assert first.poll() is None, first.stderr.read()
        refused(cli("-w", ws, "prepare", "synth", "--images", "4", "--workers", "1", "--name", "s"),
                "Another sgtool process", f"pid {first.pid}")
        assert first.poll() is None  # the first writer goes on undisturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the killed writer's lock file stays behind, but its lock died with it
    assert (ws / "data" / ".s.lock").exists()
    assert cli("-w", ws, "-q", "prepare", "synth", "--images", "4", "--workers", "1", "--name", "s").code == 0
    assert not (ws / "data" / ".s.lock").exists() and Workspace(ws).datasets() == ["s"]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_render_workers_end_with_their_killed_parent(tmp_path):
    import signal

    parent = _sgtool_process("-w", tmp_path / "ws", "-q", "prepare", "synth", "--images", "20000", "--workers", "2")
    try:
        assert _wait_for(lambda: len(_children(parent.pid)) >= 2 or parent.poll() is not None)
        workers = _children(parent.pid)
        assert parent.poll() is None and len(workers) >= 2, parent.stderr.read()
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    left = [] if _wait_for(lambda: not any(_alive(pid) for pid in workers), seconds=10) else \
        [pid for pid in workers if _alive(pid)]
    for pid in left:  # do not leave them running when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left


# ---------------------------------------------------------------- a full disk during train (item 4)

@pytest.mark.parametrize("overwrite_works", [True, False])
def test_a_disk_filling_up_during_train_never_leaves_a_run_running(ws, cli, monkeypatch, overwrite_works):
    import contextlib

    from sgtool import atomic

    real, full = atomic.atomic_path, []

    @contextlib.contextmanager
    def filling(target):
        if Path(target).suffix == ".pt":  # the first checkpoint fills the disk; every later write fails
            full.append(target)
        if full:
            raise OSError(28, "No space left on device", str(target))
        with real(target) as tmp:
            yield tmp

    def no_room(target, payload):
        raise OSError(28, "No space left on device", str(target))

    monkeypatch.setattr(atomic, "atomic_path", filling)
    if not overwrite_works:
        monkeypatch.setattr(atomic, "write_json_or_overwrite", no_room)
    refused(cli("-w", ws.root, "train", "--head", "tensor", "--epochs", "1", "--name", "t", "--set", "sel_epochs=0"),
            "No space left on device", "checkpoints")
    monkeypatch.undo()
    if overwrite_works:
        status = json.loads((ws.run_dir("t") / "run.json").read_text())
        assert status["status"] == "failed" and "No space left on device" in status["error"]
    else:  # nothing can say why, and nothing can be resumed: the run is gone
        assert not ws.run_dir("t").exists() and ws.runs() == []


# ---------------------------------------------------------------- silent wrong results (item 5)

@pytest.mark.parametrize("options", [("--k", "9223372036854775808"), ("--k", "20,1000001"),
                                     ("--metric", "R@9223372036854775808")])
def test_an_absurd_k_is_refused_not_reported(ws, cli, options):
    trained(cli, ws)
    before = snapshot(ws.root)
    refused(cli("-w", ws.root, "eval", "--run", "run", *options), "beyond the largest K")
    assert snapshot(ws.root) == before and not ws.report_dir("run").exists()


def _community_h5(tmp_path: Path, change) -> Path:
    from test_prepare_vg import write_community

    source = write_community(tmp_path / "vg")
    with h5py.File(source / "VG-SGG-with-attri.h5", "r+") as h5:
        change(h5)
    return source


def _nan_boxes(h5) -> None:
    boxes = h5["boxes_1024"][()].astype(np.float32)
    boxes[[1, 4], 2] = [np.nan, np.inf]
    del h5["boxes_1024"]
    h5["boxes_1024"] = boxes


def _split_7(h5) -> None:
    h5["split"][1] = 7


@pytest.mark.parametrize("change, words", [(_nan_boxes, ("NaN or infinite", "row(s) 1, 4")),
                                           (_split_7, ("split holds 7", "row(s) 1"))])
def test_bad_numbers_in_a_vg_h5_are_refused_naming_the_rows(tmp_path, cli, change, words):
    source = _community_h5(tmp_path, change)
    refused(cli("-w", tmp_path / "ws", "prepare", "vg", "--source", source), *words)
    assert not (tmp_path / "ws" / "data" / "vg150").exists()


@pytest.mark.parametrize("change, words", [(_nan_boxes, ("NaN or infinite", "row(s) 1, 4")),
                                           (_split_7, ("split holds 7",))])
def test_bad_numbers_in_a_prepared_h5_are_refused_by_every_reader(ws, cli, change, words):
    with h5py.File(ws.data_dir("tiny") / "sgg.h5", "r+") as h5:
        change(h5)
    before = snapshot(ws.root)
    refused(cli("-w", ws.root, "train", "--head", "freq"), *words)
    assert snapshot(ws.root) == before


def _coco(images: list, categories: list) -> dict:
    return {"images": images, "categories": categories, "rel_categories": [{"id": 1, "name": "on"}],
            "annotations": [{"id": 1, "image_id": 1, "bbox": [0, 0, 5, 5], "category_id": categories[0]["id"]},
                            {"id": 2, "image_id": 1, "bbox": [2, 2, 5, 5], "category_id": categories[-1]["id"]}],
            "relations": [{"subject_id": 1, "object_id": 2, "predicate_id": 1}]}


IMAGE = {"id": 1, "width": 10, "height": 10}


@pytest.mark.parametrize("payload, words", [
    ([{**_record("train", GOOD, ON), "image_id": 3}, {**_record("train", GOOD, ON), "image_id": 5},
      {**_record("test", GOOD, ON), "image_id": 3}], "records 0 and 2 share the image_id 3"),
    ([{**_record("train", GOOD, ON), "image_id": 3}, _record("test", GOOD, ON)], "record 1 has no image_id"),
    ([{**_record("train", GOOD, ON), "image_id": 2 ** 70}, _record("test", GOOD, ON)], "image_id must be a whole number"),
    ([{**_record("train", GOOD, ON), "image_id": "x"}, _record("test", GOOD, ON)], "image_id must be a whole number"),
    ([{**_record("train", GOOD, ON), "width": 1e30}, _record("test", GOOD, ON)], "width must be a positive whole number"),
    ([{**_record("train", GOOD, ON), "height": float("inf")}, _record("test", GOOD, ON)], "height must be"),
    (_coco([IMAGE, {**IMAGE, "width": 20}], [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]), "images 0 and 1 share the id 1"),
    (_coco([IMAGE], [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]), "lists the id 1 twice"),
    (_coco([IMAGE], [{"id": 1, "name": None}, {"id": 2, "name": "b"}]), "has the name None"),
    (_coco([IMAGE], [{"id": 1, "name": 12}, {"id": 2, "name": "b"}]), "has the name 12"),
    (_coco([IMAGE], [{"id": 1, "name": "  "}, {"id": 2, "name": "b"}]), "a name must be a non-empty string"),
])
def test_custom_data_that_would_merge_or_mislabel_is_refused(tmp_path, cli, payload, words):
    refused(cli("-w", tmp_path / "ws", "prepare", "custom", "--source", _custom(tmp_path, payload)), words)
    assert not (tmp_path / "ws" / "data").exists() or Workspace(tmp_path / "ws").datasets() == []


# ---------------------------------------------------------------- tracebacks that were (item 6)

def _huge_png(path: Path, side: int = 20000) -> Path:
    """A PNG whose header says side x side pixels (a few hundred bytes on disk: its pixels are never decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("seed", ["-1", str(2**32), str(2**70)])
def test_a_seed_out_of_range_is_one_sentence(tmp_path, cli, seed):
    refused(cli("-w", tmp_path / "ws", "--seed", seed, "prepare", "synth", "--images", "4", "--workers", "2"),
            "--seed must be")
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize("content, words", [(b"\xff\xfe\x00\x81binary" * 40, "is not a text file"),
                                            (b"a: 1\nb: [1, 2\nc: 3\n", "line 3, column 2"),
                                            (b"epochs: 1\n  lr: 2\n", "line 2, column 5")])
def test_a_config_that_is_not_yaml_is_one_sentence(ws, cli, content, words):
    config = ws.root.parent / "config.yaml"
    config.write_bytes(content)
    before = snapshot(ws.root)
    result = cli("-w", ws.root, "train", "--head", "tensor", "--config", config)
    refused(result, words)
    assert len(result.err.strip().splitlines()) == 2 and snapshot(ws.root) == before  # the sentence and its hint


def test_a_network_too_large_for_the_memory_is_refused_before_it_is_built(ws, cli):
    before = snapshot(ws.root)
    refused(cli("-w", ws.root, "train", "--head", "tensor", "--rank", "1000000000"), "parameters", "--rank")
    assert snapshot(ws.root) == before


@pytest.mark.parametrize("damage", ["truncate", "random", "empty"])
def test_resume_from_a_damaged_last_checkpoint_is_refused_and_changes_nothing(ws, cli, damage):
    assert cli("-w", ws.root, "-q", "train", "--head", "tensor", "--epochs", "1", "--name", "t",
               "--set", "sel_epochs=0").code == 0
    run = ws.run_dir("t")
    (run / "run.json").write_text(json.dumps({**json.loads((run / "run.json").read_text()), "status": "running"}))
    last = run / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes({"truncate": data[: len(data) // 2], "random": os.urandom(len(data)), "empty": b""}[damage])
    before = snapshot(ws.root)
    refused(cli("-w", ws.root, "train", "--resume", "t"), "last.pt is not a readable checkpoint")
    assert snapshot(ws.root) == before  # run.json still says running: a refused resume is no failed run


@pytest.mark.parametrize("head", ["freq", "tensor"])  # model.npz and model.pt
def test_reusing_a_damaged_model_checkpoint_is_one_sentence(ws, cli, head, tmp_path):
    options = ["--epochs", "1", "--set", "sel_epochs=0"] if head == "tensor" else []
    assert cli("-w", ws.root, "-q", "train", "--head", head, "--name", "r", *options).code == 0
    weights = next((ws.run_dir("r") / "checkpoints").glob("model.*"))
    weights.write_bytes(weights.read_bytes()[:100])
    before = snapshot(ws.root)
    refused(cli("-w", ws.root, "train", "--from", "r", "--task", "sgcls"), "model.")
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "img.png")
    refused(cli("-w", ws.root, "predict", tmp_path / "img.png", "--run", "r"), "model.")
    assert snapshot(ws.root) == before


def test_predict_and_draw_of_a_decompression_bomb_are_one_sentence(ws, cli, tmp_path):
    image = _huge_png(tmp_path / "huge.png")
    before = snapshot(ws.root)
    refused(cli("-w", ws.root, "predict", image), "too large to open")
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps({"image": str(image), "width": 20000, "height": 20000,
                                 "objects": [{"id": 0, "label": "cup", "box": [0, 0, 5, 5]}], "relations": []}))
    refused(cli("draw", graph, "--out", tmp_path / "g.png"), "too large to open")
    assert snapshot(ws.root) == before and not (tmp_path / "g.png").exists()


# ---------------------------------------------------------------- a huge graph.json draws bounded (item 7)

def _huge_graph(path: Path, objects: int, relations: int) -> Path:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 900, size=(objects, 2)).round(1)
    pairs = rng.integers(0, objects, size=(relations, 2))
    scores = rng.random(relations).round(6)
    graph = {"image": None, "width": 1000, "height": 1000,
             "objects": [{"id": i, "label": f"thing{i % 50}", "box": [x, y, x + 50, y + 40], "score": 0.5}
                         for i, (x, y) in enumerate(xy.tolist())],
             "relations": [{"subject": s, "predicate": "near", "object": o, "score": p}
                           for (s, o), p in zip(pairs.tolist(), scores.tolist())]}
    path.write_text(json.dumps(graph))
    return path


def test_draw_of_a_huge_graph_draws_the_best_relations_and_says_how_many_were_left_out(tmp_path, cli):
    from sgtool.viz.draw import DEFAULT_TOP, MAX_OBJECTS

    graph = _huge_graph(tmp_path / "huge.json", 2000, 60_000)
    result = cli("--json", "draw", graph, "--out", tmp_path / "huge.svg")
    assert result.code == 0, result.err
    drawn = json.loads(result.out)
    assert drawn["relations"] == DEFAULT_TOP and drawn["relations_left_out"] == 60_000 - DEFAULT_TOP
    assert drawn["objects"] <= min(MAX_OBJECTS, 2 * DEFAULT_TOP)
    assert drawn["objects"] + drawn["objects_left_out"] == 2000
    svg = (tmp_path / "huge.svg").read_text()
    assert f"{60_000 - DEFAULT_TOP:,} relations left out" in svg
    best = sorted(json.loads(graph.read_text())["relations"], key=lambda r: -r["score"])[:DEFAULT_TOP]
    drawn_ids = {int(t.split(":")[0]) for t in re.findall(r"<!-- (\d+:thing\d+) -->", svg)}
    assert {r["subject"] for r in best} | {r["object"] for r in best} <= drawn_ids  # the best relations' objects
    refused(cli("draw", graph, "--top", "1000000"), "--top must be from 1 to")


# ---------------------------------------------------------------- messages that mislead no more (item 8)

def test_a_directory_given_as_a_file_is_called_a_directory(ws, cli, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    before = snapshot(ws.root)
    refused(cli("-w", ws.root, "prepare", "custom", "--source", folder), "is a directory")
    refused(cli("-w", ws.root, "predict", folder), "is a directory")
    refused(cli("-w", ws.root, "train", "--config", folder), "is a directory")
    refused(cli("draw", folder), "is a directory")
    assert snapshot(ws.root) == before


def test_a_failing_write_names_the_target_not_the_hidden_temp_file(ws, cli, monkeypatch):
    import sgtool.data.prepared as prepared

    def full(path, graphs):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(prepared, "write_sgg_h5", full)
    source = _custom(ws.root.parent, [_record("train", GOOD, ON), _record("test", GOOD, ON)])
    result = cli("-w", ws.root, "prepare", "custom", "--source", source, "--name", "c")
    refused(result, "No space left on device", str(ws.root / "data" / "c" / "sgg.h5"))
    assert ".staging" not in result.err and ".tmp" not in result.err


def test_a_torch_write_failure_is_a_sentence_naming_the_checkpoint(tmp_path):
    from sgtool import atomic

    target = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(OSError) as caught:
        with atomic.atomic_path(target):
            raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file "
                               "data/0: file write failed")
    assert caught.value.filename == str(target) and "disk full" in caught.value.strerror
    with pytest.raises(OSError):  # what torch says when the file stops growing (a file size limit, a full disk)
        with atomic.atomic_path(target):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 47744 vs 47632")
    assert not list(target.parent.iterdir())


def test_a_corrupt_manifest_is_named_with_how_to_mend_it(ws, cli):
    (ws.data_dir("tiny") / "manifest.json").write_text("{not json")
    before = snapshot(ws.root)
    result = cli("-w", ws.root, "info", "--verify")
    assert result.code == 0 and "No datasets" not in result.out
    status = json.loads(cli("-w", ws.root, "--json", "info", "--verify").out)["datasets"]["tiny"]["status"]
    assert status.startswith("manifest.json is corrupt") and "--force" in status
    source = _custom(ws.root.parent, [_record("train", GOOD, ON), _record("test", GOOD, ON)])
    refused(cli("-w", ws.root, "prepare", "custom", "--source", source, "--name", "tiny"), "corrupt manifest.json",
            "--force")
    assert snapshot(ws.root) == before


def test_a_corrupt_workspace_json_is_named_not_taken_for_an_empty_workspace(ws, cli):
    trained(cli, ws)
    (ws.root / "workspace.json").write_text("\x00garbage")
    before = snapshot(ws.root)
    refused(cli("-w", ws.root, "eval"), "workspace.json", "is corrupt", "--run")
    assert snapshot(ws.root) == before
    assert cli("-w", ws.root, "-q", "eval", "--run", "run").code == 0  # naming the run still works
    refused(cli("-w", ws.root, "train", "--head", "freq"), "workspace.json", "--dataset")
    assert cli("-w", ws.root, "-q", "train", "--head", "freq", "--dataset", "tiny", "--name", "second").code == 0
    # the train that names its dataset writes workspace.json again
    assert json.loads((ws.root / "workspace.json").read_text())["latest_run"] == "second"


def test_training_without_validation_relations_warns(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws, splits=(10, 0, 3))
    result = cli("-w", ws.root, "train", "--head", "tensor", "--epochs", "1", "--set", "sel_epochs=0")
    assert result.code == 0 and "Warning:" in result.err and "holds no annotated relation" in result.err


# ---------------------------------------------------------------- a broken torch / torchvision pair (item 9)

BROKEN_TORCHVISION = """
import contextlib, importlib.abc, io, json, sys

class BrokenPair(importlib.abc.MetaPathFinder):  # what a CPU torch with a CUDA torchvision wheel does on import
    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            raise RuntimeError("operator torchvision::nms does not exist")

sys.meta_path.insert(0, BrokenPair())
from sgtool.cli import main

results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:  # a traceback the user would see
            code, err = 1, io.StringIO("Traceback " + repr(exc))
    results.append({"code": code, "err": err.getvalue()})
print(json.dumps(results))
"""


def _with_broken_torchvision(commands: list[tuple]) -> list[dict]:
    """Run each sgtool command line in one fresh process where `import torchvision` fails as a broken pair does."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", BROKEN_TORCHVISION, json.dumps([list(map(str, c)) for c in commands])],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freq_eval_and_draw_need_no_torchvision_and_the_rest_names_the_mismatch(tmp_path):
    ws = Workspace(tmp_path / "ws")
    save_tiny(ws, with_images=True, splits=(6, 2, 2))
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps({"image": None, "objects": [{"id": 0, "label": "cup", "box": [0, 0, 5, 5]}],
                                 "relations": []}))
    w = ("-w", ws.root, "-q")
    working = [(*w, "train", "--head", "freq", "--name", "f"), (*w, "eval", "--run", "f"), (*w, "info"),
               (*w, "draw", graph, "--out", tmp_path / "g.png")]
    mismatched = [(*w, "train", "--head", "tensor", "--epochs", "1"), (*w, "train-detector", "--epochs", "1")]
    results = _with_broken_torchvision(working + mismatched)
    for args, result in zip(working, results):
        assert result["code"] == 0 and "Traceback" not in result["err"], (args, result)
    assert (ws.report_dir("f") / "report.json").is_file() and (tmp_path / "g.png").is_file()
    for args, result in zip(mismatched, results[len(working):]):
        text = " ".join(result["err"].split())
        assert result["code"] == 2 and "Traceback" not in text, (args, result)
        assert "cannot be loaded with torch" in text and "torchvision::nms" in text and "+cpu" in text, text


def test_the_matching_torchvision_is_named_for_a_torch_release():
    from sgtool.vision import matching_pair

    assert matching_pair("2.5.1+cpu") == ("2.5.1", "0.20.1")
    assert matching_pair("2.14.1+cu130") == ("2.14.1", "0.29.1")


def test_a_train_racing_another_of_the_same_name_is_refused(ws, cli, monkeypatch):
    from sgtool import atomic

    with atomic.exclusive(ws.run_dir("r"), "the run 'r'"):  # another process is writing run r right now
        refused(cli("-w", ws.root, "train", "--head", "freq", "--name", "r"), "Another sgtool process")
    assert ws.runs() == []
    # another train makes run t between our check that the name is free and our claim of it
    monkeypatch.setattr(Workspace, "claim_run_name", lambda self, name, default, hint=None: name)
    ws.run_dir("t").mkdir(parents=True)
    refused(cli("-w", ws.root, "train", "--head", "tensor", "--epochs", "1", "--name", "t"), "just made by another")
    refused(cli("-w", ws.root, "train", "--head", "freq", "--name", "t"), "just made by another")
    assert list(ws.run_dir("t").iterdir()) == []
