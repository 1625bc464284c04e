"""Rankings of one batch of images: graph-constrained, and top-K lists of (pair, predicate).

Scores are float64: predicate probability x (subject score x object score). Every sort is
stable, so ties keep the input order (pair order, then predicate index) — sgtool ranks by
itself and never trusts the order of the file.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


NO_RANK = np.iinfo(np.int64).max  # a pair or entry outside the ranked top


@dataclass
class GraphRanking:
    """One predicate per pair (best non-background); the best m pairs of each image ranked."""

    predicate: np.ndarray  # (C,) 1-based
    prob: np.ndarray  # (C,) float64 probability of that predicate
    score: np.ndarray  # (C,) float64 triplet score
    rank: np.ndarray  # (C,) int64, 0-based within the image; NO_RANK outside the top m
    order: np.ndarray  # (B, m) pair positions within each image, best first; NO_RANK as padding
    counts: np.ndarray  # (B,) pairs per image


def best_predicate(rel_scores: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """argmax over columns 1.. (first index on ties) and its probability.

    A plain argmax over whole rows is fast; only rows where background wins are redone
    without column 0 (a strided argmax over columns 1.. would be ten times slower).
    """
    n = len(rel_scores)
    pred = rel_scores.argmax(axis=1) if n else np.zeros(0, np.int64)
    redo = np.flatnonzero(pred == 0)
    for lo in range(0, len(redo), chunk):
        rows = redo[lo:lo + chunk]
        buf = rel_scores[rows]
        buf[:, 0] = -np.inf
        pred[rows] = buf.argmax(axis=1)
    pred = pred.astype(np.int64, copy=False)
    return pred, np.take_along_axis(rel_scores, pred[:, None], axis=1)[:, 0].astype(np.float64)


def rank_top(score: np.ndarray, image: np.ndarray, position: np.ndarray, counts: np.ndarray,
             first_row: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable descending rank of the best m rows of each image (partition, then sort only those)."""
    b_count, cmax = len(counts), int(counts.max(initial=0))
    m = min(m, cmax)
    rank = np.full(len(score), NO_RANK, dtype=np.int64)
    if m == 0:
        return rank, np.full((b_count, 0), NO_RANK, dtype=np.int64)
    padded = np.full((b_count, cmax), np.inf)
    padded[image, position] = -score
    kth = np.partition(padded, m - 1, axis=1)[:, m - 1 : m]
    above = padded < kth
    equal = (padded == kth) & (np.arange(cmax)[None, :] < counts[:, None])
    need = m - above.sum(axis=1, keepdims=True)
    if np.any(equal.sum(axis=1, keepdims=True) > need):  # ties at the cut: keep the first ones
        equal &= np.cumsum(equal, axis=1) <= need
    flat = np.flatnonzero(above | equal)
    img = flat // cmax
    sort = np.lexsort((padded.ravel()[flat], img))  # stable: ties keep the pairs' order
    flat, img = flat[sort], img[sort]
    r = np.arange(len(flat), dtype=np.int64) - np.searchsorted(img, img)
    pos = flat % cmax
    order = np.full((b_count, m), NO_RANK, dtype=np.int64)
    order[img, r] = pos
    rank[first_row[img] + pos] = r
    return rank, order


