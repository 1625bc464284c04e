"""The vectorised metric engine against a slow, plain-Python reference written here from docs/evaluation.md."""
from __future__ import annotations

import math

import numpy as np
import pytest

from eval_helpers import make_gt, make_pred
from sgtool.eval import evaluate

KS = (1, 3, 5, 20)


# ------------------------------------------------------------------ the reference (loops only)

def ref_iou(a, b, legacy=True):
    one = 1.0 if legacy else 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0]) + one
    ih = min(a[3], b[3]) - max(a[1], b[1]) + one
    inter = max(iw, 0.0) * max(ih, 0.0)
    area = lambda r: (r[2] - r[0] + one) * (r[3] - r[1] + one)  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def ref_union(a, b):
    return [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]


def ref_hits(triplet, g, phrase=False, thr=0.5):
    """triplet / g: (subj box, subj label, obj box, obj label, predicate)."""
    sb, sl, ob, ol, p = triplet
    gsb, gsl, gob, gol, gp = g
    if (sl, ol, p) != (gsl, gol, gp):
        return False
    if phrase:
        return ref_iou(ref_union(sb, ob), ref_union(gsb, gob)) >= thr
    return ref_iou(sb, gsb) >= thr and ref_iou(ob, gob) >= thr


def ref_image(gt_im, pr_im, task, P, top_k_per_pair):
    """Ranked lists of one image: graph-constrained, no-graph, k-per-pair, GT-pair-filtered."""
    boxes = [list(map(float, b)) for b in np.asarray(pr_im["boxes"], np.float32).reshape(-1, 4)]
    labels = [int(x) for x in pr_im["labels"]]
    scores = [1.0 if task == "predcls" else float(np.float32(s)) for s in pr_im.get("scores", [1.0] * len(labels))]
    rs = np.asarray(pr_im["rel_scores"], np.float32).reshape(-1, P)
    pairs = [tuple(p) for p in pr_im["pairs"]]

    def triplet(c, p):
        s, o = pairs[c]
        return (boxes[s], labels[s], boxes[o], labels[o], p)

    def score(c, p):
        s, o = pairs[c]
        return float(rs[c, p]) * (scores[s] * scores[o])

    gc = []
    for c in range(len(pairs)):
        best = 1
        for p in range(2, P):
            if rs[c, p] > rs[c, best]:
                best = p
        gc.append((score(c, best), c, best))
    gc = sorted(gc, key=lambda e: -e[0])  # Python's sort is stable
    ng = sorted([(score(c, p), c, p) for c in range(len(pairs)) for p in range(1, P)], key=lambda e: -e[0])
    klists = {}
    for k in top_k_per_pair:
        allowed = set()
        for c in range(len(pairs)):
            by_prob = sorted(range(1, P), key=lambda p: (-float(rs[c, p]), p))
            allowed.update((c, p) for p in (by_prob if k is None else by_prob[:k]))
        klists[k] = [e for e in ng if (e[1], e[2]) in allowed]
    gt_pairs = {(s, o) for s, o, _ in gt_im.get("rels", [])}
    acc = [e for e in gc if pairs[e[1]] in gt_pairs]
    return triplet, gc, ng, klists, acc


def gt_triplets(gt_im, key="rels"):
    boxes = [list(map(float, b)) for b in np.asarray(gt_im["boxes"], np.float32).reshape(-1, 4)]
    return [(boxes[s], gt_im["labels"][s], boxes[o], gt_im["labels"][o], p) for s, o, p in gt_im.get(key, [])]


def recalled(ranked, triplet, gts, K, phrase=False):
    top = [triplet(c, p) for _, c, p in ranked[:K]]
    return [any(ref_hits(t, g, phrase) for t in top) for g in gts]


