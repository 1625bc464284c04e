"""Triplet precision / recall / F1 of undirected point graphs (the ae head's line drawings), the paper's
metric read whole (Lu & Dubbelman, Sec. 4: "delete the redundant triplets ... all the predicted triplets
are used for the computation of precision").

Node matching (`matching`): "nearest" (the default) gives each predicted node the nearest ground-truth
node of its image when it lies within `threshold` pixels (default 5), several predicted nodes may share
one; "hungarian" (stricter) matches one-to-one (scipy's assignment on distance, pairs beyond `threshold`
undone), so a second slot on a node stays unmatched. An unmatched predicted node keeps an identity of
its own. Each predicted edge (probability > `min_prob`) becomes the triplet {a, connected, b} of the
two identities; identical triplets are merged (the paper's redundancy), and every other one counts as
predicted: a triplet whose two ends land on one node (a <g, g> self-loop) and a triplet touching an
unmatched node are false positives. Precision = hits / unique predicted triplets, recall = hits /
unique ground-truth triplets, both summed over all images (micro), F1 their harmonic mean. Nodes are
padded to (images, max nodes); the Hungarian option solves one small assignment per image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sgtool.data.graphs import owner_of_rows

DEFAULT_THRESHOLD = 5.0
MATCHINGS = ("nearest", "hungarian")


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


def match_nodes(pred: PointGraphs, gt: PointGraphs, threshold: float, matching: str = "nearest") -> np.ndarray:
    """(Np,) the global GT node each predicted node matches, or -1 (module docstring: the two rules)."""
    p, pmask = padded(pred.node_offsets, pred.points)
    g, gmask = padded(gt.node_offsets, gt.points)
    if p.shape[1] == 0 or g.shape[1] == 0:
        return np.full(len(pred.points), -1, np.int64)
    d = np.linalg.norm(p[:, :, None] - g[:, None], axis=-1)
    d = np.where(pmask[:, :, None] & gmask[:, None], d, np.inf)
    best = one_to_one(d) if matching == "hungarian" else d.argmin(-1)
    dist = np.take_along_axis(d, np.maximum(best, 0)[..., None], -1)[..., 0]
    target = np.where((best >= 0) & (dist <= threshold), best + gt.node_offsets[:-1, None], -1)
    return target[pmask]


def one_to_one(d: np.ndarray) -> np.ndarray:
    """(I, Kp) the GT column assigned to each predicted row by the minimum-distance assignment, -1 for none."""
    from scipy.optimize import linear_sum_assignment

    best = np.full(d.shape[:2], -1, np.int64)
    finite = np.where(np.isfinite(d), d, 1e12)
    for i in range(len(d)):  # one assignment per image: K <= 16 slots
        rows, cols = linear_sum_assignment(finite[i])
        real = np.isfinite(d[i, rows, cols])
        best[i, rows[real]] = cols[real]
    return best


def localised(pred: PointGraphs, gt: PointGraphs, threshold: float = DEFAULT_THRESHOLD) -> float:
    """The fraction of ground-truth nodes with a predicted node of their image within `threshold` pixels."""
    p, pmask = padded(pred.node_offsets, pred.points)
    g, gmask = padded(gt.node_offsets, gt.points)
    if p.shape[1] == 0 or not gmask.any():
        return 0.0
    d = np.linalg.norm(g[:, :, None] - p[:, None], axis=-1)
    d = np.where(gmask[:, :, None] & pmask[:, None], d, np.inf)
    return float((d.min(-1) <= threshold)[gmask].mean())


def _keys(a: np.ndarray, b: np.ndarray, base: int) -> np.ndarray:
    return np.minimum(a, b) * base + np.maximum(a, b)


def triplet_scores(pred: PointGraphs, gt: PointGraphs, threshold: float = DEFAULT_THRESHOLD,
                   matching: str = "nearest") -> dict[str, float]:
    """precision, recall, f1 and the counts behind them (pred.edges: the edges kept, already thresholded);
    `self_loops`: the merged predicted triplets whose two ends are one node."""
    matched = match_nodes(pred, gt, threshold, matching)
    n_gt = len(gt.points)
    ident = np.where(matched >= 0, matched, n_gt + np.arange(len(pred.points)))  # unmatched: an id of its own
    base = n_gt + len(pred.points) + 1
    a, b = ident[pred.edges[:, 0]], ident[pred.edges[:, 1]]
    pred_keys = np.unique(_keys(a, b, base))
    gt_keys = np.unique(_keys(gt.edges[:, 0], gt.edges[:, 1], base))
    hits = int(np.isin(pred_keys, gt_keys).sum())
    precision = hits / len(pred_keys) if len(pred_keys) else 0.0
    recall = hits / len(gt_keys) if len(gt_keys) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "hits": hits, "predicted": int(len(pred_keys)),
            "ground_truth": int(len(gt_keys)), "self_loops": int(np.unique(_keys(a, b, base)[a == b]).size)}
