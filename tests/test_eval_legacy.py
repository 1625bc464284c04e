"""The evaluator (rank first, then match only what a top-K list can hold) against a frozen copy of
the evaluator before issue 20 (tests/legacy_eval.py: match every same-label candidate, then cut),
on small versions of the benchmark's loads: every metric and every hit rank must be identical."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

import legacy_eval
from sgtool.eval import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from eval_loads import real_like_split, sgdet_like_split, synthetic_split  # noqa: E402


def both(gt, pred, task, ks=(20, 50, 100)):
    P = pred.rel_scores.shape[1]
    rels = gt.relations
    seen = np.stack([gt.labels[rels.pairs[:, 0]], rels.predicates, gt.labels[rels.pairs[:, 1]]], 1)[::3]
    groups = np.array([-1] + [i * 3 // (P - 1) for i in range(P - 1)])
    options = dict(task=task, num_predicates=P, ks=ks, predicate_groups=groups, seen_triplets=seen)
    return evaluate(gt, pred, **options), legacy_eval.evaluate(gt, pred, **options)


def assert_identical(new, old):
    added = {name for name in new.metrics if "-phr-R@" in name}  # the VRD protocol's phrase recall, added after
    assert new.metrics.keys() - added == old.metrics.keys()
    for name, value in old.metrics.items():
        got = new.metrics[name]
        assert got == value or (math.isnan(got) and math.isnan(value)), name
    assert np.array_equal(new.hits.gt_rank, old.hits.gt_rank)
    assert np.array_equal(new.hits.ng_gt_rank, old.hits.ng_gt_rank)
    assert np.array_equal(new.hits.pred_rank, old.hits.pred_rank)
    top = new.hits.pred_rank < 100  # pred_hit is known for the ranked top only
    assert np.array_equal(new.hits.pred_hit[top], old.hits.pred_hit[top])


@pytest.mark.parametrize("seed", range(3))
def test_real_like_load(seed):
    gt, pred = real_like_split(30, seed=seed, max_boxes=90)
    new, old = both(gt, pred, "predcls")
    assert old.metrics["R@100"] > 0.05  # the load has hits to find
    assert_identical(new, old)
    new, old = both(gt, pred, "sgcls", ks=(1, 5, 20))
    assert_identical(new, old)


@pytest.mark.parametrize("seed", range(3))
def test_sgdet_like_load(seed):
    gt, pred = sgdet_like_split(8, seed=seed, detections=40)
    new, old = both(gt, pred, "sgdet")
    assert old.metrics["R@100"] > 0.0
    assert_identical(new, old)


def test_synthetic_load_with_complete_ground_truth():
    gt, pred = synthetic_split(60, 12, 11, 6, seed=3, background=0.5)
    new, old = both(gt, pred, "predcls", ks=(5, 20))
    assert "complete-P@20" in new.metrics
    assert_identical(new, old)


def test_the_benchmarks_legacy_comparison_ignores_only_added_metrics():
    """`bench_eval.py --compare-legacy` says identical when the legacy metrics are, though phrase recall was added
    since, and not identical when one legacy metric moves."""
    import bench_eval

    gt, pred = real_like_split(20, seed=0, max_boxes=60)
    new, old = both(gt, pred, "predcls")
    assert any("-phr-R@" in name for name in new.metrics.keys() - old.metrics.keys())
    assert bench_eval.same(new.metrics, old.metrics)
    moved = dict(new.metrics, **{"R@50": new.metrics["R@50"] + 1e-9})
    assert not bench_eval.same(moved, old.metrics)
    assert not bench_eval.same({k: v for k, v in new.metrics.items() if k != "mR@100"}, old.metrics)
