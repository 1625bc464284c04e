"""`sgtool eval --predictions FILE`: other code bases' files, read safely, scored with the same numbers."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from community_files import community_boxlist, sgb_split, sgbench_split, write_sgb
from sgg_fixtures import save_tiny
from sgtool.data.predictions import read_predictions
from sgtool.engine.train import train
from sgtool.eval import ImageGraph, scene_graphs_from_arrays
from sgtool.eval.external import evaluate_file
from sgtool.workspace import Workspace

# The community benchmark's own evaluator (Scene-Graph-Benchmark.pytorch, vg_eval.evaluate_relation_of_one_image
# and the sgg_eval classes, unchanged), run once on sgb_split(seed, 100 images, task): its figures.
COMMUNITY = {
    ("predcls", 1): {
        "R@20": 0.06908333333333333, "ng-R@20": 0.20325000000000004, "mR@20": 0.07025016300226385,
        "ng-mR@20": 0.17169245320505824, "A@20": 0.13054830287206265, "R@50": 0.12101190476190475,
        "ng-R@50": 0.35387301587301595, "mR@50": 0.11261502269905631, "ng-mR@50": 0.31735909981708305,
        "A@50": 0.13054830287206265, "R@100": 0.13217857142857142, "ng-R@100": 0.49141666666666667,
        "mR@100": 0.130998623225514, "ng-mR@100": 0.47106716812599164, "A@100": 0.13054830287206265,
    },
    ("sgcls", 2): {
        "R@20": 0.024001924001924003, "ng-R@20": 0.03831168831168831, "mR@20": 0.026263335245924613,
        "ng-mR@20": 0.036180706240406986, "A@20": 0.059431524547803614, "R@50": 0.04487734487734488,
        "ng-R@50": 0.09600769600769601, "mR@50": 0.05307277448823173, "ng-mR@50": 0.08959937724800464,
        "A@50": 0.059431524547803614, "R@100": 0.054136604136604136, "ng-R@100": 0.22484367484367487,
        "mR@100": 0.06488501079026396, "ng-mR@100": 0.1977908805067024, "A@100": 0.059431524547803614,
    },
    ("sgdet", 3): {
        "R@20": 0.06789722623055956, "ng-R@20": 0.12256293089626422, "mR@20": 0.07481074982579543,
        "ng-mR@20": 0.11161265359731766, "R@50": 0.08331329164662499, "ng-R@50": 0.2078563411896745,
        "mR@50": 0.09099479418197821, "ng-mR@50": 0.2062544306770566, "R@100": 0.09636042969376303,
        "ng-R@100": 0.2784712201378868, "mR@100": 0.10964432635357046, "ng-mR@100": 0.2821892554223913,
    },
}
# The sgbench package (PyPI sgbench 1.0.0: sgbench.file._evaluate, and recall / pair_recall / match_instances per
# image) on sgbench_split(seed=5, images=40). PairR at K = 50 only: the package cuts the GT list at K too, which
# changes nothing while K exceeds every image's GT triplets (the definition sgtool follows counts every GT pair).
SGBENCH = {"sgbench-R@3": 0.0537797619047619, "sgbench-R@5": 0.06836309523809524, "sgbench-R@50": 0.14241071428571428,
           "sgbench-mR@3": 0.045726495726495724, "sgbench-mR@5": 0.06495726495726496,
           "sgbench-mR@50": 0.1544070512820513, "PairR@50": 0.4802299783549784, "InstR": 0.8341666666666667,
           "PRank": 0.5384615384615384}


@pytest.mark.parametrize("task, seed", list(COMMUNITY))
def test_community_file_gives_the_community_evaluators_numbers(tmp_path, cli, task, seed):
    gts, preds = sgb_split(seed=seed, images=100, task=task)
    write_sgb(tmp_path / "eval_results.pytorch", gts, preds)
    result = cli("-w", tmp_path / "ws", "--json", "eval", "--predictions", tmp_path / "eval_results.pytorch",
                 "--empty-images", "skip")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["task"] == task and report["format"] == "sgb"
    for name, value in COMMUNITY[(task, seed)].items():
        assert report["metrics"][name] == pytest.approx(value, abs=1e-12), name
    assert "zR@50" not in report["metrics"] and "left out" in report["notes"][0]


class Marker:
    """Pickles as a call that would create a file: loading it must not run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump", "boxlist"])
def test_a_crafted_pickle_is_refused_and_runs_nothing(tmp_path, cli, how):
    import torch

    marker, path = tmp_path / "ran", tmp_path / "eval_results.pytorch"
    if how == "torch.save":
        torch.save({"groundtruths": [], "predictions": [Marker(marker)]}, path)
    elif how == "pickle.dump":
        path.write_bytes(pickle.dumps({"predictions": [Marker(marker)]}))
    else:  # a BoxList whose field hides the call
        with community_boxlist() as BoxList:
            box = BoxList(torch.zeros(1, 4), (10, 10))
            box.extra_fields["pred_labels"] = Marker(marker)
            torch.save({"predictions": [box]}, path)
    result = cli("-w", tmp_path / "ws", "eval", "--predictions", path, "--format", "sgb")
    assert result.code == 2
    assert "was refused" in result.err and "Traceback" not in result.err
    assert "posix.system" in result.err or "os.system" in result.err
    assert not marker.exists()


