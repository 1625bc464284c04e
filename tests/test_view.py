"""`sgtool view`: the site's numbers are the evaluator's, bad input is refused whole, the assets ship."""
from __future__ import annotations

import json
import os
import shutil
from importlib import resources

import numpy as np
import pytest

from sgtool.data.predictions import read_predictions
from sgtool.eval.confusion import predicate_confusion
from sgtool.viz.view.records import SHARD_SIZE
from view_fixtures import evaluator, image_counts, make_view_workspace, read_js, recall_mean


@pytest.fixture(scope="module")
def view_ws(tmp_path_factory):
    return make_view_workspace(tmp_path_factory.mktemp("view") / "ws")


def build(cli, view, out, *args):
    runs = [a for run in view.runs for a in ("--run", run)]
    return cli("-w", view.ws.root, "--json", "view", *runs, "--out", out, *args)


def test_overview_numbers_are_the_evaluators(view_ws, cli, tmp_path):
    result = build(cli, view_ws, tmp_path / "site", "--top", "5")
    assert result.code == 0, result.err
    shown = json.loads(result.out)
    assert shown["runs"] == view_ws.runs and shown["images"] == 8 and shown["top"] == 5
    meta = read_js(tmp_path / "site" / "data" / "meta.js")
    assert [r["name"] for r in meta["runs"]] == view_ws.runs and meta["k"] == 5
    for run in meta["runs"]:
        engine = evaluator(view_ws, run["name"], 5)
        assert run["metrics"] == pytest.approx(engine.metrics, abs=1e-12, nan_ok=True)
        per = engine.per_predicate["R@5"]
        assert [run["perPredicate"][p] for p in view_ws.prepared.vocab.predicates] == pytest.approx(
            [None if np.isnan(v) else v for v in per[1:]])
        eval_json = json.loads(cli("-w", view_ws.ws.root, "--json", "eval", "--run", run["name"]).out)
        assert {n: run["metrics"][n] for n in eval_json["metrics"]} == eval_json["metrics"]
    assert meta["runs"][0]["metrics"]["R@20"] != meta["runs"][1]["metrics"]["R@20"]  # two runs that differ


def test_per_image_marks_equal_the_evaluators_hits(view_ws, cli, tmp_path):
    k = 3
    assert build(cli, view_ws, tmp_path / "site", "--top", str(k)).code == 0
    index = read_js(tmp_path / "site" / "data" / "index.js")
    shard = read_js(tmp_path / "site" / "data" / "shards" / "0000.js")
    for r, run in enumerate(view_ws.runs):
        engine = evaluator(view_ws, run, k)
        marks = index["runs"][r]
        pred = read_predictions(view_ws.ws.run_dir(run) / "predictions" / "test.h5")
        for image in range(index["count"]):
            hits, fps, misses = image_counts(engine, image, k)
            assert (marks["hits"][image], marks["fps"][image], marks["misses"][image]) == (hits, fps, misses)
            top = shard[image]["runs"][r]["top"]
            rows, hit = engine.hits.top_pairs(image, k)
            assert [t[4] for t in top] == hit.astype(int).tolist()
            assert [t[:2] for t in top] == (pred.pairs[rows] - pred.box_offsets[image]).tolist()
        assert recall_mean(marks["recall"]) == pytest.approx(engine.metrics[f"R@{k}"])
        assert marks["relHit"] == "".join("1" if h else "0" for h in engine.hits.gt_rank < k)


def test_shards_page_the_images_and_pictures_are_written(view_ws, cli, tmp_path):
    assert build(cli, view_ws, tmp_path / "site").code == 0
    site = tmp_path / "site"
    shard = read_js(site / "data" / "shards" / "0000.js")
    gt = view_ws.prepared.graphs.split_subset("test")
    assert SHARD_SIZE >= 8 and [s["id"] for s in shard] == gt.image_ids.tolist()
    assert all((site / s["image"]).is_file() and (site / "thumbs" / "000" / f"{s['i']}.jpg").is_file() for s in shard)
    assert shard[0]["gt"]["rels"] == np.concatenate([gt.relations.pairs[:2] - gt.box_offsets[0],
                                                     gt.relations.predicates[:2, None]], 1).tolist()[:len(shard[0]["gt"]["rels"])]
    assert json.loads((site / "sgtool-view.json").read_text())["runs"] == view_ws.runs
    assert {p.name for p in (site / "assets").iterdir()} >= {"cytoscape.min.js", "cytoscape.LICENSE", "view.js"}


