"""Triplet matching: which predicted pairs agree with which ground-truth relations.

Matching goes through labels and boxes, never box indices (EVALUATION.md): a predicted pair
(s, o) is a candidate for a GT relation (gs, go, p) when label(s) = label(gs) and
label(o) = label(go) in the same image. For each candidate we record whether the subject and
object boxes both reach the IoU threshold (relationship detection) and whether the union boxes
do (phrase detection). The predicate test is left to the caller, because it depends on the
ranking (one predicate per pair, or every predicate).

All functions work on one batch of images with batch-local rows and image numbers 0..B-1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NO_HIT = np.iinfo(np.int64).max  # rank of a GT relation that no prediction hits


def expand_ranges(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ragged expansion: for each i, rows starts[i] .. starts[i] + counts[i] - 1, with their owner i."""
    counts = counts.astype(np.int64, copy=False)
    owner = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    first = np.cumsum(counts) - counts
    rows = np.arange(int(counts.sum()), dtype=np.int64) - first[owner] + starts[owner]
    return owner, rows


def box_areas(boxes: np.ndarray, legacy: bool) -> np.ndarray:
    """Areas; legacy = SGB's +1-pixel convention (x2 - x1 + 1)(y2 - y1 + 1)."""
    one = 1.0 if legacy else 0.0
    return (boxes[:, 2] - boxes[:, 0] + one) * (boxes[:, 3] - boxes[:, 1] + one)


def rowwise_iou(a: np.ndarray, b: np.ndarray, legacy: bool = True) -> np.ndarray:
    """IoU of a[k] with b[k] (float64), boxes xyxy."""
    a = a.astype(np.float64, copy=False)
    b = b.astype(np.float64, copy=False)
    one = 1.0 if legacy else 0.0
    iw = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + one
    ih = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + one
    inter = np.clip(iw, 0.0, None) * np.clip(ih, 0.0, None)
    union = box_areas(a, legacy) + box_areas(b, legacy) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def union_boxes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest box holding a[k] and b[k]."""
    return np.concatenate([np.minimum(a[:, :2], b[:, :2]), np.maximum(a[:, 2:], b[:, 2:])], axis=1)


@dataclass
class Candidates:
    """(GT relation, predicted pair) combinations whose subject and object labels agree."""

    gt: np.ndarray  # (T,) row into the GT relations given
    pair: np.ndarray  # (T,) row into the predicted pairs given
    rel_ok: np.ndarray  # (T,) bool: subject IoU and object IoU >= threshold
    phr_ok: np.ndarray  # (T,) bool: union-box IoU >= threshold


@dataclass
class BatchBoxes:
    """Boxes of one batch of images: rows, labels and the (B + 1,) offsets."""

    boxes: np.ndarray
    labels: np.ndarray
    offsets: np.ndarray

    def image_of(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.offsets) - 1, dtype=np.int64), np.diff(self.offsets))


def _same_label_boxes(gt: BatchBoxes, pred: BatchBoxes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each GT box: start and count in `order`, the pred boxes of its image with its label."""
    width = int(max(gt.labels.max(initial=0), pred.labels.max(initial=0))) + 1
    pred_key = pred.image_of() * width + pred.labels
    order = np.argsort(pred_key, kind="stable")
    sorted_key = pred_key[order]
    gt_key = gt.image_of() * width + gt.labels
    start = np.searchsorted(sorted_key, gt_key, side="left")
    stop = np.searchsorted(sorted_key, gt_key, side="right")
    return order, start, stop - start


