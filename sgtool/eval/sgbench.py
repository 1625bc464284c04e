"""SGBench's metrics (Lorenz et al., CVPR 2024 workshop; the `sgbench` package), vectorised over a split.

SGBench first matches instances: each predicted box takes the ground-truth box of its label with the
highest IoU (exact areas; first such box on ties), if that IoU is >= 0.5, else none. Predicted
triplets [subject, object, predicate] (ranked, repeats removed first) are rewritten onto those GT boxes.
Per image with GT relations (GT triplets counted once each):
- `sgbench-R@K`: |GT triplets among the first K rewritten triplets| / |GT triplets|; mean over images.
- `sgbench-mR@K`: the same per predicate; per predicate the mean over images holding it, then the mean
  over the predicates present in the test ground truth.
- `PairR@K` (pair recall): |GT (subject, object) pairs among the pairs of the first K triplets| / |GT pairs|.
  (The package's `pair_recall` also cuts the GT list at K; the definition, and sgtool, use every GT pair.)
- `InstR` (instance recall): |GT boxes some predicted box matches| / |GT boxes|; mean over images.
- `PRank` (predicate rank): in the no-graph-constraint list, the 0-based rank of a GT predicate among the
  distinct predicates listed for its (matched) pair; mean over each image's GT relations of a predicate
  found there, then `nanmean` over every (image, predicate) cell. Lower is better.
For files with full predicate distributions the ranked list is sgtool's graph-constrained ranking and the
no-graph-constraint list is every (pair, predicate) by score; SGBench files give both lists themselves.
"""
from __future__ import annotations

import numpy as np

from sgtool.data.graphs import SceneGraphs, owner_of_rows
from sgtool.data.predictions import Predictions
from sgtool.eval.matching import expand_ranges
from sgtool.eval.ranking import best_predicate, grouped_descending
from sgtool.geometry import rowwise_iou

CONVENTIONS = {
    "sgbench-R@K": "SGBench recall: instances matched first (best same-label IoU >= 0.5, exact areas), unique GT triplets in the first K; mean over images",
    "sgbench-mR@K": "SGBench mean recall: per predicate, mean over images holding it; mean over the predicates present",
    "PairR@K": "SGBench pair recall: GT (subject, object) pairs among the first K matched pairs, every GT pair counted; mean over images",
    "InstR": "SGBench instance recall: GT boxes matched by some predicted box (best same-label IoU >= 0.5); mean over images",
    "PRank": "SGBench predicate rank: 0-based rank of the GT predicate among its matched pair's predicates (no graph constraint); nanmean over (image, predicate); lower is better",
}


def match_instances(gt: SceneGraphs, pred: Predictions, threshold: float = 0.5) -> np.ndarray:
    """(predicted boxes,) the global GT box row each predicted box matches, or -1 (SGBench's rule)."""
    p_image, g_image = owner_of_rows(pred.box_offsets), gt.image_of_box()
    width = int(max(gt.labels.max(initial=0), pred.labels.max(initial=0))) + 1
    g_key = g_image * width + gt.labels
    order = np.argsort(g_key, kind="stable")
    p_key = p_image * width + pred.labels
    start = np.searchsorted(g_key[order], p_key, side="left")
    stop = np.searchsorted(g_key[order], p_key, side="right")
    box, at = expand_ranges(start, stop - start)
    g_row = order[at]
    iou = rowwise_iou(pred.boxes[box], gt.boxes[g_row], legacy=False)
    best = np.lexsort((g_row, -iou, box))  # per predicted box: highest IoU, then the first GT box
    first = best[np.concatenate([[True], box[best][1:] != box[best][:-1]])] if len(best) else best
    out = np.full(len(pred.labels), -1, np.int64)
    ok = iou[first] >= threshold
    out[box[first][ok]] = g_row[first][ok]
    return out


