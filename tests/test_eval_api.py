"""The evaluator protocol and the Python API on plain numpy arrays."""
from __future__ import annotations

import numpy as np
import pytest

from sgtool.errors import SgtoolError
from sgtool.eval import (
    FAMILY_COLUMNS, METRIC_FAMILIES, ImageGraph, ImagePrediction, PointGraphEvaluator, SceneGraphEvaluator,
    evaluate, evaluate_arrays, predictions_from_arrays, scene_graphs_from_arrays,
)
from sgtool.eval.point_graph import PointGraphs, triplet_scores

P = 4


def two_images():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [50, 0, 60, 30]], np.float32)
    gt = [ImageGraph(boxes, np.array([1, 2, 3]), np.array([[0, 1, 2], [1, 2, 3]]), image_id=7),
          ImageGraph(boxes[:2], np.array([1, 1]), np.array([[0, 1, 1]]), image_id=9)]
    # image 7: pair (0, 1) predicts 2 (hit, ranked first), pair (1, 2) predicts 1 (miss), pair (2, 0) predicts 3
    scores7 = np.array([[0, .1, .8, .1], [0, .6, .2, .2], [0, .1, .1, .5]], np.float32)
    pred = [ImagePrediction(boxes, np.array([1, 2, 3]), np.ones(3), np.array([[0, 1], [1, 2], [2, 0]]), scores7),
            ImagePrediction(boxes[:2], np.array([1, 1]), np.ones(2), np.array([[1, 0], [0, 1]]),
                            np.array([[0, .9, 0, .1], [0, .3, .3, .4]], np.float32))]
    return gt, pred


def test_arrays_api_gives_hand_computed_recall():
    gt, pred = two_images()
    result = evaluate_arrays(gt, pred, task="sgdet", num_predicates=P, ks=(1, 2, 3))
    # image 7: 1 of 2 relations hit at rank 0; image 9: (0, 1, pred 1) is ranked 2nd with predicate 3 -> miss,
    # (1, 0) holds predicate 1 but is the reversed pair -> miss.
    assert result.metrics["R@1"] == pytest.approx((0.5 + 0) / 2)
    assert result.metrics["R@3"] == pytest.approx(0.25)
    # no graph constraint: image 9's (0, 1, predicate 1) scores .3, rank 3 of 4 entries
    assert result.metrics["ng-R@2"] == pytest.approx(0.25) and result.metrics["ng-R@3"] == pytest.approx(0.75)


def test_evaluator_process_loop_equals_whole_split_and_resets():
    gt, pred = two_images()
    graphs = scene_graphs_from_arrays(gt)
    predictions = predictions_from_arrays(pred, graphs.image_ids, P)
    whole = evaluate(graphs, predictions, task="sgdet", num_predicates=P, ks=(1, 3))
    evaluator = SceneGraphEvaluator(graphs, task="sgdet", num_predicates=P, ks=(1, 3))
    for round_ in range(2):  # reset() starts over
        evaluator.reset()
        for i in range(2):
            one = predictions_from_arrays(pred[i:i + 1], graphs.image_ids[i:i + 1], P)
            evaluator.process(graphs.select(np.array([i])), one)
        streamed = evaluator.evaluate()
        assert streamed.metrics == pytest.approx(whole.metrics, nan_ok=True)


def test_evaluator_refuses_ground_truth_of_other_images():
    gt, pred = two_images()
    graphs = scene_graphs_from_arrays(gt)
    evaluator = SceneGraphEvaluator(graphs, task="sgdet", num_predicates=P)
    with pytest.raises(SgtoolError, match="not that of the split's images"):
        evaluator.process(graphs.select(np.array([1])), predictions_from_arrays(pred[1:], graphs.image_ids[1:], P))


def test_every_family_reads_a_registered_column():
    assert set(FAMILY_COLUMNS) == set(METRIC_FAMILIES)


def test_point_graph_evaluator_sums_chunks():
    gt = PointGraphs(np.array([0, 3]), np.array([[0, 0], [10, 0], [0, 10]], float), np.array([[0, 1], [1, 2]]))
    pred = PointGraphs(np.array([0, 3]), np.array([[1, 0], [10, 1], [30, 30]], float), np.array([[0, 1], [1, 2]]))
    evaluator = PointGraphEvaluator()
    evaluator.process(gt, pred)
    evaluator.process(gt, pred)
    one = triplet_scores(pred, gt)
    assert evaluator.evaluate()["precision"] == one["precision"] == 0.5
    assert evaluator.evaluate()["hits"] == 2 * one["hits"]
