"""Triplet precision / recall / F1 of undirected point graphs (the ae head's line drawings).

A predicted node matches the nearest ground-truth node of its image when it lies within
`threshold` pixels (default 5); several predicted nodes may match the same ground-truth node.
Each predicted edge (probability > `min_prob`) becomes the triplet {node a, connected, node b}
with matched nodes replaced by their ground-truth node; duplicate triplets are removed (so
slots that collapse onto one corner count once), and an edge whose two ends match the same
ground-truth node (a zero-length segment) is dropped. Unmatched predicted nodes keep their own
identity, so their edges count as false positives. Precision = hits / unique predicted
triplets, recall = hits / unique ground-truth triplets, both summed over all images (micro),
F1 their harmonic mean. Fully vectorised: nodes are padded to (images, max nodes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sgtool.data.graphs import owner_of_rows

DEFAULT_THRESHOLD = 5.0


@dataclass
class PointGraphs:
    """Undirected graphs of many images: points (N, 2) ragged by node_offsets, edges (M, 2) global rows."""

    node_offsets: np.ndarray
    points: np.ndarray
    edges: np.ndarray


def padded(offsets: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(I, Kmax, 2) points padded with NaN and the (I, Kmax) validity mask."""
    counts = np.diff(offsets)
    width = int(counts.max()) if len(counts) else 0
    image = owner_of_rows(offsets)
    slot = np.arange(len(points)) - offsets[:-1][image]
    out = np.full((len(counts), width, 2), np.nan)
    out[image, slot] = points
    mask = np.zeros((len(counts), width), bool)
    mask[image, slot] = True
    return out, mask


def match_nodes(pred: PointGraphs, gt: PointGraphs, threshold: float) -> np.ndarray:
    """(Np,) the global GT node each predicted node matches, or -1."""
    p, pmask = padded(pred.node_offsets, pred.points)
    g, gmask = padded(gt.node_offsets, gt.points)
    if p.shape[1] == 0 or g.shape[1] == 0:
        return np.full(len(pred.points), -1, np.int64)
    d = np.linalg.norm(p[:, :, None] - g[:, None], axis=-1)
    d = np.where(pmask[:, :, None] & gmask[:, None], d, np.inf)
    best = d.argmin(-1)
    ok = np.take_along_axis(d, best[..., None], -1)[..., 0] <= threshold
    target = np.where(ok, best + gt.node_offsets[:-1, None], -1)
    return target[pmask]


def _keys(a: np.ndarray, b: np.ndarray, base: int) -> np.ndarray:
    return np.minimum(a, b) * base + np.maximum(a, b)


def triplet_scores(pred: PointGraphs, gt: PointGraphs, threshold: float = DEFAULT_THRESHOLD) -> dict[str, float]:
    """precision, recall, f1 and the counts behind them (pred.edges: the edges kept, already thresholded)."""
    matched = match_nodes(pred, gt, threshold)
    n_gt = len(gt.points)
    ident = np.where(matched >= 0, matched, n_gt + np.arange(len(pred.points)))  # unmatched: an id of its own
    base = n_gt + len(pred.points) + 1
    a, b = ident[pred.edges[:, 0]], ident[pred.edges[:, 1]]
    pred_keys = np.unique(_keys(a, b, base)[a != b])
    gt_keys = np.unique(_keys(gt.edges[:, 0], gt.edges[:, 1], base))
    hits = int(np.isin(pred_keys, gt_keys).sum())
    precision = hits / len(pred_keys) if len(pred_keys) else 0.0
    recall = hits / len(gt_keys) if len(gt_keys) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "hits": hits,
            "predicted": int(len(pred_keys)), "ground_truth": int(len(gt_keys))}
