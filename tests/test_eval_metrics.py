"""Hand-computed cases for the metric engine (numbers worked out on paper)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from eval_helpers import make_gt, make_pred
from sgtool.errors import SgtoolError
from sgtool.eval import METRIC_FAMILIES, NO_HIT, evaluate, parse_metric
from sgtool.eval.metrics import IoURule

FAR = [[0, 0, 10, 10], [50, 0, 60, 10], [0, 50, 10, 60], [50, 50, 60, 60]]  # four disjoint boxes


def row(P, **probs):
    """A rel_scores row: row(3, p1=0.9) -> [0, 0.9, 0]."""
    out = [0.0] * P
    for key, value in probs.items():
        out[int(key[1:])] = value
    return out


def image(labels, rels=(), boxes=None, complete=None):
    boxes = FAR[: len(labels)] if boxes is None else boxes
    return {"boxes": boxes, "labels": list(labels), "rels": list(rels), "complete": list(complete or [])}


def pred_image(gt_im, pairs, rows, **kw):
    return {"boxes": kw.get("boxes", gt_im["boxes"]), "labels": kw.get("labels", gt_im["labels"]),
            "scores": kw.get("scores", [1.0] * len(kw.get("labels", gt_im["labels"]))), "pairs": pairs,
            "rel_scores": rows}


def run(gts, preds, P, task="predcls", ks=(1, 2), **kw):
    complete = any(g["complete"] for g in gts)
    return evaluate(make_gt(gts, with_complete=complete), make_pred(preds, P), task=task, num_predicates=P,
                    ks=ks, **kw)


def test_ties_keep_input_order():
    g = image([1, 2, 3], rels=[(0, 1, 1)])
    tie = row(3, p1=0.5, p2=0.5)
    late = run([g], [pred_image(g, [(1, 2), (0, 1)], [tie, tie])], 3, ks=(1, 2, 3))
    assert late.metrics["R@1"] == 0.0 and late.metrics["R@2"] == 1.0
    # no graph constraint: (1,2)p1, (1,2)p2, (0,1)p1, (0,1)p2 all tie at 0.5
    assert late.metrics["ng-R@2"] == 0.0 and late.metrics["ng-R@3"] == 1.0
    early = run([g], [pred_image(g, [(0, 1), (1, 2)], [tie, tie])], 3, ks=(1,))
    assert early.metrics["R@1"] == 1.0


def test_evaluator_sorts_by_itself():
    g = image([1, 2, 3], rels=[(0, 1, 1)])
    result = run([g], [pred_image(g, [(1, 2), (0, 1)], [row(3, p1=0.2), row(3, p1=0.9)])], 3, ks=(1, 2))
    assert result.metrics["R@1"] == 1.0
    assert result.hits.pred_rank.tolist() == [1, 0]
    assert run([g], [pred_image(g, [(1, 2), (0, 1)], [row(3, p1=0.2), row(3, p1=0.9)])], 3,
               ks=(1,)).hits.pred_rank.tolist() == [NO_HIT, 0]  # ranks are known below max(ks) only


def test_duplicate_gt_triplets_and_mean_recall():
    g = image([1, 2, 3], rels=[(0, 1, 1), (0, 1, 1), (1, 2, 2)])
    p = pred_image(g, [(0, 1), (1, 2)], [row(3, p1=0.9), row(3, p1=0.8, p2=0.1)])
    result = run([g], [p], 3, ks=(1, 2, 3))
    assert result.metrics["R@1"] == pytest.approx(2 / 3)
    assert result.metrics["R@2"] == pytest.approx(2 / 3)
    assert result.metrics["mR@2"] == pytest.approx(0.5)  # predicate 1: 2/2, predicate 2: 0/1
    assert result.metrics["ng-R@2"] == pytest.approx(2 / 3)  # (1,2)p2 scores 0.1: third
    assert result.metrics["ng-R@3"] == pytest.approx(1.0)


def test_image_without_gt_is_skipped_and_image_without_pairs_counts_zero():
    g = image([1, 2], rels=[(0, 1, 1)])
    hit = pred_image(g, [(0, 1)], [row(3, p1=1.0)])
    empty_gt = image([1, 2])
    skipped = run([g, empty_gt], [hit, pred_image(empty_gt, [(0, 1)], [row(3, p2=1.0)])], 3)
    assert skipped.metrics["R@1"] == 1.0 and skipped.metrics["mR@1-present"] == 1.0
    assert skipped.counts["images_with_relations"] == 1
    no_pairs = run([g, g], [hit, pred_image(g, [], [])], 3)
    assert no_pairs.metrics["R@1"] == 0.5 and no_pairs.metrics["ng-R@2"] == 0.5 and no_pairs.metrics["A@1"] == 0.5


def test_absent_predicates_count_zero_in_mR_but_not_in_present():
    g = image([1, 2, 3], rels=[(0, 1, 1), (1, 2, 2)])
    result = run([g], [pred_image(g, [(0, 1), (1, 2)], [row(5, p1=0.9), row(5, p3=0.9)])], 5)
    assert result.metrics["mR@2"] == pytest.approx(0.25)  # (1 + 0 + 0 + 0) / 4
    assert result.metrics["mR@2-present"] == pytest.approx(0.5)  # (1 + 0) / 2
    per = result.per_predicate["R@2"]
    assert np.isnan(per[0]) and per[1] == 1.0 and per[2] == 0.0 and np.isnan(per[3]) and np.isnan(per[4])
    assert result.metrics["F1@2"] == pytest.approx(2 * 0.5 * 0.25 / 0.75)


def test_mean_recall_averages_images_first():
    a = image([1, 2, 3], rels=[(0, 1, 1), (1, 2, 1)])  # predicate 1 recalled 1 of 2 here
    b = image([1, 2], rels=[(0, 1, 1)])  # and 1 of 1 here
    pa = pred_image(a, [(0, 1)], [row(3, p1=1.0)])
    pb = pred_image(b, [(0, 1)], [row(3, p1=1.0)])
    result = run([a, b], [pa, pb], 3)
    assert result.per_predicate["R@1"][1] == pytest.approx(0.75)  # mean(1/2, 1), not 2/3
    assert result.metrics["mR@1"] == pytest.approx(0.375)  # predicate 2 absent: 0
    assert result.metrics["k1-R@1"] == pytest.approx(2 / 3)  # micro over the split


def test_same_label_overlapping_boxes_both_match_in_predcls():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 11], [50, 50, 60, 60]]
    g = image([1, 1, 2], rels=[(0, 2, 1), (1, 2, 1)], boxes=boxes)
    result = run([g], [pred_image(g, [(1, 2)], [row(3, p1=1.0)])], 3, ks=(1,))
    assert result.metrics["R@1"] == 1.0  # box 1 also matches GT box 0: labels and IoU, not indices
    assert result.hits.gt_recalled(0, 1).tolist() == [True, True]
    assert result.metrics["A@1"] == 1.0  # (1, 2) is a GT pair, and it hits both GT relations


def test_pair_accuracy_filters_then_cuts():
    g = image([1, 2, 3, 4], rels=[(2, 3, 1)])
    pairs = [(s, o) for s in range(4) for o in range(4) if s != o]
    rows = [row(3, p1=0.1) if pair == (2, 3) else row(3, p2=0.9) for pair in pairs]
    result = run([g], [pred_image(g, pairs, rows)], 3, ks=(1, 11, 12, 20))
    assert result.metrics["R@1"] == 0.0 and result.metrics["R@11"] == 0.0 and result.metrics["R@12"] == 1.0
    assert result.metrics["A@1"] == result.metrics["A@20"] == 1.0


def test_phrase_detection_vs_relationship_detection():
    g = image([1, 2], rels=[(0, 1, 1)], boxes=[[0, 0, 10, 10], [0, 0, 100, 100]])
    p = pred_image(g, [(0, 1)], [row(3, p1=1.0)], boxes=[[20, 20, 30, 30], [0, 0, 100, 100]], labels=[1, 2])
    result = run([g], [p], 3, task="sgdet", ks=(1,))
    assert result.metrics["R@1"] == 0.0  # subject IoU 0
    assert result.metrics["phr-R@1"] == 1.0  # same union box
    assert "A@1" not in result.metrics  # pair accuracy needs GT boxes


def test_legacy_iou_is_a_named_option():
    g = image([1, 2], rels=[(0, 1, 1)], boxes=[[0, 0, 9, 9], [50, 50, 60, 60]])
    p = pred_image(g, [(0, 1)], [row(3, p1=1.0)], boxes=[[0, 0, 9, 4], [50, 50, 60, 60]], labels=[1, 2])
    legacy = run([g], [p], 3, task="sgdet", ks=(1,))  # (10*5) / (10*10) = 0.5
    exact = run([g], [p], 3, task="sgdet", ks=(1,), iou=IoURule(legacy=False))  # (9*4) / (9*9) = 0.44
    assert legacy.metrics["R@1"] == 1.0 and exact.metrics["R@1"] == 0.0
    assert "+1-pixel" in legacy.conventions["R@1"] and "exact" in exact.conventions["R@1"]


def test_object_scores_rank_in_sgcls_but_not_in_predcls():
    g = image([1, 2, 3], rels=[(0, 1, 1)])
    pairs, rows = [(1, 2), (0, 1)], [row(3, p1=0.6), row(3, p1=0.5)]
    scores = [1.0, 1.0, 0.5]  # the (1, 2) pair drops to 0.3 once object scores count
    assert run([g], [pred_image(g, pairs, rows, scores=scores)], 3, task="sgcls", ks=(1,)).metrics["R@1"] == 1.0
    assert run([g], [pred_image(g, pairs, rows, scores=scores)], 3, task="predcls", ks=(1,)).metrics["R@1"] == 0.0


def test_k_predictions_per_pair():
    g = image([1, 2], rels=[(0, 1, 1), (0, 1, 2)])
    p = pred_image(g, [(0, 1)], [row(4, p1=0.5, p2=0.3, p3=0.2)])
    result = run([g], [p], 4, ks=(2,), top_k_per_pair=(1, 2, None))
    assert result.metrics["R@2"] == 0.5 and result.metrics["k1-R@2"] == 0.5
    assert result.metrics["k2-R@2"] == 1.0 and result.metrics["kfree-R@2"] == 1.0 and result.metrics["ng-R@2"] == 1.0


def test_zero_shot_recall_skips_images_without_unseen_triplets():
    a = image([1, 2], rels=[(0, 1, 1)])  # triplet (1, 1, 2): seen
    b = image([1, 2, 3], rels=[(0, 1, 2), (1, 2, 1)])  # (1, 2, 2) unseen, (2, 1, 3) seen
    pa = pred_image(a, [(0, 1)], [row(3, p1=1.0)])
    pb = pred_image(b, [(0, 1), (1, 2)], [row(3, p1=1.0), row(3, p1=1.0)])
    seen = np.array([[1, 1, 2], [2, 1, 3]])
    result = run([a, b], [pa, pb], 3, seen_triplets=seen)
    assert result.metrics["zR@2"] == 0.0  # only image b counts, its unseen relation is missed
    assert result.metrics["R@2"] == pytest.approx((1 + 0.5) / 2)
    none_unseen = run([a], [pa], 3, seen_triplets=seen)
    assert math.isnan(none_unseen.metrics["zR@2"])


def test_head_body_tail_groups():
    g = image([1, 2, 3], rels=[(0, 1, 1), (1, 2, 2), (0, 2, 3)])
    p = pred_image(g, [(0, 1), (1, 2), (0, 2)], [row(5, p1=0.9), row(5, p2=0.8), row(5, p4=0.7)])
    groups = np.array([-1, 0, 1, 1, 2])
    result = run([g], [p], 5, ks=(3,), predicate_groups=groups)
    assert result.metrics["head-mR@3"] == 1.0
    assert result.metrics["body-mR@3"] == 0.5  # predicate 2 recalled, 3 missed
    assert result.metrics["tail-mR@3"] == 0.0  # predicate 4 absent: counts 0


def test_complete_precision_removes_duplicates():
    boxes = [[0, 0, 10, 10], [50, 0, 60, 10], [0, 50, 10, 60], [0, 0, 10, 10]]  # box 3 = box 0
    g = image([1, 2, 3, 1], rels=[(0, 1, 1)], boxes=boxes, complete=[(0, 1, 1), (1, 2, 1)])
    pairs = [(0, 1), (0, 1), (3, 1), (1, 2), (2, 0)]
    rows = [row(3, p1=0.9), row(3, p1=0.8), row(3, p1=0.85), row(3, p2=0.7), row(3, p1=0.6)]
    result = run([g], [pred_image(g, pairs, rows)], 3, ks=(1, 2, 3, 5))
    # unique, ranked: (0,1)p1 correct, (1,2)p2 wrong, (2,0)p1 wrong; the copies of (0,1)p1 are dropped
    assert result.metrics["complete-P@2"] == pytest.approx(1 / 2)
    assert result.metrics["complete-R@2"] == pytest.approx(1 / 2)
    assert result.metrics["complete-P@5"] == pytest.approx(1 / 3)
    assert result.metrics["complete-F1@5"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert result.metrics["R@1"] == 1.0


def test_predcls_pair_accuracy_equal_across_k():
    rng = np.random.default_rng(0)
    gts, preds = [], []
    for _ in range(20):
        g = image([1, 2, 3, 4], rels=[(0, 1, 1), (2, 3, 2), (1, 3, 1)])
        pairs = [(s, o) for s in range(4) for o in range(4) if s != o]
        gts.append(g)
        preds.append(pred_image(g, pairs, rng.random((len(pairs), 3))))
    result = run(gts, preds, 3, ks=(5, 8, 12))
    assert result.metrics["A@5"] == result.metrics["A@8"] == result.metrics["A@12"] > 0
    assert result.metrics["R@5"] <= result.metrics["R@8"] <= result.metrics["R@12"]


def test_hits_describe_every_k():
    g = image([1, 2, 3], rels=[(0, 1, 1), (1, 2, 2)])
    p = pred_image(g, [(1, 2), (0, 1), (2, 0)], [row(3, p2=0.5), row(3, p1=0.9), row(3, p1=0.1)])
    hits = run([g], [p], 3, ks=(1, 3)).hits
    assert hits.gt_rank.tolist() == [0, 1]
    assert hits.gt_recalled(0, 1).tolist() == [True, False]
    rows, hit = hits.top_pairs(0, 3)
    assert rows.tolist() == [1, 0, 2] and hit.tolist() == [True, True, False]
    assert hits.pred_predicate.tolist() == [2, 1, 1]
    missing = run([g], [pred_image(g, [(2, 0)], [row(3, p1=1.0)])], 3).hits
    assert missing.gt_rank.tolist() == [NO_HIT, NO_HIT]


def test_conventions_and_per_predicate_cover_every_metric():
    g = image([1, 2], rels=[(0, 1, 1)])
    result = run([g], [pred_image(g, [(0, 1)], [row(3, p1=1.0)])], 3, ks=(20, 50, 100))
    assert set(result.conventions) == set(result.metrics)
    assert result.metrics["A@20"] == result.metrics["A@100"] == 1.0
    assert {"R@100", "ng-R@100"} <= set(result.per_predicate)
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    assert "complete-P@20" not in result.metrics and "zR@20" not in result.metrics


@pytest.mark.parametrize("typed, canonical", [
    ("mR@100", "mR@100"), ("ng-mR@50-present", "ng-mR@50-present"), ("R@20", "R@20"),
    ("kfree-R@20", "kfree-R@20"), ("k10-R@50", "k10-R@50"), ("complete-F1@20", "complete-F1@20"),
    ("tail-mR@100", "tail-mR@100"), ("phr-R@50", "phr-R@50"), ("zR@20", "zR@20"), ("A@50", "A@50"),
])
def test_parse_metric_accepts_names(typed, canonical):
    assert parse_metric(typed) == canonical


@pytest.mark.parametrize("typed", ["foo@1", "R@0", "mR", "R@x", "mR@100-absent", "r@50", "mr@100", "k10-r@50",
                                   "R@5_0", "R@\u0665\u0660", "R@+50"])
def test_parse_metric_rejects_with_families(typed):
    with pytest.raises(SgtoolError) as info:
        parse_metric(typed)
    assert "mR@K-present" in str(info.value) and "kfree-R@K" in str(info.value)
    assert len(METRIC_FAMILIES) == 23  # 20, then the VRD protocol's k1 / k10 / kfree-phr-R@K


def test_bad_input_is_a_user_error():
    g = image([1, 2], rels=[(0, 1, 1)])
    p = pred_image(g, [(0, 1)], [row(3, p1=1.0)])
    with pytest.raises(SgtoolError, match="Unknown task"):
        run([g], [p], 3, task="detect")
    with pytest.raises(SgtoolError, match="predicate columns"):
        evaluate(make_gt([g]), make_pred([p], 3), task="predcls", num_predicates=4)
    with pytest.raises(SgtoolError, match="cover 2 images"):
        evaluate(make_gt([g]), make_pred([p, p], 3), task="predcls", num_predicates=3)
    with pytest.raises(SgtoolError, match="box counts differ"):
        run([g], [pred_image(g, [(0, 1)], [row(3, p1=1.0)], boxes=FAR[:3], labels=[1, 2, 3])], 3)
    with pytest.raises(SgtoolError, match="nothing to recall"):
        run([image([1, 2])], [p], 3)
    with pytest.raises(SgtoolError, match="K values"):
        run([g], [p], 3, ks=(0,))


def test_empty_images_skip_leaves_the_image_out_of_every_metric():
    g = image([1, 2], rels=[(0, 1, 1)])
    lone = image([2], rels=[])  # one box: no candidate pair
    lone_gt = {**image([1, 2], rels=[(0, 1, 2)])}
    hit = pred_image(g, [(0, 1)], [row(3, p1=1.0)])
    no_pair = pred_image(lone_gt, [], [])
    gts, preds = [g, lone_gt, lone], [hit, no_pair, pred_image(lone, [], [])]
    zero = run(gts, preds, 3, ks=(1, 2))
    skip = run(gts, preds, 3, ks=(1, 2), empty_images="skip")
    assert zero.metrics["R@1"] == 0.5 and zero.metrics["mR@1"] == 0.5 and zero.metrics["A@1"] == 0.5
    assert skip.metrics["R@1"] == 1.0 and skip.metrics["ng-R@1"] == 1.0 and skip.metrics["A@1"] == 1.0
    assert skip.metrics["k1-R@1"] == 1.0 and skip.metrics["phr-R@1"] == 1.0
    assert skip.metrics["mR@1"] == 0.5 and skip.metrics["mR@1-present"] == 1.0  # predicate 2 is now absent
    assert zero.counts["images_with_relations_and_no_pair"] == 1 and zero.counts["images_left_out"] == 0
    assert skip.counts["images_left_out"] == 1
    assert "counts 0" in zero.conventions["R@1"] and "left out" in skip.conventions["R@1"]
    with pytest.raises(SgtoolError, match="--empty-images"):
        run(gts, preds, 3, empty_images="drop")


def test_empty_images_skip_of_every_image_leaves_nothing_defined():
    g = image([1, 2], rels=[(0, 1, 1)])
    result = run([g], [pred_image(g, [], [])], 3, ks=(1,), empty_images="skip")
    assert result.counts["images_left_out"] == 1
    assert all(math.isnan(result.metrics[name]) for name in ("R@1", "mR@1", "A@1", "k1-R@1", "phr-R@1"))
