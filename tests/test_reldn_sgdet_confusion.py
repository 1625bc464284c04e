"""Confusion-set measures in SGDet: detections standing for GT boxes, misses, and the detection AP."""
from __future__ import annotations

import numpy as np
import pytest

from sgtool.data.graphs import ordered_pairs
from sgtool.data.predictions import Predictions
from sgtool.eval.confusion import (confusion_metrics, detection_average_precision, match_detections, project_to_gt,
                                   sgdet_confusion_metrics)
from test_eval_confusion import scene


def detections(pred: Predictions, rows: list[int], shift: dict[int, float] | None = None, scores=None) -> Predictions:
    """The scene's boxes `rows` as detections (boxes moved right by shift[row] px), every ordered pair scored
    with the scene's distribution of the GT pair they come from."""
    boxes = pred.boxes[rows].copy()
    for i, row in enumerate(rows):
        boxes[i, [0, 2]] += (shift or {}).get(row, 0.0)
    n = len(rows)
    _, s, o = ordered_pairs(np.array([0, n]))
    lookup = {tuple(p): r for p, r in zip(pred.pairs.tolist(), pred.rel_scores)}
    none = [1.0] + [0.0] * (pred.rel_scores.shape[1] - 1)  # a box paired with its own duplicate
    rel = np.array([lookup.get((rows[a], rows[b]), none) for a, b in zip(s, o)], np.float32)
    score = np.ones(n, np.float32) if scores is None else np.asarray(scores, np.float32)
    return Predictions(pred.image_ids, np.array([0, n]), boxes, pred.labels[rows], score, np.array([0, len(s)]),
                       np.stack([s, o], 1), rel)


def test_perfect_detections_give_the_predcls_measures():
    gt, pred = scene({(0, 1): [0.4, 0.6, 0.0], (0, 2): [0.3, 0.7, 0.0]})
    det = detections(pred, [3, 2, 1, 0])  # the same boxes in another order
    np.testing.assert_array_equal(match_detections(gt, det), [3, 2, 1, 0])
    np.testing.assert_allclose(project_to_gt(gt, det).rel_scores, pred.rel_scores)
    got, want = sgdet_confusion_metrics(gt, det, [1]), confusion_metrics(gt, pred, [1])
    for key in ("partner_accuracy", "partner_chance", "wrong_partner_fp"):
        assert got[key] == want[key]
    # detection AP of holds: (0, 2) 0.7 first (no hit), (0, 1) 0.6 second (the hit): 1/2
    assert got["AP-1"] == pytest.approx(0.5) and got["detected_boxes"] == 1.0


def test_a_missed_box_relates_to_nothing():
    gt, pred = scene({(0, 1): [0.2, 0.8, 0.0], (0, 2): [0.6, 0.4, 0.0]})
    det = detections(pred, [0, 1, 2, 3], shift={1: 6.0})  # the partner's box at IoU 4/16 < 0.5
    assert match_detections(gt, det).tolist() == [0, -1, 2, 3]
    projected = project_to_gt(gt, det)
    row = np.flatnonzero((projected.pairs[:, 0] == 0) & (projected.pairs[:, 1] == 1))[0]
    assert projected.rel_scores[row].tolist() == [1.0, 0.0, 0.0]
    m = sgdet_confusion_metrics(gt, det, [1])
    assert m["partner_accuracy"] == 0.0 and m["detected_boxes"] == 0.75  # the other cup (0.4) beats the miss
    assert m["AP-1"] == 0.0  # no detection pair hits (0, holds, 1)


def test_duplicates_and_detection_scores_rank_the_pairs():
    gt, pred = scene({(0, 1): [0.2, 0.8, 0.0]})
    # the partner detected twice: the duplicate pair is a false positive of the detection AP
    det = detections(pred, [0, 1, 1, 2, 3], scores=[1.0, 0.9, 0.5, 1.0, 1.0])
    assert match_detections(gt, det).tolist() == [0, 1, 3, 4]  # the higher-scoring duplicate stands for box 1
    assert detection_average_precision(gt, det, 1) == 1.0  # the hit (0.8 * 0.9) ranks first; its duplicate later
    assert np.isnan(detection_average_precision(gt, det, 2))
