"""Rows that carry their own labels (Predictions.pair_labels, several rows per box pair): the
evaluator's k-per-box-pair and no-graph lists against a brute-force ranking of every entry."""
from __future__ import annotations

import numpy as np
import pytest

from eval_helpers import make_gt, make_pred
from sgtool.eval import evaluate

P = 5  # background + 4 predicates
KS = (2, 5)


def _random_split(seed: int) -> tuple[list[dict], list[dict], np.ndarray]:
    rng = np.random.default_rng(seed)
    gt_images, pred_images, row_labels = [], [], []
    for _ in range(4):
        n = int(rng.integers(2, 6))  # 2 boxes: fewer box pairs than max(K); 4-5: more
        boxes = [[10 * i, 0, 10 * i + 8, 8] for i in range(n)]
        labels = rng.integers(1, 3, n)
        pairs = [(s, o) for s in range(n) for o in range(n) if s != o]
        chosen = rng.choice(len(pairs), size=min(3, len(pairs)), replace=False)
        rels = [[*pairs[c], int(rng.integers(1, P))] for c in chosen]
        gt_images.append({"boxes": boxes, "labels": labels, "rels": rels})
        rows, own = [], []
        for s, o in pairs:
            for _ in range(int(rng.integers(1, 4))):  # 1-3 labellings of the box pair
                rows.append((s, o))
                own.append(rng.integers(1, 3, 2))
        scores = rng.dirichlet(np.ones(P), len(rows))
        for s, o, p in rels:  # most GT relations get a labelling that could hit, at some score
            if rng.random() < 0.8:
                r = int(rng.choice([i for i, row in enumerate(rows) if row == (s, o)]))
                own[r] = labels[[s, o]]
                scores[r, p] += rng.uniform(0, 2)
                scores[r] /= scores[r].sum()
        pred_images.append({"boxes": boxes, "labels": np.ones(n, np.int64), "scores": rng.uniform(0.2, 1, n),
                            "pairs": rows, "rel_scores": scores})
        row_labels.append(np.array(own))
    return gt_images, pred_images, np.concatenate(row_labels)


def _brute_force(gt_images: list[dict], pred_images: list[dict], row_labels: np.ndarray, k: int | None,
                 K: int) -> tuple[int, list[float]]:
    """(GT relations hit over the split, per-image recall): every entry ranked, k best per box pair."""
    hits_total, per_image, first = 0, [], 0
    for gt, pred in zip(gt_images, pred_images):
        scale = np.asarray(pred["scores"], np.float64)
        entries = []  # (score, prob, row, predicate, box pair)
        for r, (s, o) in enumerate(pred["pairs"]):
            for q in range(1, P):
                prob = float(np.float32(pred["rel_scores"][r][q]))
                entries.append((prob * scale[s] * scale[o], prob, r, q, (s, o)))
        if k is not None:
            kept = []
            for bp in {e[4] for e in entries}:
                same = sorted((e for e in entries if e[4] == bp), key=lambda e: (-e[1], e[2], e[3]))
                kept += same[:k]
            entries = kept
        top = sorted(entries, key=lambda e: (-e[0], e[2], e[3]))[:K]
        hit = 0
        for s, o, p in gt["rels"]:
            want = (int(gt["labels"][s]), int(gt["labels"][o]))
            hit += any(e[4] == (s, o) and e[3] == p and tuple(row_labels[first + e[2]]) == want for e in top)
        hits_total += hit
        per_image.append(hit / len(gt["rels"]))
        first += len(pred["pairs"])
    return hits_total, per_image


@pytest.mark.parametrize("task", ["sgcls", "sgdet"])  # sgdet: no GT-pair ranking widens the matched rows
def test_k_per_box_pair_and_no_graph_lists_equal_brute_force(task):
    for seed in range(6):
        gt_images, pred_images, row_labels = _random_split(seed)
        gt = make_gt(gt_images)
        pred = make_pred(pred_images, P)
        pred.pair_labels = row_labels
        metrics = evaluate(gt, pred, task=task, num_predicates=P, ks=KS, top_k_per_pair=(1, 2)).metrics
        n_rel = len(gt.relations)
        for K in KS:
            for k in (1, 2):
                hits, _ = _brute_force(gt_images, pred_images, row_labels, k, K)
                assert metrics[f"k{k}-R@{K}"] == hits / n_rel, (seed, k, K)
            _, per_image = _brute_force(gt_images, pred_images, row_labels, None, K)
            assert np.isclose(metrics[f"ng-R@{K}"], np.mean(per_image)), (seed, K)


@pytest.mark.parametrize("task", ["sgcls", "sgdet"])
def test_a_box_pair_outside_the_rows_top_still_counts_in_k1(task):
    """Box pair A has two labellings that outscore box pair B's only row: B's row is not among the
    top 2 rows, but k = 1 per box pair keeps one entry of A, so B's row is second of the k1 list."""
    gt = make_gt([{"boxes": [[0, 0, 8, 8], [20, 0, 28, 8], [40, 0, 48, 8]], "labels": [1, 1, 2],
                   "rels": [[0, 2, 1]]}])
    rel = np.zeros((3, 3), np.float32)
    rel[:, 1] = [0.9, 0.85, 0.8]
    pred = make_pred([{"boxes": [[0, 0, 8, 8], [20, 0, 28, 8], [40, 0, 48, 8]], "labels": [1, 1, 1],
                       "pairs": [[0, 1], [0, 1], [0, 2]], "rel_scores": rel}], 3)
    pred.pair_labels = np.array([[1, 1], [2, 1], [1, 2]])
    metrics = evaluate(gt, pred, task=task, num_predicates=3, ks=(2,), top_k_per_pair=(1,)).metrics
    assert metrics["k1-R@2"] == 1.0 and metrics["R@2"] == 0.0 and metrics["ng-R@2"] == 0.0
