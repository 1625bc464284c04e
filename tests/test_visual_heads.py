"""Visual variants of the relation heads end to end: detector ROI features in train, reload, predict, the cache."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import detector_ws_copy
from sgtool.data.predictions import read_predictions
from sgtool.data.prepared import load_prepared
from sgtool.data.synth import prepare_synth
from sgtool.detect import load_detector
from sgtool.engine.train import load_trained_head
from sgtool.engine.visual import dataset_source, read_tables
from sgtool.heads import gt_objects
from sgtool.viz.graph_json import read_graph
from sgtool.workspace import Workspace


@pytest.fixture(scope="module")
def ws(detector_ws_template, tmp_path_factory) -> Path:
    """30 tiny images, a one-epoch detector 'd1', visual reldn 'rv', tensor 'tv' (with --cache-features),
    nodis 'nv' (auto, which picks the detector) and iwsl 'iv'."""
    from sgtool.cli import main

    def run(*args) -> None:
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            assert not exc.code, args

    root = detector_ws_copy(detector_ws_template, tmp_path_factory, "visual-ws")
    run("-w", root, "-q", "train", "--head", "reldn", "--set", "features=visual", "--epochs", "1", "--name", "rv")
    run("-w", root, "-q", "train", "--head", "tensor", "--set", "features=visual", "--epochs", "1",
        "--set", "sel_epochs=1", "--cache-features", "--name", "tv")
    run("-w", root, "-q", "train", "--head", "nodis", "--epochs", "1", "--set", "hidden=16", "--name", "nv")
    run("-w", root, "-q", "train", "--head", "iwsl", "--set", "features=visual", "--epochs", "1", "--samples", "4",
        "--set", "hidden=16", "--name", "iv")
    return root


@pytest.mark.parametrize("run", ["rv", "tv", "nv", "iv"])
def test_visual_run_records_its_features_and_evaluates(ws, cli, run):
    config = yaml.safe_load((ws / "runs" / run / "config.yaml").read_text())
    assert (config["features"], config["options"]["features"], config["detector"]) == ("visual", "visual", "d1")
    head, _, _ = load_trained_head(Workspace(ws), run)
    assert head.model.visual_dim == head.visual_source.dim == 32 * 4  # tiny backbone, 2 x 2 cells
    result = cli("-w", ws, "eval", "--run", run, "--json")
    assert result.code == 0, result.err
    assert 0 <= json.loads(result.out)["metrics"]["R@50"] <= 1


@pytest.mark.parametrize("run", ["rv", "tv", "nv"])
def test_reloaded_visual_head_reproduces_the_test_predictions(ws, run):
    workspace = Workspace(ws)
    saved = read_predictions(ws / "runs" / run / "predictions" / "test.h5")
    head, _, prepared = load_trained_head(workspace, run)
    again = head.predict(gt_objects(prepared.graphs.split_subset("test")))
    order = np.lexsort((saved.pairs[:, 1], saved.pairs[:, 0]))
    order_again = np.lexsort((again.pairs[:, 1], again.pairs[:, 0]))
    np.testing.assert_array_equal(again.pairs[order_again], saved.pairs[order])
    np.testing.assert_array_equal(again.rel_scores[order_again], saved.rel_scores[order])


def test_cache_serves_the_same_vectors_as_the_backbone(ws):
    workspace = Workspace(ws)
    files = sorted(p.name for p in (ws / "runs/d1/features/synth").glob("*.h5"))
    assert files == ["test-g2.h5", "train-g2.h5", "val-g2.h5"]
    prepared = load_prepared(workspace)
    live = dataset_source(prepared, load_detector(workspace, "d1"))
    cached = live.with_tables(read_tables(workspace, prepared, "d1"))
    test = prepared.graphs.split_subset("test")
    pairs = np.array([[test.box_offsets[1] + 1, test.box_offsets[1]], [0, 1], [test.box_offsets[3], test.box_offsets[3] + 1]])
    boxes = test.boxes.copy()
    boxes[test.box_offsets[3]] += 1.0  # an image whose boxes differ from the cached ones is computed live
    want, got = live(test.image_ids, test.box_offsets, boxes, pairs), cached(test.image_ids, test.box_offsets, boxes, pairs)
    for key in ("subject", "object", "union"):
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), rtol=1e-4, atol=1e-5)
    served, _ = cached.tables[-1].lookup(test.image_ids, test.box_offsets, boxes, pairs)
    assert served.tolist() == [True, True, False]


def test_predict_on_an_outside_image_with_a_visual_run(ws, cli, tmp_path, own_image):
    result = cli("-w", ws, "predict", own_image, "--run", "rv", "--out", tmp_path, "--json")
    assert result.code == 0, result.err
    graph = read_graph(tmp_path / "photo.graph.json")
    assert (graph["width"], graph["height"]) == (150, 90)
    assert all(r["subject"] != r["object"] for r in graph["relations"])


@pytest.fixture(scope="module")
def bare_ws(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("no-detector-ws")
    prepare_synth(Workspace(root), images=12, size=64, seed=5, workers=1)
    return root


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


@pytest.mark.parametrize("head", ["reldn", "tensor", "nodis", "iwsl"])
def test_visual_without_a_detector_is_one_sentence(bare_ws, cli, head):
    before = _snapshot(bare_ws)
    result = cli("-w", bare_ws, "train", "--head", head, "--set", "features=visual", "--epochs", "1")
    assert result.code == 2
    assert "needs a trained detector" in result.err and "Traceback" not in result.err
    assert _snapshot(bare_ws) == before


def test_auto_without_a_detector_trains_the_spatial_variant(bare_ws, cli):
    result = cli("-w", bare_ws, "-q", "train", "--head", "tensor", "--epochs", "1", "--set", "sel_epochs=0", "--name", "ta")
    assert result.code == 0, result.err
    config = yaml.safe_load((bare_ws / "runs/ta/config.yaml").read_text())
    assert (config["features"], config["detector"]) == ("spatial", None)


def test_from_scores_a_trained_run_in_another_task_without_training(ws, cli):
    result = cli("-w", ws, "--json", "train", "--from", "rv", "--task", "sgdet", "--name", "rv-sgdet")
    assert result.code == 0, result.err
    config = yaml.safe_load((ws / "runs/rv-sgdet/config.yaml").read_text())
    assert (config["task"], config["from_run"], config["detector"], config["features"]) == ("sgdet", "rv", "d1", "visual")
    assert (ws / "runs/rv-sgdet/checkpoints/model.pt").read_bytes() == (ws / "runs/rv/checkpoints/model.pt").read_bytes()
    predictions = read_predictions(ws / "runs/rv-sgdet/predictions/test.h5")
    assert predictions.meta["task"] == "sgdet" and predictions.meta["run"] == "rv-sgdet"
    head, _, prepared = load_trained_head(Workspace(ws), "rv")
    test = prepared.graphs.split_subset("test")
    assert not np.array_equal(predictions.boxes, test.boxes)  # detected boxes, not the ground truth
    evaluated = cli("-w", ws, "--json", "eval", "--run", "rv-sgdet", "--metric", "R@50")
    assert evaluated.code == 0 and 0 <= json.loads(evaluated.out)["R@50"] <= 1


@pytest.mark.parametrize("args, words", [
    (["--from", "rv", "--rank", "3"], "does not take --rank"),
    (["--from", "rv", "--task", "sgcls", "--detector", "nope"], "uses the ROI features of the detector 'd1'"),
    (["--from", "d1", "--task", "sgcls"], "not a complete relation-head run"),
])
def test_from_refuses_what_does_not_apply(ws, cli, args, words):
    before = _snapshot(ws)
    result = cli("-w", ws, "train", *args)
    assert result.code == 2 and words in result.err and "Traceback" not in result.err
    assert _snapshot(ws) == before


def test_from_under_torchrun_is_one_sentence(ws, cli, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = cli("-w", ws, "train", "--from", "rv", "--task", "sgcls")
    assert result.code == 2 and "without torchrun" in result.err
