"""Priors against a brute-force count written here with plain loops."""
from __future__ import annotations

import numpy as np

from sgtool.data.graphs import RelationSet, SceneGraphs, offsets_from_counts
from sgtool.priors import GroupRule, compute_priors, predicate_groups


def random_graphs(rng, images=40, classes=5, predicates=4):
    counts = rng.integers(0, 7, size=images)
    offsets = offsets_from_counts(counts)
    n = int(offsets[-1])
    xy = rng.uniform(0, 80, size=(n, 2))
    wh = rng.uniform(1, 30, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    pairs, preds, rel_counts = [], [], []
    for i in range(images):
        k = rng.integers(0, 5) if counts[i] >= 2 else 0
        for _ in range(k):
            s, o = rng.choice(counts[i], size=2, replace=False) + offsets[i]
            pairs.append((s, o))
            preds.append(rng.integers(1, predicates + 1))
        rel_counts.append(k)
    rels = RelationSet(np.array(pairs, dtype=np.int64).reshape(-1, 2), np.array(preds, dtype=np.int64),
                       offsets_from_counts(np.array(rel_counts)))
    return SceneGraphs(np.arange(images), np.full(images, 100), np.full(images, 100), np.zeros(images, np.int8),
                       offsets, boxes, rng.integers(1, classes + 1, size=n), rels)


def brute_force(g, c, p):
    fg = np.zeros((c, c, p))
    bg = np.zeros((c, c))
    for i in range(g.num_images):
        lo, hi = g.box_offsets[i], g.box_offsets[i + 1]
        for r in range(g.relations.offsets[i], g.relations.offsets[i + 1]):
            s, o = g.relations.pairs[r]
            fg[g.labels[s], g.labels[o], g.relations.predicates[r]] += 1
        overlapping, everything = [], []
        for a in range(lo, hi):
            for b in range(lo, hi):
                if a == b:
                    continue
                everything.append((a, b))
                A, B = g.boxes[a], g.boxes[b]
                if min(A[2], B[2]) - max(A[0], B[0]) > 0 and min(A[3], B[3]) - max(A[1], B[1]) > 0:
                    overlapping.append((a, b))
        for a, b in overlapping or everything:
            bg[g.labels[a], g.labels[b]] += 1
    fg[:, :, 0] = bg + 1
    return fg, np.log(fg / fg.sum(2)[:, :, None] + 1e-3)


def test_counts_and_log_frequency_match_brute_force():
    rng = np.random.default_rng(0)
    g = random_graphs(rng)
    c, p = 6, 5
    priors = compute_priors(g, c, p)
    fg, log_freq = brute_force(g, c, p)
    np.testing.assert_array_equal(priors["counts"], fg)
    np.testing.assert_allclose(priors["log_freq"], log_freq, rtol=1e-5)
    assert priors["predicate_counts"].tolist() == [0] + np.bincount(g.relations.predicates, minlength=p)[1:].tolist()


def test_triplet_prior_is_plus_one_smoothed_and_normalised():
    g = random_graphs(np.random.default_rng(1))
    priors = compute_priors(g, 6, 5)
    prior = priors["triplet_prior"]
    assert np.isclose(prior.sum(), 1.0)
    assert np.all(prior[0] == 0) and np.all(prior[:, 0] == 0) and np.all(prior[:, :, 0] == 0)
    fg = priors["counts"][1:, 1:, 1:]
    expected = (fg + 1) / (fg + 1).sum()
    np.testing.assert_allclose(prior[1:, 1:, 1:], expected)


def test_image_without_overlaps_counts_all_its_pairs():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [10, 0, 20, 10]], dtype=np.float32)  # touching is not overlapping
    g = SceneGraphs(np.array([0]), np.array([50]), np.array([50]), np.zeros(1, np.int8), np.array([0, 3]), boxes,
                    np.array([1, 2, 2]), RelationSet.empty(1))
    bg = compute_priors(g, 3, 2)["bg_counts"]
    assert bg.tolist() == [[0, 0, 0], [0, 0, 2], [0, 2, 2]]


def test_predicate_groups_by_thresholds_and_by_thirds():
    counts = np.array([0, 20_000, 10_000, 9_999, 600, 500, 499, 3])
    by_threshold = predicate_groups(counts, GroupRule(method="thresholds"))
    assert by_threshold.tolist() == [-1, 0, 1, 1, 1, 1, 2, 2]
    by_thirds = predicate_groups(np.array([0, 5, 50, 1, 7, 30, 2]), GroupRule())
    assert by_thirds.tolist() == [-1, 1, 0, 2, 1, 0, 2]