def _gt_triplets(gt: SceneGraphs) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unique GT triplets: (image, subject row, object row, predicate), sorted."""
    rels = gt.relations
    table = np.column_stack([owner_of_rows(rels.offsets), rels.pairs, rels.predicates])
    table = np.unique(table, axis=0) if len(table) else table.reshape(0, 4)
    return table[:, 0], table[:, 1], table[:, 2], table[:, 3]


def _first_position(keys: np.ndarray, positions: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """For each wanted key, the smallest position listed with it (int64 max where none)."""
    none = np.iinfo(np.int64).max
    if not len(keys):
        return np.full(len(wanted), none, np.int64)
    order = np.lexsort((positions, keys))
    keys, positions = keys[order], positions[order]
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[at] == wanted, positions[at], none)


def _per_image_mean(hit: np.ndarray, image: np.ndarray, counted: np.ndarray) -> float:
    total = np.bincount(image, minlength=len(counted))
    hits = np.bincount(image, weights=hit, minlength=len(counted))
    has = counted & (total > 0)
    return float(np.mean(hits[has] / total[has])) if has.any() else float("nan")


def _mean_recall(hit: np.ndarray, image: np.ndarray, predicate: np.ndarray, num_predicates: int, n_img: int) -> float:
    keys, group = np.unique(image * num_predicates + predicate, return_inverse=True)
    ratio = np.bincount(group.ravel(), weights=hit, minlength=len(keys)) / np.bincount(group.ravel(), minlength=len(keys))
    per = np.bincount(keys % num_predicates, weights=ratio, minlength=num_predicates)
    held = np.bincount(keys % num_predicates, minlength=num_predicates)
    return float(np.mean(per[held > 0] / held[held > 0])) if (held > 0).any() else float("nan")


def _ranked_recalls(gt: SceneGraphs, pred: Predictions, hits, mapped: np.ndarray, ks: tuple[int, ...],
                    counted: np.ndarray, num_predicates: int) -> dict[str, float]:
    """sgbench-R@K, sgbench-mR@K and PairR@K from the graph-constrained ranking (its top max(K))."""
    rows = np.flatnonzero(hits.pred_rank < max(ks))
    s, o = mapped[pred.pairs[rows, 0]], mapped[pred.pairs[rows, 1]]
    position = hits.pred_rank[rows]
    g_img, g_s, g_o, g_p = _gt_triplets(gt)
    n = max(len(gt.labels), 1)
    gt_pair = g_s * n + g_o  # GT box rows are global: a pair of rows names its image
    ok = (s >= 0) & (o >= 0)
    pair_key = s[ok] * n + o[ok]
    triplet_pos = _first_position(pair_key * num_predicates + hits.pred_predicate[rows][ok], position[ok],
                                  gt_pair * num_predicates + g_p)
    pair_keys, first = np.unique(gt_pair, return_index=True)
    pair_pos = _first_position(pair_key, position[ok], pair_keys)
    out = {}
    for k in ks:
        hit = triplet_pos < k
        out[f"sgbench-R@{k}"] = _per_image_mean(hit, g_img, counted)
        keep = counted[g_img]
        out[f"sgbench-mR@{k}"] = _mean_recall(hit[keep], g_img[keep], g_p[keep], num_predicates, gt.num_images)
        out[f"PairR@{k}"] = _per_image_mean(pair_pos < k, g_img[first], counted)
    return out


def _prank_entries(pred: Predictions, mapped: np.ndarray, task: str, ng_lists: list[np.ndarray] | None,
                   gt_pairs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """No-graph-constraint entries on GT pairs: (GT pair key, predicate, order key: lower = listed earlier)."""
    if ng_lists is not None:  # SGBench's own list: file order
        image = np.repeat(np.arange(len(ng_lists)), [len(t) for t in ng_lists])
        table = np.concatenate(ng_lists) if ng_lists else np.zeros((0, 3), np.int64)
        s = mapped[table[:, 0] + pred.box_offsets[image]]
        o = mapped[table[:, 1] + pred.box_offsets[image]]
        key = s * n + o
        on = (s >= 0) & (o >= 0) & np.isin(key, gt_pairs)
        return key[on], table[on, 2], np.flatnonzero(on).astype(np.float64)
    s, o = mapped[pred.pairs[:, 0]], mapped[pred.pairs[:, 1]]
    key = s * n + o
    rows = np.flatnonzero((s >= 0) & (o >= 0) & np.isin(key, gt_pairs))
    scale = np.ones(len(rows)) if task == "predcls" else \
        pred.scores[pred.pairs[rows, 0]].astype(np.float64) * pred.scores[pred.pairs[rows, 1]]
    width = pred.rel_scores.shape[1] - 1
    score = pred.rel_scores[rows, 1:].astype(np.float64) * scale[:, None]
    order = np.argsort(grouped_descending(score.ravel(), np.zeros(score.size, np.int64)), kind="stable")
    return np.repeat(key[rows], width), np.tile(np.arange(1, width + 1), len(rows)), order.astype(np.float64)


def predicate_rank(gt: SceneGraphs, pred: Predictions, mapped: np.ndarray, task: str,
                   ng_lists: list[np.ndarray] | None, counted: np.ndarray, num_predicates: int) -> float:
    g_img, g_s, g_o, g_p = _gt_triplets(gt)
    keep = counted[g_img]
    g_img, g_s, g_o, g_p = g_img[keep], g_s[keep], g_o[keep], g_p[keep]
    n = max(len(gt.labels), 1)
    gt_pair = g_s * n + g_o
    key, predicate, order = _prank_entries(pred, mapped, task, ng_lists, np.unique(gt_pair), n)
    sort = np.lexsort((order, key))
    key, predicate = key[sort], predicate[sort]
    triplet = key * num_predicates + predicate
    group_start = np.searchsorted(key, key)
    new = np.ones(len(triplet), bool)  # first listing of each (pair, predicate)
    if len(triplet):
        seen_order = np.lexsort((np.arange(len(triplet)), triplet))
        repeat = np.zeros(len(triplet), bool)
        repeat[seen_order[1:]] = triplet[seen_order[1:]] == triplet[seen_order[:-1]]
        new = ~repeat
    distinct_before = np.cumsum(new) - new
    rank = (distinct_before - distinct_before[group_start])[new]
    found = _first_position(triplet[new], rank, gt_pair * num_predicates + g_p)
    has = found != np.iinfo(np.int64).max
    if not has.any():
        return float("nan")
    cells, group = np.unique(g_img[has] * num_predicates + g_p[has], return_inverse=True)
    sums = np.bincount(group.ravel(), weights=found[has])
    return float(np.mean(sums / np.bincount(group.ravel())))


def instance_recall(gt: SceneGraphs, mapped: np.ndarray, counted: np.ndarray) -> float:
    matched = np.unique(mapped[mapped >= 0])
    per_image = np.bincount(gt.image_of_box()[matched], minlength=gt.num_images)
    boxes = gt.box_counts()
    use = counted & (boxes > 0)
    return float(np.mean(per_image[use] / boxes[use])) if use.any() else float("nan")


def sgbench_metrics(gt: SceneGraphs, pred: Predictions, hits, ks: tuple[int, ...], task: str,
                    ng_lists: list[np.ndarray] | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """SGBench's metrics over the images with GT relations; `hits` is sgtool's ranking of the same predictions."""
    num_predicates = pred.rel_scores.shape[1]
    mapped = match_instances(gt, pred)
    counted = gt.relations.counts() > 0
    metrics = _ranked_recalls(gt, pred, hits, mapped, ks, counted, num_predicates)
    metrics["InstR"] = instance_recall(gt, mapped, counted)
    metrics["PRank"] = predicate_rank(gt, pred, mapped, task, ng_lists, counted, num_predicates)
    conventions = {name: CONVENTIONS[name.split("@")[0] + ("@K" if "@" in name else "")] for name in metrics}
    return metrics, conventions
