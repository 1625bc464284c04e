"""Confusion-set metrics: AP of a link predicate, partner accuracy, wrong-partner false positives."""
from __future__ import annotations

import numpy as np
import pytest

from sgtool.data.graphs import RelationSet, SceneGraphs, ordered_pairs
from sgtool.data.predictions import Predictions
from sgtool.eval.confusion import average_precision, confusion_metrics, select_predictions


def scene(scores_by_pair: dict[tuple[int, int], list[float]]):
    # one image: subject 0 (class 1), candidates 1 and 2 (class 2), distractor 3 (class 3); 0 holds 1
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30], [40, 40, 50, 50]], np.float32)
    gt = SceneGraphs(np.array([5]), np.array([64]), np.array([64]), np.zeros(1, np.int8), np.array([0, 4]), boxes,
                     np.array([1, 2, 2, 3]), RelationSet(np.array([[0, 1]]), np.array([1]), np.array([0, 1])))
    _, s, o = ordered_pairs(np.array([0, 4]))
    rel = np.array([scores_by_pair.get((int(a), int(b)), [0.9, 0.05, 0.05]) for a, b in zip(s, o)], np.float32)
    pred = Predictions(np.array([5]), np.array([0, 4]), boxes, gt.labels, np.ones(4, np.float32), np.array([0, 12]),
                       np.stack([s, o], 1), rel)
    return gt, pred


def test_wrong_partner_ranked_first():
    gt, pred = scene({(0, 1): [0.4, 0.6, 0.0], (0, 2): [0.3, 0.7, 0.0]})
    m = confusion_metrics(gt, pred, [1])
    # holds ranking: (0, 2) 0.7, (0, 1) 0.6, the rest 0.05 -> the positive at rank 2: AP = 1/2
    assert m["AP-1"] == pytest.approx(0.5)
    assert m["partner_accuracy"] == 0.0 and m["partner_chance"] == 0.5
    assert m["wrong_partner_fp"] == 1.0  # (0, 2) is predicted holds (its argmax), the one non-partner candidate
    assert m["relations"] == 1


def test_right_partner_and_ties():
    gt, pred = scene({(0, 1): [0.2, 0.8, 0.0], (0, 2): [0.6, 0.4, 0.0]})
    m = confusion_metrics(gt, pred, [1])
    assert (m["AP-1"], m["partner_accuracy"], m["wrong_partner_fp"]) == (1.0, 1.0, 0.0)
    gt, pred = scene({(0, 1): [0.5, 0.5, 0.0], (0, 2): [0.5, 0.5, 0.0]})
    assert confusion_metrics(gt, pred, [1])["partner_accuracy"] == 0.5  # a two-way tie earns half


def test_average_precision_by_hand():
    # positives at ranks 1 and 3: (1/1 + 2/3) / 2
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0], bool)) == pytest.approx(5 / 6)
    assert np.isnan(average_precision(np.array([0.5]), np.array([False])))


def test_select_predictions_renumbers_rows():
    gt, pred = scene({})
    two = Predictions(np.array([5, 6]), np.array([0, 4, 8]), np.concatenate([pred.boxes] * 2),
                      np.concatenate([pred.labels] * 2), np.ones(8, np.float32), np.array([0, 12, 24]),
                      np.concatenate([pred.pairs, pred.pairs + 4]), np.concatenate([pred.rel_scores] * 2))
    second = select_predictions(two, np.array([1]))
    np.testing.assert_array_equal(second.pairs, pred.pairs)
    assert second.image_ids.tolist() == [6] and second.pair_offsets.tolist() == [0, 12]