def sgbench_ground_truth(gts: list[dict]):
    return scene_graphs_from_arrays([ImageGraph(g["boxes"], g["labels"], g["relations"], image_id=g["id"]) for g in gts])


def test_sgbench_file_gives_the_sgbench_packages_numbers(tmp_path):
    gts, data = sgbench_split(seed=5, images=40)
    (tmp_path / "pred.json").write_text(json.dumps(data))
    result = evaluate_file(tmp_path / "pred.json", sgbench_ground_truth(gts), task="sgdet", ks=(3, 5, 50))
    for name, value in SGBENCH.items():
        assert result.metrics[name] == pytest.approx(value, abs=1e-12), name


def test_sgbench_metrics_on_a_hand_computed_image(tmp_path):
    # GT: A, B, C (labels 1, 2, 1) related (A,B,1) (A,C,2) (C,B,1); D (label 2) in no relation.
    gt_boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]], float)
    gt = sgbench_ground_truth([{"id": 7, "boxes": gt_boxes, "labels": np.array([1, 2, 1, 2]),
                                "relations": np.array([[0, 1, 1], [0, 2, 2], [2, 1, 1]])}])
    # predicted a -> A, b -> B (IoU 100/110), c matches nothing, d has D's box but the wrong label, e -> C
    boxes = [[0, 0, 10, 10], [20, 20, 30, 31], [100, 100, 110, 110], [60, 60, 70, 70], [40, 40, 50, 50]]
    image = {"id": 7, "bboxes": boxes, "categories": [0, 1, 0, 0, 0],
             # (A,B,1) hit; (-,B,1); (C,B,2): pair CB, wrong predicate; (A,C,2) hit; a repeat, dropped
             "triplets": [[0, 1, 0], [2, 1, 0], [4, 1, 1], [0, 4, 1], [0, 1, 0]],
             # ranks: AB: 2 -> 0, 1 -> 1; AC: 1 -> 0, 3 -> 1, 2 -> 2; CB: 1 -> 0
             "ng_triplets": [[0, 1, 1], [0, 1, 0], [0, 4, 0], [0, 4, 2], [0, 4, 1], [4, 1, 0]]}
    (tmp_path / "pred.json").write_text(json.dumps({"version": 1, "images": [image]}))
    m = evaluate_file(tmp_path / "pred.json", gt, task="sgdet", ks=(1, 2, 3, 4)).metrics
    assert m["InstR"] == pytest.approx(3 / 4)
    assert [m[f"PairR@{k}"] for k in (1, 2, 3, 4)] == pytest.approx([1 / 3, 1 / 3, 2 / 3, 1])
    assert [m[f"sgbench-R@{k}"] for k in (1, 2, 3, 4)] == pytest.approx([1 / 3, 1 / 3, 1 / 3, 2 / 3])
    assert m["sgbench-mR@4"] == pytest.approx((1 / 2 + 1) / 2)  # predicate 1: 1 of 2 GT pairs; predicate 2: 1 of 1
    assert m["PRank"] == pytest.approx(((1 + 0) / 2 + 2) / 2)  # predicate 1: ranks 1, 0; predicate 2: rank 2


def test_sgbench_file_without_ng_triplets_has_no_prank(tmp_path):
    gts, data = sgbench_split(seed=5, images=6)
    for image in data["images"]:
        del image["ng_triplets"]
    (tmp_path / "pred.json").write_text(json.dumps(data))
    metrics = evaluate_file(tmp_path / "pred.json", sgbench_ground_truth(gts), task="sgdet").metrics
    assert np.isnan(metrics["PRank"]) and 0 < metrics["InstR"] <= 1


# ---------------------------------------------------------------- ground truth from a prepared dataset

@pytest.fixture
def freq_run(tmp_path):
    ws = Workspace(tmp_path / "ws")
    prepared = save_tiny(ws)
    run = train(ws, head="freq").run
    return ws, prepared, run, ws.run_dir(run) / "predictions" / "test.h5"


def as_plain_json(h5, path, change_id: bool = False) -> None:
    pred = read_predictions(h5)
    images = []
    for i in range(pred.num_images):
        b0, b1, p0, p1 = pred.box_offsets[i], pred.box_offsets[i + 1], pred.pair_offsets[i], pred.pair_offsets[i + 1]
        images.append({"id": int(pred.image_ids[i]) + (1000 if change_id and i == 0 else 0),
                       "boxes": pred.boxes[b0:b1].tolist(), "labels": pred.labels[b0:b1].tolist(),
                       "scores": pred.scores[b0:b1].tolist(), "pairs": (pred.pairs[p0:p1] - b0).tolist(),
                       "rel_scores": pred.rel_scores[p0:p1].tolist()})
    path.write_text(json.dumps({"num_predicates": int(pred.rel_scores.shape[1]), "images": images[::-1]}))


