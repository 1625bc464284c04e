"""Triplet matching: which predicted pairs agree with which ground-truth relations.

Matching goes through labels and boxes, never box indices (docs/evaluation.md): a predicted pair
(s, o) is a candidate for a GT relation (gs, go, p) when label(s) = label(gs) and
label(o) = label(go) in the same image. Ranking comes first: only a pair that some ranking
(graph-constrained, no graph constraint, k per pair, phrase, GT pairs, complete GT) places in its
top max(K) can ever count, so only those pairs are matched. For each candidate we record whether the subject and
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
DENSE_KEYS = 1 << 22  # key ranges up to this size are looked up in a table (4 MiB of bools)


def is_member(keys: np.ndarray, members: np.ndarray) -> np.ndarray:
    """np.isin(keys, members) for non-negative integer keys, many keys against few members: one
    table lookup per key when the key range is small (a batch's box pairs), else binary search."""
    if not len(keys) or not len(members):
        return np.zeros(len(keys), bool)
    top = int(max(keys.max(), members.max())) + 1
    if top <= DENSE_KEYS:
        table = np.zeros(top, bool)
        table[members] = True
        return table[keys]
    members = np.unique(members)
    return members[np.searchsorted(members, keys).clip(max=len(members) - 1)] == keys


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


def _label_pair_keys(pairs: np.ndarray, boxes: BatchBoxes, image: np.ndarray, width: int) -> np.ndarray:
    """(image, subject label, object label) of each pair as one int64."""
    return (image * width + boxes.labels[pairs[:, 0]]) * width + boxes.labels[pairs[:, 1]]


def match_candidates(gt_pairs: np.ndarray, gt: BatchBoxes, pred_pairs: np.ndarray, pred: BatchBoxes,
                     rows: np.ndarray, iou_threshold: float, legacy: bool,
                     pair_labels: np.ndarray | None = None) -> Candidates:
    """Every (GT relation, predicted pair among `rows`) with equal labels, with its box tests.

    Only the pairs given in `rows` are matched (the caller passes those a ranking can still put in
    its top max(K)), so the work is (those pairs x GT relations of their label pair), whatever the
    number of same-label boxes in the image. `pair_labels` (pairs, 2): each row's own (subject,
    object) labels (`Predictions.pair_labels`, a head that labels every pair row itself); they
    replace the boxes' labels in the join.
    """
    own = None if pair_labels is None else pair_labels[rows]
    label_max = pred.labels.max(initial=0) if own is None else own.max(initial=0)
    width = int(max(gt.labels.max(initial=0), label_max)) + 1
    gt_key = _label_pair_keys(gt_pairs, gt, gt.image_of()[gt_pairs[:, 0]], width)
    order = np.argsort(gt_key, kind="stable")
    sorted_key = gt_key[order]
    chosen = np.take(pred_pairs, rows, axis=0)  # np.take: a row gather many times faster than [rows]
    image = pred.image_of()[chosen[:, 0]]
    if own is None:
        pred_key = _label_pair_keys(chosen, pred, image, width)
    else:
        pred_key = (image * width + own[:, 0]) * width + own[:, 1]
    start = np.searchsorted(sorted_key, pred_key, side="left")
    stop = np.searchsorted(sorted_key, pred_key, side="right")
    query, at = expand_ranges(start, stop - start)
    rel, pair = order[at], rows[query]
    g_pairs, p_pairs = np.take(gt_pairs, rel, axis=0), np.take(pred_pairs, pair, axis=0)
    g_s, g_o = np.take(gt.boxes, g_pairs[:, 0], axis=0), np.take(gt.boxes, g_pairs[:, 1], axis=0)
    p_s, p_o = np.take(pred.boxes, p_pairs[:, 0], axis=0), np.take(pred.boxes, p_pairs[:, 1], axis=0)
    rel_ok = (rowwise_iou(g_s, p_s, legacy) >= iou_threshold) & (rowwise_iou(g_o, p_o, legacy) >= iou_threshold)
    phr_ok = rowwise_iou(union_boxes(g_s, g_o), union_boxes(p_s, p_o), legacy) >= iou_threshold
    keep = rel_ok | phr_ok
    return Candidates(rel[keep], pair[keep], rel_ok[keep], phr_ok[keep])


def min_rank(n: int, rows: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """(n,) smallest rank per row index (NO_HIT where none)."""
    out = np.full(n, NO_HIT, dtype=np.int64)
    np.minimum.at(out, rows, ranks)
    return out