def test_annotation_only_dataset_gets_blank_canvas_thumbnails(tmp_path, cli):
    view = make_view_workspace(tmp_path / "ws", with_images=False)
    result = cli("-w", view.ws.root, "view", "--out", tmp_path / "site")
    assert result.code == 0, result.err
    index = read_js(tmp_path / "site" / "data" / "index.js")
    shard = read_js(tmp_path / "site" / "data" / "shards" / "0000.js")
    assert index["pictures"] == "0" * 8 and all(s["image"] is None for s in shard)
    assert (tmp_path / "site" / "thumbs" / "000" / "0.svg").read_text().count("<rect") == 1 + int(shard[0]["gt"]["boxes"].__len__()) and not (tmp_path / "site" / "images").exists()
    assert "file://" in result.out


def test_confusion_matrix_counts_each_gt_relation_once(view_ws):
    gt = view_ws.prepared.graphs.split_subset("test")
    pred = read_predictions(view_ws.ws.run_dir(view_ws.runs[0]) / "predictions" / "test.h5")
    matrix = predicate_confusion(gt, pred, 4)
    assert matrix.sum(1).tolist() == np.bincount(gt.relations.predicates, minlength=4).tolist()
    best = pred.rel_scores[:, 1:].argmax(1) + 1  # PredCls: the GT pair's own row
    keys = {(int(s), int(o)): int(b) for (s, o), b in zip(pred.pairs, best)}
    expected = np.zeros((4, 4), np.int64)
    for (s, o), p in zip(gt.relations.pairs, gt.relations.predicates):
        expected[p, keys.get((int(s), int(o)), 0)] += 1
    assert matrix.tolist() == expected.tolist()


def test_an_earlier_view_is_replaced_and_default_runs_are_found(view_ws, cli, tmp_path):
    site = tmp_path / "site"
    assert build(cli, view_ws, site).code == 0
    (site / "data" / "stale.js").write_text("old")
    result = cli("-w", view_ws.ws.root, "--json", "view", "--out", site)
    assert result.code == 0, result.err
    assert sorted(json.loads(result.out)["runs"]) == sorted(view_ws.runs)
    assert not (site / "data" / "stale.js").exists()
    assert sorted(os.listdir(tmp_path)) == ["site"]  # no staging folder left beside it


@pytest.mark.parametrize("args, words", [
    (["--run", "nope"], "No run named 'nope'"),
    (["--run", "../x"], "not a usable run name"),
    (["--split", "train2"], "Unknown split"),
    (["--top", "0"], "--top must be 1 or more"),
])
def test_bad_options_are_one_sentence(view_ws, cli, tmp_path, args, words):
    result = cli("-w", view_ws.ws.root, "view", *args, "--out", tmp_path / "site")
    assert result.code == 2 and words in result.err and "Traceback" not in result.err
    assert not (tmp_path / "site").exists() and os.listdir(tmp_path) == []