def as_sgb(h5, gt, path, drop_relation: bool = False, images: slice = slice(None)) -> None:
    pred = read_predictions(h5)
    gts, preds = [], []
    for i in range(gt.num_images)[images]:
        b0, b1, p0, p1 = pred.box_offsets[i], pred.box_offsets[i + 1], pred.pair_offsets[i], pred.pair_offsets[i + 1]
        r0, r1 = gt.relations.offsets[i], gt.relations.offsets[i + 1] - (1 if drop_relation and i == 0 else 0)
        g0 = gt.box_offsets[i]
        gts.append({"boxes": gt.boxes[g0:gt.box_offsets[i + 1]], "labels": gt.labels[g0:gt.box_offsets[i + 1]],
                    "relations": np.column_stack([gt.relations.pairs[r0:r1] - g0, gt.relations.predicates[r0:r1]]),
                    "size": (100, 100)})
        preds.append({"boxes": pred.boxes[b0:b1], "labels": pred.labels[b0:b1], "scores": pred.scores[b0:b1],
                      "pairs": pred.pairs[p0:p1] - b0, "rel_scores": pred.rel_scores[p0:p1]})
    write_sgb(path, gts, preds)


def test_every_format_scores_a_run_as_eval_does(freq_run, cli, tmp_path):
    ws, prepared, run, h5 = freq_run
    own = cli("-w", ws.root, "--json", "eval")
    assert own.code == 0, own.err
    expected = json.loads(own.out)["metrics"]
    gt = prepared.graphs.split_subset("test")
    as_plain_json(h5, tmp_path / "pred.json")
    as_sgb(h5, gt, tmp_path / "eval_results.pytorch")
    for path in (h5, tmp_path / "pred.json", tmp_path / "eval_results.pytorch"):
        result = cli("-w", ws.root, "--json", "eval", "--predictions", path, "--dataset", "tiny")
        assert result.code == 0, result.err
        metrics = json.loads(result.out)["metrics"]
        assert "zR@50" in metrics and "head-mR@50" in metrics and "InstR" in metrics
        for name, value in expected.items():
            assert metrics[name] == pytest.approx(value, abs=1e-12, nan_ok=True), (path.name, name)


def test_image_mismatches_are_one_sentence(freq_run, cli, tmp_path):
    ws, prepared, run, h5 = freq_run
    gt = prepared.graphs.split_subset("test")
    as_plain_json(h5, tmp_path / "ids.json", change_id=True)
    as_sgb(h5, gt, tmp_path / "short.pytorch", images=slice(1, None))
    as_sgb(h5, gt, tmp_path / "other.pytorch", drop_relation=True)
    cases = {"ids.json": "matched by id", "short.pytorch": "matched by order", "other.pytorch": "ground truth inside"}
    for name, words in cases.items():
        result = cli("-w", ws.root, "eval", "--predictions", tmp_path / name, "--dataset", "tiny")
        assert result.code == 2 and words in result.err and "Traceback" not in result.err, (name, result.err)


def test_eval_json_carries_the_whole_report(freq_run, cli):
    ws, prepared, run, h5 = freq_run
    result = cli("-w", ws.root, "--json", "eval")
    assert result.code == 0, result.err
    shown = json.loads(result.out)
    report = json.loads((ws.report_dir(run) / "report.json").read_text())
    assert {name: shown[name] for name in report} == report


# RelDN's official VRD evaluator (NVIDIA/ContrastiveLosses4VRD, lib/datasets_rel/task_evaluation_vg_and_vrd.py,
# eval_rel_results unchanged; Detectron's compiled bbox_overlaps stood in by its +1-pixel formula) run once on
# vrd_split(seed=0): hits out of its 182 GT relations, relationship (reldet) and phrase (phrdet) detection,
# prd_k = 1, 10 and 70 (every predicate) at R@20 / 50 / 100.
RELDN = {"k1-R": (7, 13, 13), "k10-R": (9, 13, 39), "kfree-R": (9, 13, 43),
         "k1-phr-R": (12, 20, 20), "k10-phr-R": (16, 25, 58), "kfree-phr-R": (16, 25, 62)}


def test_vrd_protocol_counts_equal_reldns_official_evaluator():
    from community_files import vrd_split
    from sgtool.eval import ImagePrediction, evaluate_arrays

    gts, preds = vrd_split(seed=0)
    result = evaluate_arrays([ImageGraph(g["boxes"], g["labels"], g["relations"]) for g in gts],
                             [ImagePrediction(p["boxes"], p["labels"], p["scores"], p["pairs"], p["rel_scores"]) for p in preds],
                             task="sgdet", num_predicates=16, ks=(20, 50, 100), top_k_per_pair=(1, 10, None))
    assert result.counts["relations"] == 182
    for family, hits in RELDN.items():
        assert [round(result.metrics[f"{family}@{k}"] * 182, 9) for k in (20, 50, 100)] == list(hits), family
    # the per-image phrase recall is another metric: a mean of per-image ratios, not hits / 182
    assert result.metrics["phr-R@50"] != pytest.approx(20 / 182)
