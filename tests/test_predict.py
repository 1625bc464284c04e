"""SGCls / SGDet object sources and `sgtool predict` on images outside the dataset."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import detector_ws_copy
from sgtool.cli import main
from sgtool.data.prepared import load_prepared
from sgtool.data.sgg_h5 import Vocabulary
from sgtool.engine.objects import object_source
from sgtool.errors import SgtoolError
from sgtool.viz.graph_json import read_graph
from sgtool.workspace import Workspace


def run(*args) -> int:
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code or 0
    return 0


@pytest.fixture(scope="module")
def ws(detector_ws_template, tmp_path_factory) -> Path:
    """A tiny synthetic dataset, a one-epoch detector 'd1' and a freq run 'f1'."""
    root = detector_ws_copy(detector_ws_template, tmp_path_factory, "predict-ws")
    assert run("-w", root, "-q", "train", "--head", "freq", "--name", "f1") == 0
    return root


def test_sgcls_keeps_gt_boxes_and_classifies_them(ws):
    prepared = load_prepared(Workspace(ws))
    source, detector_run = object_source(Workspace(ws), prepared, "sgcls", "d1")
    test = prepared.graphs.split_subset("test")
    objects = source(test)
    assert detector_run == "d1"
    np.testing.assert_array_equal(objects.box_offsets, test.box_offsets)
    np.testing.assert_array_equal(objects.boxes, test.boxes)
    assert objects.labels.min() >= 1 and objects.labels.max() <= len(prepared.vocab.objects)
    assert np.all((objects.scores > 0) & (objects.scores <= 1))


def test_sgdet_detects_at_most_80_boxes_per_image(ws):
    prepared = load_prepared(Workspace(ws))
    source, _ = object_source(Workspace(ws), prepared, "sgdet", "d1")
    objects = source(prepared.graphs.split_subset("test"))
    assert objects.detected and objects.num_images == prepared.manifest["counts"]["test"]["images"]
    assert np.diff(objects.box_offsets).max() <= 80
    assert np.all(objects.boxes[:, 2:] >= objects.boxes[:, :2])


def test_detector_of_another_vocabulary_is_refused(ws):
    prepared = load_prepared(Workspace(ws))
    other = dataclasses.replace(prepared, vocab=Vocabulary(["cat", "dog"], prepared.vocab.predicates))
    with pytest.raises(SgtoolError, match="another object vocabulary"):
        object_source(Workspace(ws), other, "sgdet", "d1")


def test_predict_writes_a_graph_that_draw_renders(ws, own_image, tmp_path, capsys):
    out = tmp_path / "graphs"
    assert run("-w", ws, "predict", own_image, "--out", out, "--top", "4", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    graph_path = out / "photo.graph.json"
    assert rows[0]["graph"] == str(graph_path)
    graph = read_graph(graph_path)
    assert (graph["width"], graph["height"]) == (150, 90)
    assert len(graph["relations"]) <= 4
    assert (graph_path.parent / graph["image"]).resolve() == own_image.resolve()
    assert run("draw", graph_path) == 0
    drawing = Image.open(out / "photo.graph.png")
    assert drawing.size[0] > drawing.size[1] > 100  # image and graph side by side
    assert own_image.exists() and Image.open(own_image).size == (150, 90)  # the input is untouched


def test_predict_refuses_a_file_that_is_not_an_image(ws, tmp_path, capsys):
    fake = tmp_path / "notes.png"
    fake.write_text("not pixels")
    assert run("-w", ws, "predict", fake, "--out", tmp_path) == 2
    err = capsys.readouterr().err
    assert "not an image" in err and "Traceback" not in err
    assert not (tmp_path / "notes.graph.json").exists()
