"""The sibling evaluators (point graphs, confusion sets, COCO mAP): through reset / process / evaluate they give
the numbers of the whole-split function each wraps, in one chunk or several."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from sgtool.data.graphs import RelationSet, SceneGraphs, offsets_from_counts, ordered_pairs
from sgtool.data.predictions import Predictions
from sgtool.coco import coco_metrics, detections_to_coco, evaluate_coco, gt_to_coco, write_coco
from sgtool.eval import CocoEvaluator, ConfusionEvaluator, PointGraphEvaluator
from sgtool.eval.confusion import confusion_metrics, select_predictions, sgdet_confusion_metrics
from sgtool.eval.point_graph import PointGraphs, triplet_scores

ROOT = Path(__file__).resolve().parents[1]
CHUNKINGS = ([[0, 1, 2, 3]], [[0, 1], [2, 3]], [[0], [1, 2], [3]])


def ground_truth(seed: int = 0, images: int = 4, boxes: int = 5) -> SceneGraphs:
    rng = np.random.default_rng(seed)
    counts = np.full(images, boxes)
    offsets = offsets_from_counts(counts)
    corner = rng.uniform(0, 80, (images * boxes, 2))
    xyxy = np.concatenate([corner, corner + rng.uniform(8, 30, (images * boxes, 2))], 1).astype(np.float32)
    labels = rng.integers(1, 4, images * boxes)
    pairs, predicates, rel_counts = [], [], []
    for i in range(images):
        s, o = rng.choice(boxes, 2, replace=False)
        t, u = rng.choice(boxes, 2, replace=False)
        pairs += [[offsets[i] + s, offsets[i] + o], [offsets[i] + t, offsets[i] + u]]
        predicates += [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
        rel_counts.append(2)
    relations = RelationSet(np.array(pairs), np.array(predicates), offsets_from_counts(np.array(rel_counts)))
    return SceneGraphs(np.arange(10, 10 + images), np.full(images, 120), np.full(images, 100),
                       np.zeros(images, np.int8), offsets, xyxy, labels, relations)


def every_pair(gt: SceneGraphs, seed: int) -> Predictions:
    """PredCls predictions on every ordered pair of the GT boxes, random distributions (ties included)."""
    rng = np.random.default_rng(seed)
    image, s, o = ordered_pairs(gt.box_offsets)
    rel = np.round(rng.dirichlet(np.ones(3), len(s)), 1).astype(np.float32)
    return Predictions(gt.image_ids, gt.box_offsets, gt.boxes, gt.labels, np.ones(len(gt.labels), np.float32),
                       offsets_from_counts(np.bincount(image, minlength=gt.num_images)), np.stack([s, o], 1), rel)


def detections(gt: SceneGraphs, seed: int) -> Predictions:
    """Jittered GT boxes plus one spurious box per image, scored, every ordered pair of them."""
    rng = np.random.default_rng(seed)
    rows, labels, boxes, counts = [], [], [], []
    for i in range(gt.num_images):
        mine = gt.boxes[gt.box_offsets[i]:gt.box_offsets[i + 1]]
        keep = rng.random(len(mine)) > 0.2
        extra = np.array([[5, 5, 25, 25]], np.float32)
        boxes.append(np.concatenate([mine[keep] + rng.normal(0, 1.5, (int(keep.sum()), 4)), extra]).astype(np.float32))
        labels.append(np.concatenate([gt.labels[gt.box_offsets[i]:gt.box_offsets[i + 1]][keep], [1]]))
        counts.append(len(boxes[-1]))
    offsets = offsets_from_counts(np.array(counts))
    image, s, o = ordered_pairs(offsets)
    rel = rng.dirichlet(np.ones(3), len(s)).astype(np.float32)
    return Predictions(gt.image_ids, offsets, np.concatenate(boxes), np.concatenate(labels),
                       rng.uniform(0.3, 1, int(offsets[-1])).astype(np.float32),
                       offsets_from_counts(np.bincount(image, minlength=gt.num_images)), np.stack([s, o], 1), rel)


def streamed(evaluator, gt: SceneGraphs, pred: Predictions, chunks: list[list[int]]):
    evaluator.reset()
    for chunk in chunks:
        images = np.array(chunk)
        evaluator.process(gt.select(images), select_predictions(pred, images))
    return evaluator.evaluate()


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_confusion_evaluator_equals_confusion_metrics(chunks):
    gt = ground_truth()
    pred = every_pair(gt, 1)
    whole = confusion_metrics(gt, pred, [1, 2])
    assert whole["relations"] > 0 and not np.isnan(whole["AP-1"])
    assert streamed(ConfusionEvaluator([1, 2]), gt, pred, chunks) == pytest.approx(whole, nan_ok=True)


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_sgdet_confusion_evaluator_equals_sgdet_confusion_metrics(chunks):
    gt = ground_truth(2)
    pred = detections(gt, 3)
    whole = sgdet_confusion_metrics(gt, pred, [1, 2])
    assert 0 < whole["detected_boxes"] < 1 and whole["AP-1"] > 0
    assert streamed(ConfusionEvaluator([1, 2], sgdet=True), gt, pred, chunks) == pytest.approx(whole, nan_ok=True)


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_coco_evaluator_equals_pycocotools_on_the_whole_split(chunks, tmp_path):
    gt = ground_truth(4)
    pred = detections(gt, 5)
    names = ["a", "b", "c"]
    cuts = pred.box_offsets[1:-1]
    found = detections_to_coco(pred.image_ids, np.split(pred.boxes, cuts), np.split(pred.labels, cuts),
                               np.split(pred.scores, cuts))
    whole = coco_metrics(gt_to_coco(gt, names), found, names)
    assert 0 < whole["mAP"] < 1
    assert whole == evaluate_coco(*write_coco(tmp_path, "test", gt_to_coco(gt, names), found), names)
    assert streamed(CocoEvaluator(names), gt, pred, chunks) == whole


def point_graphs(seed: int, jitter: float) -> tuple[PointGraphs, PointGraphs]:
    rng = np.random.default_rng(seed)
    offsets = np.array([0, 4, 7, 11])
    points = rng.uniform(0, 100, (11, 2))
    edges = np.array([[0, 1], [1, 2], [2, 3], [4, 5], [5, 6], [7, 8], [8, 9], [9, 10], [7, 10]])
    gt = PointGraphs(offsets, points, edges)
    pred = PointGraphs(offsets, points + rng.normal(0, jitter, points.shape), edges[[0, 2, 3, 5, 6, 8]][:, ::-1])
    return gt, pred


def part(graphs: PointGraphs, images: list[int]) -> PointGraphs:
    nodes = np.concatenate([np.arange(graphs.node_offsets[i], graphs.node_offsets[i + 1]) for i in images])
    new = np.full(len(graphs.points), -1)
    new[nodes] = np.arange(len(nodes))
    keep = np.isin(graphs.edges[:, 0], nodes)
    return PointGraphs(offsets_from_counts(np.diff(graphs.node_offsets)[images]), graphs.points[nodes],
                       new[graphs.edges[keep]])


@pytest.mark.parametrize("matching", ["nearest", "hungarian"])
def test_point_graph_evaluator_equals_triplet_scores(matching):
    gt, pred = point_graphs(0, 3.0)
    whole = triplet_scores(pred, gt, 5.0, matching)
    assert 0 < whole["hits"] < whole["predicted"]
    evaluator = PointGraphEvaluator(5.0, matching)
    for chunks in ([[0, 1, 2]], [[0], [1, 2]], [[0], [1], [2]]):
        evaluator.reset()
        for images in chunks:
            evaluator.process(part(gt, images), part(pred, images))
        assert evaluator.evaluate() == pytest.approx(whole)


def test_the_documented_python_example_runs():
    """The example of docs/evaluate-your-predictions.md ("The evaluators from Python"), run as written."""
    page = (ROOT / "docs" / "evaluate-your-predictions.md").read_text(encoding="utf-8")
    section = page.split("## The evaluators from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "docs-example", "exec"), scope)  # noqa: S102 (our own docs page)
    assert scope["result"].metrics["R@1"] == 1.0
    assert scope["streamed"]["R@1"] == scope["result"].metrics["R@1"]
    assert scope["points"]["f1"] == 1.0