def full_rank(score: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Stable descending rank of every row within its image (rows grouped by image, in order)."""
    sort = np.lexsort((-score, image))
    rank = np.empty(len(score), dtype=np.int64)
    img = image[sort]
    rank[sort] = np.arange(len(score)) - np.searchsorted(img, img)
    return rank


def graph_ranking(rel_scores: np.ndarray, pair_scale: np.ndarray, image: np.ndarray, position: np.ndarray,
                  counts: np.ndarray, first_row: np.ndarray, m: int) -> GraphRanking:
    pred, prob = best_predicate(rel_scores)
    score = prob * pair_scale
    rank, order = rank_top(score, image, position, counts, first_row, m)
    return GraphRanking(pred, prob, score, rank, order, counts)


@dataclass
class EntryRanking:
    """Top entries (pair, predicate) of each image, with their 0-based rank."""

    keys: np.ndarray  # sorted (pair row * P + predicate)
    ranks: np.ndarray  # rank of each key

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Rank of each key, or the int64 maximum when it is not in the list."""
        if not len(self.keys):
            return np.full(len(keys), np.iinfo(np.int64).max, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return np.where(self.keys[pos] == keys, self.ranks[pos], np.iinfo(np.int64).max)


@dataclass
class Entries:
    """(pair, predicate) entries that can reach a top-m list, sorted by image, then score (stable)."""

    image: np.ndarray  # (E,) batch image
    row: np.ndarray  # (E,) batch pair row
    predicate: np.ndarray  # (E,) 1-based
    within_pair: np.ndarray  # (E,) rank of the predicate within its pair (prob desc, lower index first)

    def top(self, k: int | None, m: int, num_predicates: int) -> EntryRanking:
        """The m best entries per image among each pair's k best predicates (k None = all)."""
        keep = np.ones(len(self.row), bool) if k is None else self.within_pair < k
        image = self.image[keep]
        rank = np.arange(len(image), dtype=np.int64) - np.searchsorted(image, image)
        inside = rank < m
        keys = self.row[keep][inside] * num_predicates + self.predicate[keep][inside]
        sort = np.argsort(keys)
        return EntryRanking(keys[sort], rank[inside][sort])


def candidate_entries(gc: GraphRanking, rel_scores: np.ndarray, pair_scale: np.ndarray, first_row: np.ndarray,
                      m: int, box_pair: np.ndarray | None = None) -> Entries:
    """Every entry that can be in the top m of the no-graph ranking or of a top-k-per-pair list.

    `box_pair` (rows,) identifies each row's box pair: several rows of one box pair (a head that
    labels each pair itself writes one row per labelling) share it, and the within-pair rank counts
    over all of them, so "k per pair" is k per box pair. Default: every row is its own box pair.

    If (c, p) is in such a top m, each pair ranked before c by graph score owns an entry ranked
    before (c, p) (its best one), so c is among the m best pairs. And when an image has at least
    m pairs, every list holds the best entries of those m pairs, so its m-th score is at least
    t0 = the m-th best graph score: entries below t0 cannot make it. Entries at or above t0
    include, for their pair, every more probable predicate, so within-pair ranks stay exact.
    """
    width = min(m, gc.order.shape[1])
    if width == 0:
        empty = np.zeros(0, np.int64)
        return Entries(empty, empty, empty, empty)
    top = gc.order[:, :width]
    valid_sorted = top < gc.counts[:, None]
    last = np.maximum(valid_sorted.sum(1) - 1, 0)
    top_rows = np.where(valid_sorted, first_row[:, None] + np.where(valid_sorted, top, 0), 0)
    full = gc.counts >= m  # images with at least m pairs get a threshold
    t0 = np.full(len(gc.counts), -np.inf)
    t0[full] = gc.score[top_rows[np.arange(len(last)), last][full]]
    top = np.sort(np.where(valid_sorted, top, np.iinfo(np.int64).max), axis=1)  # input order
    valid = top < gc.counts[:, None]
    rows = np.where(valid, first_row[:, None] + np.where(valid, top, 0), 0)
    probs = rel_scores[rows.ravel(), 1:].reshape(rows.shape + (rel_scores.shape[1] - 1,))
    scale = pair_scale[rows]
    with np.errstate(divide="ignore", invalid="ignore"):
        loose = np.where(scale > 0, t0[:, None] / scale * (1 - 1e-6), np.where(t0[:, None] <= 0, -np.inf, np.inf))
    flat = np.flatnonzero((probs >= loose[..., None].astype(probs.dtype)) & valid[..., None])
    b, j, q = np.unravel_index(flat, probs.shape)
    row = rows[b, j]
    prob = probs[b, j, q].astype(np.float64)
    score = prob * pair_scale[row]
    exact = score >= t0[b]
    b, row, q, prob, score = b[exact], row[exact], q[exact], prob[exact], score[exact]
    within = np.empty(len(row), np.int64)
    group = row if box_pair is None else box_pair[row]
    by_pair = np.lexsort((q, row, -prob, group))
    pair_sorted = group[by_pair]
    within[by_pair] = np.arange(len(row)) - np.searchsorted(pair_sorted, pair_sorted)
    order = np.lexsort((-score, b))
    return Entries(b[order], row[order], q[order] + 1, within[order])
