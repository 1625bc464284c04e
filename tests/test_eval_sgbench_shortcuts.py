"""SGBench shortcuts give what the general rules give: PRank read from each pair's own row (ties, unmatched
boxes), and predicted boxes that are their own GT box."""
from __future__ import annotations

import numpy as np
import pytest

from eval_helpers import make_gt, make_pred
from sgtool.eval.sgbench import (
    _gt_triplets, _match_by_iou, _matching_itself, _prank_by_row, _prank_listed, _rows_on_gt_pairs,
    match_instances,
)


def crafted(seed: int, shared_pair: bool):
    """Two images; scores on a coarse grid (many ties); one box moved off its GT box (unmatched)."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for _ in range(2):
        n = 6
        boxes = rng.integers(0, 50, (n, 2)).repeat(2, axis=1).astype(np.float32) + [0, 0, 20, 20]
        labels = rng.integers(0, 3, n)
        rels = [[s, o, int(rng.integers(1, 5))] for s in range(n) for o in range(n) if s != o and rng.random() < 0.3]
        pairs = [[s, o] for s in range(n) for o in range(n) if s != o]
        if shared_pair:  # a GT pair of matched boxes listed by two rows
            pairs.append(next([s, o] for s, o, _ in rels if 0 not in (s, o)))
        moved = boxes.copy()
        moved[0] += 200  # box 0 matches no GT box
        gts.append({"boxes": boxes, "labels": labels, "rels": rels})
        preds.append({"boxes": moved, "labels": labels, "pairs": pairs,
                      "rel_scores": rng.integers(0, 3, (len(pairs), 5)) / 4})
    return make_gt(gts), make_pred(preds, 5)


@pytest.mark.parametrize("seed", range(4))
def test_prank_by_row_equals_the_listed_prank_on_ties(seed):
    gt, pred = crafted(seed, shared_pair=False)
    mapped = match_instances(gt, pred)
    assert (mapped == -1).sum() >= 2  # the moved boxes
    _, g_s, g_o, g_p = _gt_triplets(gt)
    n = len(gt.labels)
    by_row = _prank_by_row(pred, mapped, "predcls", g_s * n + g_o, g_p, n)
    listed = _prank_listed(pred, mapped, "predcls", None, (g_s * n + g_o) * 5 + g_p, np.unique(g_s * n + g_o), n, 5)
    found = listed != np.iinfo(np.int64).max
    assert found.sum() > 3 and (listed[found] > 0).any()  # the case ranks something after rank 0
    np.testing.assert_array_equal(by_row, listed)


def test_a_gt_pair_listed_twice_is_left_to_the_whole_list():
    gt, pred = crafted(0, shared_pair=True)
    mapped = match_instances(gt, pred)
    _, g_s, g_o, g_p = _gt_triplets(gt)
    n = len(gt.labels)
    assert _prank_by_row(pred, mapped, "predcls", g_s * n + g_o, g_p, n) is None


@pytest.mark.parametrize("seed", range(3))
def test_boxes_matching_themselves_follow_the_iou_rule(seed):
    """PredCls-like boxes (most predicted boxes are their GT box) with twins (same label and coordinates),
    a zero-area box and a moved box: the shortcut gives what comparing every same-label box gives."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(3):
        boxes = rng.integers(0, 40, (8, 2)).repeat(2, axis=1).astype(np.float32) + [0, 0, 15, 15]
        labels = rng.integers(0, 2, 8)
        boxes[3], labels[3] = boxes[1], labels[1]  # a twin of box 1, listed after it
        boxes[5, 2:] = boxes[5, :2]  # zero area
        images.append({"boxes": boxes, "labels": labels, "rels": [[0, 1, 1]], "pairs": [[0, 1]],
                       "rel_scores": [[0.1, 0.9]]})
    gt = make_gt(images)
    for im in images:
        im["boxes"] = im["boxes"].copy()
        im["boxes"][6] += 3  # moved: matched by IoU only
    pred = make_pred(images, 2)
    everyone = np.full(len(pred.labels), -1, np.int64)
    _match_by_iou(gt, pred, np.arange(len(pred.labels)), 0.5, everyone)
    got = match_instances(gt, pred)
    assert _matching_itself(gt, pred, 0.5).sum() >= 6  # the shortcut is taken
    np.testing.assert_array_equal(got, everyone)
    assert got[3] == 1 and got[5] == -1  # the twin takes the first box; a zero-area box matches nothing


def test_rows_on_gt_pairs_through_a_many_to_one_matching():
    """Two predicted boxes matched to one GT box, one to none: the rows found by pulling the GT pairs back
    are those whose matched boxes form a GT pair."""
    gt, pred = crafted(1, shared_pair=False)
    pred.boxes[2] = gt.boxes[1]  # box 2 now matches GT box 1 too (same label below)
    pred.labels[2] = gt.labels[1]
    mapped = match_instances(gt, pred)
    assert (np.bincount(mapped[mapped >= 0]) > 1).any() and (mapped == -1).any()
    _, g_s, g_o, _ = _gt_triplets(gt)
    n = len(gt.labels)
    key, rows = _rows_on_gt_pairs(pred, mapped, np.unique(g_s * n + g_o), n)
    s, o = mapped[pred.pairs[:, 0]], mapped[pred.pairs[:, 1]]
    expected = np.flatnonzero((s >= 0) & (o >= 0) & np.isin(s * n + o, g_s * n + g_o))
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_array_equal(key, s[expected] * n + o[expected])