def test_refused_inputs_leave_nothing_behind(tmp_path, cli):
    view = make_view_workspace(tmp_path / "ws")
    detector = view.ws.run_dir("detector-like")
    detector.mkdir()
    (detector / "config.yaml").write_text("dataset: tiny\n")
    other = make_view_workspace(tmp_path / "ws2")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    (tmp_path / "a-file").write_text("x")
    split_run = view.ws.run_dir("other-split")  # a run whose test.h5 holds its val predictions
    shutil.copytree(view.ws.run_dir(view.runs[0]), split_run)
    shutil.copyfile(split_run / "predictions" / "val.h5", split_run / "predictions" / "test.h5")
    cases = [
        (["--run", view.runs[0], "--run", "detector-like"], "holds no predictions for the test split"),
        (["--run", view.runs[0], "--out", tmp_path / "mine"], "not an sgtool view"),
        (["--out", tmp_path / "a-file" / "site"], "cannot be written"),
        (["--out", tmp_path / "a-file"], "is a file"),
        (["--run", "other-split"], "holds predictions for the val split"),
    ]
    for args, words in cases:
        out = [] if "--out" in args else ["--out", tmp_path / "site"]
        result = cli("-w", view.ws.root, "view", *args, *out)
        assert result.code == 2 and words in result.err, (args, result.err)
    assert not (tmp_path / "site").exists() and (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    # a run of another dataset: copy ws2's run (dataset 'tiny' there) under a dataset name this workspace lacks
    moved = view.ws.run_dir("elsewhere")
    moved.mkdir()
    for path in other.ws.run_dir(other.runs[0]).rglob("*"):
        if path.is_file():
            target = moved / path.relative_to(other.ws.run_dir(other.runs[0]))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    (moved / "config.yaml").write_text((moved / "config.yaml").read_text().replace("dataset: tiny", "dataset: tiny-b"))
    result = cli("-w", view.ws.root, "view", "--run", view.runs[0], "--run", "elsewhere", "--out", tmp_path / "site")
    assert result.code == 2 and "different datasets" in result.err and not (tmp_path / "site").exists()


def test_the_vendored_library_ships_with_its_licence():
    assets = resources.files("sgtool.viz.view").joinpath("assets")
    vendored = json.loads(assets.joinpath("VENDORED.json").read_text())
    library = assets.joinpath("cytoscape.min.js").read_text(encoding="utf-8")
    assert vendored["name"] == "cytoscape" and "Permission is hereby granted" in assets.joinpath("cytoscape.LICENSE").read_text()
    assert f'"{vendored["version"]}"' in library or f"'{vendored['version']}'" in library
    pages = "".join(assets.joinpath(p).read_text() for p in ("page.html", "view.js", "view.css"))
    assert "http://" not in pages.replace("http://www.w3.org/2000/svg", "") and "https://" not in pages  # no CDN


def test_browser_tests_skip_on_a_laptop_but_fail_in_ci_without_chromium(monkeypatch):
    from test_view_browser import require_browser

    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium, chromedriver"):
        require_browser()
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="chromium, chromedriver"):
        require_browser()


def test_serve_answers_on_localhost(view_ws, cli, tmp_path):
    import threading
    import urllib.request

    from sgtool.viz.view.site import view_server

    assert build(cli, view_ws, tmp_path / "site").code == 0
    server = view_server(tmp_path / "site")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as page:
            assert page.status == 200 and b"assets/view.js" in page.read()
    finally:
        server.shutdown()
        server.server_close()


def test_a_failure_while_writing_keeps_the_earlier_view_whole(view_ws, cli, tmp_path, monkeypatch):
    site = tmp_path / "site"
    assert build(cli, view_ws, site, "--top", "7").code == 0
    before = sorted(p.relative_to(site) for p in site.rglob("*"))

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("sgtool.viz.view.site.write_pictures", disk_full)
    result = build(cli, view_ws, site, "--top", "3")
    assert result.code == 2 and "No space left on device" in result.err and "Traceback" not in result.err
    assert sorted(p.relative_to(site) for p in site.rglob("*")) == before
    assert json.loads((site / "sgtool-view.json").read_text())["k"] == 7 and os.listdir(tmp_path) == ["site"]


def test_confusion_matches_detected_boxes_by_overlap_not_by_index(view_ws):
    """SGDet: predicted boxes in another order and a pixel off still meet their GT boxes."""
    from sgtool.data.predictions import Predictions

    gt = view_ws.prepared.graphs.split_subset("test")
    pred = read_predictions(view_ws.ws.run_dir(view_ws.runs[0]) / "predictions" / "test.h5")
    image = np.repeat(np.arange(pred.num_images), np.diff(pred.box_offsets))
    start, end = pred.box_offsets[image], pred.box_offsets[image + 1]
    moved = start + (end - 1 - np.arange(len(image)))  # boxes of each image in reverse order
    boxes = np.empty_like(pred.boxes)
    boxes[moved] = pred.boxes + 1
    labels = np.empty_like(pred.labels)
    labels[moved] = pred.labels
    detected = Predictions(pred.image_ids, pred.box_offsets, boxes, labels, pred.scores, pred.pair_offsets,
                           moved[pred.pairs], pred.rel_scores, {"task": "sgdet"})
    assert not np.array_equal(detected.pairs, pred.pairs)
    assert predicate_confusion(gt, detected, 4).tolist() == predicate_confusion(gt, pred, 4).tolist()
    far = Predictions(pred.image_ids, pred.box_offsets, boxes + 500, labels, pred.scores, pred.pair_offsets,
                      moved[pred.pairs], pred.rel_scores, {"task": "sgdet"})
    assert predicate_confusion(gt, far, 4)[:, 1:].sum() == 0  # no box overlaps: every GT relation has no pair