def reference(gt_images, pr_images, task, P, ks, groups=None, seen=None, top_k_per_pair=(1, 10, None)):
    out = {}
    per_image = []
    for gt_im, pr_im in zip(gt_images, pr_images):
        per_image.append(ref_image(gt_im, pr_im, task, P, top_k_per_pair))
    for K in ks:
        for prefix, which in (("", 1), ("ng-", 2)):
            recalls, zero, per_pred = [], [], {p: [] for p in range(1, P)}
            for gt_im, lists in zip(gt_images, per_image):
                gts = gt_triplets(gt_im)
                if not gts:
                    continue
                hit = recalled(lists[which], lists[0], gts, K)
                recalls.append(sum(hit) / len(gts))
                for p in {g[4] for g in gts}:
                    idx = [i for i, g in enumerate(gts) if g[4] == p]
                    per_pred[p].append(sum(hit[i] for i in idx) / len(idx))
                if seen is not None:
                    unseen = [i for i, g in enumerate(gts) if (g[1], g[4], g[3]) not in seen]
                    if unseen:
                        zero.append(sum(hit[i] for i in unseen) / len(unseen))
            out[f"{prefix}R@{K}"] = sum(recalls) / len(recalls)
            rec = {p: (sum(v) / len(v) if v else None) for p, v in per_pred.items()}
            out[f"{prefix}mR@{K}"] = sum(r or 0.0 for r in rec.values()) / (P - 1)
            present = [r for r in rec.values() if r is not None]
            out[f"{prefix}mR@{K}-present"] = sum(present) / len(present)
            if seen is not None:
                out[f"{prefix}zR@{K}"] = sum(zero) / len(zero) if zero else math.nan
            if prefix == "" and groups is not None:
                for g, name in enumerate(("head", "body", "tail")):
                    members = [p for p in range(1, P) if groups[p] == g]
                    out[f"{name}-mR@{K}"] = sum(rec[p] or 0.0 for p in members) / len(members)
        out[f"F1@{K}"] = 2 * out[f"R@{K}"] * out[f"mR@{K}"] / (out[f"R@{K}"] + out[f"mR@{K}"]) \
            if out[f"R@{K}"] + out[f"mR@{K}"] > 0 else 0.0
        phr, hits, total, acc_hits = [], {k: 0 for k in top_k_per_pair}, 0, 0
        phr_hits = {k: 0 for k in top_k_per_pair}
        for gt_im, lists in zip(gt_images, per_image):
            gts = gt_triplets(gt_im)
            if not gts:
                continue
            phr.append(sum(recalled(lists[1], lists[0], gts, K, phrase=True)) / len(gts))
            total += len(gts)
            for k in top_k_per_pair:
                hits[k] += sum(recalled(lists[3][k], lists[0], gts, K))
                phr_hits[k] += sum(recalled(lists[3][k], lists[0], gts, K, phrase=True))
            acc_hits += sum(recalled(lists[4], lists[0], gts, K))
        out[f"phr-R@{K}"] = sum(phr) / len(phr)
        for k in top_k_per_pair:
            out[f"k{'free' if k is None else k}-R@{K}"] = hits[k] / total
            out[f"k{'free' if k is None else k}-phr-R@{K}"] = phr_hits[k] / total  # the VRD protocol: split-level
        if task != "sgdet":
            out[f"A@{K}"] = acc_hits / total
    return out


def reference_complete(gt_images, pr_images, task, P, ks):
    out = {}
    for K in ks:
        correct = predicted = recalled_n = total = 0
        for gt_im, pr_im in zip(gt_images, pr_images):
            triplet, gc, *_ = ref_image(gt_im, pr_im, task, P, ())
            unique, seen_keys = [], set()
            for _, c, p in gc:
                t = triplet(c, p)
                key = (tuple(t[0]), t[1], tuple(t[2]), t[3], p)
                if key not in seen_keys:
                    seen_keys.add(key)
                    unique.append(t)
            top = unique[:K]
            gts = gt_triplets(gt_im, "complete")
            predicted += len(top)
            correct += sum(any(ref_hits(t, g) for g in gts) for t in top)
            total += len(gts)
            recalled_n += sum(any(ref_hits(t, g) for t in top) for g in gts)
        prec, rec = correct / predicted, recalled_n / total
        out[f"complete-P@{K}"], out[f"complete-R@{K}"] = prec, rec
        out[f"complete-F1@{K}"] = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    return out


# ------------------------------------------------------------------ random splits

