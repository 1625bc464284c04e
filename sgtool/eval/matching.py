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

from sgtool.geometry import rowwise_iou, union_boxes

NO_HIT = np.iinfo(np.int64).max  # rank of a GT relation that no prediction hits


def expand_ranges(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ragged expansion: for each i, rows starts[i] .. starts[i] + counts[i] - 1, with their owner i."""
    counts = counts.astype(np.int64, copy=False)
    owner = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    first = np.cumsum(counts) - counts
    rows = np.arange(int(counts.sum()), dtype=np.int64) - first[owner] + starts[owner]
    return owner, rows


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


def min_rank(n: int, rows: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """(n,) smallest rank per row index (NO_HIT where none)."""
    out = np.full(n, NO_HIT, dtype=np.int64)
    np.minimum.at(out, rows, ranks)
    return out