class PairIndex:
    """Look up predicted pair rows by (subject row, object row); duplicate pairs allowed."""

    def __init__(self, pairs: np.ndarray, pred: BatchBoxes) -> None:
        self.width = int(np.diff(pred.offsets).max(initial=0))
        self.local = pred.offsets[pred.image_of()] if len(pred.labels) else np.zeros(0, np.int64)
        keys = self.key(pairs[:, 0], pairs[:, 1])
        size = max(len(pred.labels) * self.width, 1)
        self.counts = np.bincount(keys, minlength=size)
        self.starts = np.cumsum(self.counts) - self.counts
        self.order = np.argsort(keys, kind="stable")
        self.unique = bool(self.counts.max(initial=0) <= 1)

    def key(self, subj: np.ndarray, obj: np.ndarray) -> np.ndarray:
        return subj * self.width + (obj - self.local[obj])

    def lookup(self, subj: np.ndarray, obj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query index, pair row) for every stored pair equal to (subj[q], obj[q])."""
        keys = self.key(subj, obj)
        query, rows = expand_ranges(self.starts[keys], self.counts[keys])
        return query, self.order[rows]


def match_candidates(gt_pairs: np.ndarray, gt: BatchBoxes, pred_pairs: np.ndarray, pred: BatchBoxes,
                     index: PairIndex, iou_threshold: float, legacy: bool) -> Candidates:
    """Every (GT relation, predicted pair) with equal labels, with its box tests (vectorised)."""
    order, start, count = _same_label_boxes(gt, pred)
    gs, go = gt_pairs[:, 0], gt_pairs[:, 1]
    n_obj = count[go]
    rel, t = expand_ranges(np.zeros(len(gs), np.int64), count[gs] * n_obj)
    ps = order[start[gs][rel] + t // np.maximum(n_obj[rel], 1)]
    po = order[start[go][rel] + t % np.maximum(n_obj[rel], 1)]
    query, pair = index.lookup(ps, po)
    rel = rel[query]
    g_s, g_o = gt.boxes[gs[rel]], gt.boxes[go[rel]]
    p_s, p_o = pred.boxes[pred_pairs[pair, 0]], pred.boxes[pred_pairs[pair, 1]]
    rel_ok = (rowwise_iou(g_s, p_s, legacy) >= iou_threshold) & (rowwise_iou(g_o, p_o, legacy) >= iou_threshold)
    phr_ok = rowwise_iou(union_boxes(g_s, g_o), union_boxes(p_s, p_o), legacy) >= iou_threshold
    keep = rel_ok | phr_ok
    return Candidates(rel[keep], pair[keep], rel_ok[keep], phr_ok[keep])


def match_candidates_by_row_labels(gt_pairs: np.ndarray, gt: BatchBoxes, pred_pairs: np.ndarray,
                                   pair_labels: np.ndarray, pred: BatchBoxes, iou_threshold: float,
                                   legacy: bool) -> Candidates:
    """Like `match_candidates`, for predictions whose rows carry their own (subject, object) labels
    (`Predictions.pair_labels`): candidates join on (image, subject label, object label)."""
    width = int(max(gt.labels.max(initial=0), pair_labels.max(initial=0))) + 1
    pred_image = pred.image_of()[pred_pairs[:, 0]] if len(pred_pairs) else np.zeros(0, np.int64)
    pred_key = (pred_image * width + pair_labels[:, 0]) * width + pair_labels[:, 1]
    gt_image = gt.image_of()[gt_pairs[:, 0]] if len(gt_pairs) else np.zeros(0, np.int64)
    gt_key = (gt_image * width + gt.labels[gt_pairs[:, 0]]) * width + gt.labels[gt_pairs[:, 1]]
    order = np.argsort(pred_key, kind="stable")
    start = np.searchsorted(pred_key[order], gt_key, side="left")
    count = np.searchsorted(pred_key[order], gt_key, side="right") - start
    rel, rows = expand_ranges(start, count)
    pair = order[rows]
    g_s, g_o = gt.boxes[gt_pairs[rel, 0]], gt.boxes[gt_pairs[rel, 1]]
    p_s, p_o = pred.boxes[pred_pairs[pair, 0]], pred.boxes[pred_pairs[pair, 1]]
    rel_ok = (rowwise_iou(g_s, p_s, legacy) >= iou_threshold) & (rowwise_iou(g_o, p_o, legacy) >= iou_threshold)
    phr_ok = rowwise_iou(union_boxes(g_s, g_o), union_boxes(p_s, p_o), legacy) >= iou_threshold
    keep = rel_ok | phr_ok
    return Candidates(rel[keep], pair[keep], rel_ok[keep], phr_ok[keep])


def min_rank(n: int, rows: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """(n,) smallest rank per row index (NO_HIT where none)."""
    out = np.full(n, NO_HIT, dtype=np.int64)
    np.minimum.at(out, rows, ranks)
    return out