def random_boxes(rng, n):
    xy = rng.integers(0, 40, size=(n, 2))
    wh = rng.integers(5, 30, size=(n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def random_split(seed, task, P=6, n_images=14, classes=3):
    """Small images with few labels (so same-label boxes abound), quantised scores (so ties abound)."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for i in range(n_images):
        n = int(rng.integers(0, 6))
        boxes = random_boxes(rng, n)
        if n >= 2 and rng.random() < 0.5:  # a near-copy of box 0, same label
            boxes[1] = boxes[0] + rng.integers(0, 3, size=4)
        labels = rng.integers(1, classes + 1, size=n)
        if n >= 2:
            labels[1] = labels[0]
        ordered = [(s, o) for s in range(n) for o in range(n) if s != o]
        n_rel = 0 if i % 5 == 4 or not ordered else int(rng.integers(1, 6))
        rels = [list(ordered[rng.integers(len(ordered))]) + [int(rng.integers(1, P))] for _ in range(n_rel)]
        if rels and rng.random() < 0.4:
            rels.append(list(rels[0]))  # duplicate GT triplet
        extra = [list(ordered[rng.integers(len(ordered))]) + [int(rng.integers(1, P))] for _ in range(2)] if ordered else []
        gts.append({"boxes": boxes, "labels": labels.tolist(), "rels": rels, "complete": rels + extra})
        if task == "sgdet":
            m = n + int(rng.integers(0, 3))
            pboxes = np.concatenate([boxes + rng.integers(-3, 4, size=boxes.shape), random_boxes(rng, m - n)])
            plabels = rng.integers(1, classes + 1, size=m)
            plabels[:n] = np.where(rng.random(n) < 0.7, labels, plabels[:n])
        else:
            m, pboxes = n, boxes.copy()
            plabels = labels if task == "predcls" else np.where(rng.random(n) < 0.7, labels, rng.integers(1, classes + 1, size=n))
        pairs = [(s, o) for s in range(m) for o in range(m) if s != o]
        rng.shuffle(pairs)
        pairs = pairs[: int(rng.integers(len(pairs) // 2, len(pairs) + 1))] if task == "sgdet" else pairs
        if pairs and task == "sgdet" and rng.random() < 0.3:
            pairs.append(pairs[0])  # a duplicate predicted pair
        if i == 3:
            pairs = []  # an image with GT but no predicted pair
        rel_scores = rng.integers(0, 5, size=(len(pairs), P)) / 4.0
        scores = rng.integers(1, 5, size=m) / 4.0
        preds.append({"boxes": pboxes, "labels": plabels.tolist(), "scores": scores, "pairs": pairs,
                      "rel_scores": rel_scores})
    return gts, preds


@pytest.mark.parametrize("ks", [KS, (1, 2, 5)], ids=["kmax20", "kmax5"])
@pytest.mark.parametrize("task", ["predcls", "sgcls", "sgdet"])
@pytest.mark.parametrize("seed", range(6))
def test_matches_reference(task, seed, ks):
    P = 6
    gts, preds = random_split(seed, task, P)
    groups = np.array([-1, 0, 0, 1, 2, 2])
    rng = np.random.default_rng(seed + 100)
    seen = {(int(rng.integers(1, 4)), int(rng.integers(1, P)), int(rng.integers(1, 4))) for _ in range(12)}
    gt = make_gt(gts, with_complete=True)
    result = evaluate(gt, make_pred(preds, P), task=task, num_predicates=P, ks=ks, predicate_groups=groups,
                      seen_triplets=np.array(sorted(seen)))
    expected = reference(gts, preds, task, P, ks, groups, seen)
    expected.update(reference_complete(gts, preds, task, P, ks))
    assert set(result.metrics) == set(expected)
    for name, value in expected.items():
        got = result.metrics[name]
        assert (math.isnan(value) and math.isnan(got)) or got == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize("ks", [KS, (1, 2, 4)], ids=["kmax20", "kmax4"])
@pytest.mark.parametrize("seed", range(3))
def test_matches_reference_continuous_scores(seed, ks):
    """Same with continuous scores and more predicates (ng lists longer than K)."""
    P = 9
    gts, preds = random_split(seed, "sgcls", P, n_images=10)
    rng = np.random.default_rng(seed)
    for pr in preds:
        pr["rel_scores"] = rng.random(np.shape(pr["rel_scores"])).astype(np.float32)
        pr["scores"] = rng.random(len(pr["labels"])).astype(np.float32)
    result = evaluate(make_gt(gts), make_pred(preds, P), task="sgcls", num_predicates=P, ks=ks,
                      top_k_per_pair=(1, 2, None))
    expected = reference(gts, preds, "sgcls", P, ks, top_k_per_pair=(1, 2, None))
    assert set(result.metrics) == set(expected)
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, abs=1e-12), name


def test_hits_agree_with_reference():
    P = 6
    gts, preds = random_split(7, "sgcls", P)
    result = evaluate(make_gt(gts), make_pred(preds, P), task="sgcls", num_predicates=P, ks=(3,))
    for i, (gt_im, pr_im) in enumerate(zip(gts, preds)):
        triplet, gc, ng, *_ = ref_image(gt_im, pr_im, "sgcls", P, ())
        expected = recalled(gc, triplet, gt_triplets(gt_im), 3)
        assert result.hits.gt_recalled(i, 3).tolist() == expected
        assert result.hits.gt_recalled(i, 3, ng=True).tolist() == recalled(ng, triplet, gt_triplets(gt_im), 3)
        rows, hit = result.hits.top_pairs(i, 3)
        local = rows - result.hits.pair_offsets[i]
        assert local.tolist() == [c for _, c, _ in gc[:3]]
        gts_i = gt_triplets(gt_im)
        assert hit.tolist() == [any(ref_hits(triplet(c, p), g) for g in gts_i) for _, c, p in gc[:3]]


def test_batches_and_threads_change_nothing(monkeypatch):
    from sgtool.eval import metrics
    from sgtool.ui import Reporter

    P = 6
    gts, preds = random_split(11, "sgdet", P, n_images=30)
    gt, pred = make_gt(gts, with_complete=True), make_pred(preds, P)
    one = evaluate(gt, pred, task="sgdet", num_predicates=P, ks=(1, 3))
    monkeypatch.setattr(metrics, "BATCH_PAIRS", 7)
    monkeypatch.setattr(metrics, "BATCH_IMAGES", 4)
    assert len(metrics._batch_bounds(pred.pair_offsets)) > 8
    many = evaluate(gt, pred, task="sgdet", num_predicates=P, ks=(1, 3), workers=2, reporter=Reporter(quiet=True))
    assert many.metrics == pytest.approx(one.metrics, nan_ok=True)
    assert np.array_equal(many.hits.gt_rank, one.hits.gt_rank)
    assert np.array_equal(many.hits.pred_rank, one.hits.pred_rank)
