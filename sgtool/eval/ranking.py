"""Rankings of one batch of images: graph-constrained, and top-K lists of (pair, predicate).

Scores are float64: predicate probability x (subject score x object score). Every sort is
stable, so ties keep the input order (pair order, then predicate index) — sgtool ranks by
itself and never trusts the order of the file.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sgtool.eval.matching import expand_ranges

if TYPE_CHECKING:
    import torch

NO_RANK = np.iinfo(np.int64).max  # a pair or entry outside the ranked top
_TORCH_THREADS = threading.Lock()


@dataclass
class GraphRanking:
    """One predicate per pair (best non-background); the best m pairs of each image ranked."""

    prob: np.ndarray  # (C,) float64 probability of the best predicate
    score: np.ndarray  # (C,) float64 triplet score
    rank: np.ndarray  # (C,) int64, 0-based within the image; NO_RANK outside the top m
    image: np.ndarray  # (C,) batch image of each pair
    counts: np.ndarray  # (B,) pairs per image
    rel_scores: np.ndarray  # (C, P) the batch's scores (predicates are read from them on demand)
    full: np.ndarray | None = None  # (C,) rank of every pair, computed on first use (complete GT)
    every_predicate: np.ndarray | None = None  # (C,) computed on first use of `predicate`

    @property
    def predicate(self) -> np.ndarray:
        """(C,) 1-based best predicate of every pair (first index on ties)."""
        if self.every_predicate is None:
            self.every_predicate = best_predicate(self.rel_scores)
        return self.every_predicate

    def predicate_at(self, rows: np.ndarray) -> np.ndarray:
        """The best predicate of the given rows only (most pairs are never looked at)."""
        if self.every_predicate is not None:
            return self.every_predicate[rows]
        return best_predicate(np.take(self.rel_scores, rows, axis=0))  # np.take: a fast row gather

    def full_rank(self) -> np.ndarray:
        """Stable descending rank of every pair within its image."""
        if self.full is None:
            self.full = full_rank(self.score, self.image)
        return self.full


def best_predicate(rel_scores: np.ndarray) -> np.ndarray:
    """1-based argmax over columns 1.. (the first index on ties)."""
    if not len(rel_scores):
        return np.zeros(0, np.int64)
    return rel_scores[:, 1:].argmax(axis=1).astype(np.int64) + 1


def best_probability(rel_scores: np.ndarray) -> np.ndarray:
    """float64 maximum over columns 1.. (the background column is never a predicate).

    Scores in [0, inf] (probabilities) are compared by their bit patterns, which order like the values:
    torch's integer row maximum is many times faster than its float one (no NaN to propagate).
    Otherwise, elementwise maxima of column halves (overlapping by one column when the width is odd, which
    a maximum does not mind), in torch: faster than a reduction over a short float row (numpy's max,
    torch's amax). The predicate is found afterwards for the few pairs that need it. numpy is the
    fallback for other dtypes."""
    if not len(rel_scores):
        return np.zeros(0, np.float64)
    if rel_scores.dtype in (np.float32, np.float64) and rel_scores.dtype.isnative and rel_scores.shape[1] > 1:
        import warnings

        import torch

        with warnings.catch_warnings():  # a read-only array is only read here
            warnings.simplefilter("ignore", UserWarning)
            values = torch.from_numpy(np.asarray(rel_scores))
        with one_torch_thread():
            by_bits = _max_by_bits(values)
            if by_bits is not None:
                return by_bits
            values = values[:, 1:]
            width = values.shape[1]
            while width > 1:
                half = (width + 1) // 2
                values, width = torch.maximum(values[:, :half], values[:, width - half:width]), half
            return values[:, 0].numpy().astype(np.float64)
    return rel_scores[:, 1:].max(axis=1).astype(np.float64)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch's intra-op threads off while inside (restored after): these passes are memory-bound, and on a
    machine busy with other work, waiting for a second thread to be scheduled made them several times slower."""
    import torch

    with _TORCH_THREADS:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def _max_by_bits(values: torch.Tensor) -> np.ndarray | None:
    """Row maximum over columns 1.. of a contiguous float tensor whose values all lie in [0, inf] (checked
    in one pass over the whole table: as integers, the bit patterns lie between those of 0.0 and inf;
    -0.0 and NaN fall outside), else None."""
    import torch

    if not values.is_contiguous():
        return None
    bits_type = torch.int32 if values.dtype == torch.float32 else torch.int64
    bits = values.view(bits_type)
    low, high = torch.aminmax(bits.view(-1))
    if int(low) < 0 or int(high) > int(torch.tensor(float("inf"), dtype=values.dtype).view(bits_type)):
        return None
    return bits[:, 1:].amax(1).view(values.dtype).numpy().astype(np.float64)


def _kth_best(neg_score: np.ndarray, counts: np.ndarray, first_row: np.ndarray, m: int) -> np.ndarray:
    """Per image, the m-th smallest of -score (+inf for images with at most m rows).

    Images are padded into tables by size class (largest at most twice the smallest, so padding
    never dwarfs the rows) and each table is partitioned at m: linear in the rows.
    """
    kth = np.full(len(counts), np.inf)
    big = np.flatnonzero(counts > m)
    big = big[np.argsort(counts[big], kind="stable")]
    sizes = counts[big]
    start = 0
    while start < len(big):
        stop = int(np.searchsorted(sizes, 2 * sizes[start], side="right"))
        group = big[start:stop]
        if len(group) == 1:  # one image: partition its rows directly
            first = int(first_row[group[0]])
            kth[group[0]] = np.partition(neg_score[first:first + int(counts[group[0]])], m - 1)[m - 1]
            start = stop
            continue
        owner, rows = expand_ranges(first_row[group], counts[group])
        padded = np.full((len(group), int(sizes[stop - 1])), np.inf)
        padded[owner, rows - first_row[group][owner]] = neg_score[rows]
        kth[group] = np.partition(padded, m - 1, axis=1)[:, m - 1]
        start = stop
    return kth


def rank_top(score: np.ndarray, image: np.ndarray, counts: np.ndarray, first_row: np.ndarray, m: int) -> np.ndarray:
    """Stable descending rank of the best m rows of each image (NO_RANK for the others).

    The m-th best score of each image is found by partition; the rows above it, and the first
    rows (in input order) equal to it up to m, are the only ones sorted.
    """
    rank = np.full(len(score), NO_RANK, dtype=np.int64)
    if m <= 0 or not len(score):
        return rank
    neg = -score
    kth = np.repeat(_kth_best(neg, counts, first_row, m), counts)
    rows = np.flatnonzero(neg <= kth)
    if np.bincount(image[rows], minlength=len(counts)).max(initial=0) > m:  # ties at the cut: the first ones, up to m
        above = neg < kth
        equal = neg == kth
        need = m - np.bincount(image, weights=above, minlength=len(counts)).astype(np.int64)
        seen = np.cumsum(equal)
        seen -= np.concatenate([[0], seen])[first_row][image]  # equal rows so far in the image
        rows = np.flatnonzero(above | (equal & (seen <= need[image])))
    sort = grouped_descending(score[rows], image[rows])
    rows = rows[sort]
    img = image[rows]
    rank[rows] = np.arange(len(rows), dtype=np.int64) - np.searchsorted(img, img)
    return rank


def grouped_descending(score: np.ndarray, group: np.ndarray) -> np.ndarray:
    """The permutation that sorts rows by group, then score descending, ties in input order
    (np.lexsort((-score, group)), in two stable sorts: the second, on small integers, is a radix sort)."""
    by_score = np.argsort(-score, kind="stable")
    small = group.astype(np.int16 if int(group.max(initial=0)) < 2**15 else np.int64, copy=False)
    return by_score[np.argsort(small[by_score], kind="stable")]


def full_rank(score: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Stable descending rank of every row within its image (rows grouped by image, in order)."""
    sort = grouped_descending(score, image)
    rank = np.empty(len(score), dtype=np.int64)
    img = image[sort]
    rank[sort] = np.arange(len(score)) - np.searchsorted(img, img)
    return rank


def graph_ranking(rel_scores: np.ndarray, pair_scale: np.ndarray | None, image: np.ndarray, counts: np.ndarray,
                  first_row: np.ndarray, m: int) -> GraphRanking:
    """pair_scale: subject score x object score per pair (None: 1, PredCls)."""
    prob = best_probability(rel_scores)
    score = prob if pair_scale is None else prob * pair_scale
    rank = rank_top(score, image, counts, first_row, m)
    return GraphRanking(prob, score, rank, image, counts, rel_scores)


@dataclass
class EntryRanking:
    """Top entries (pair, predicate) of each image, with their 0-based rank."""

    keys: np.ndarray  # sorted (pair row * P + predicate)
    ranks: np.ndarray  # rank of each key

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Rank of each key, or the int64 maximum when it is not in the list."""
        if not len(self.keys):
            return np.full(len(keys), NO_RANK, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return np.where(self.keys[pos] == keys, self.ranks[pos], NO_RANK)


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


def candidate_entries(gc: GraphRanking, rel_scores: np.ndarray, pair_scale: np.ndarray, m: int,
                      list_ks: tuple[int, ...] = (), box_pairs: BoxPairRanking | None = None) -> Entries:
    """Every entry that can be in the top m of the no-graph ranking or of a top-k-per-pair list
    (list_ks: the k of each list, the number of foreground predicates for "all").

    `box_pairs` (`box_pair_rank` of the rows) groups rows by box pair: several rows of one box pair (a head that
    labels each pair itself writes one row per labelling) share it, and the within-pair rank counts
    over all of them, so "k per pair" is k per box pair. Default: every row is its own box pair.

    If (c, p) is in such a top m, each pair ranked before c by graph score owns an entry ranked
    before (c, p) (its best one), so c is among the m best pairs. And when an image has at least
    m pairs, every list holds the best entries of those m pairs, so its m-th score is at least
    t0 = the m-th best graph score: entries below t0 cannot make it. Entries at or above t0
    include, for their pair, every more probable predicate, so within-pair ranks stay exact.
    Images with fewer than m pairs have no such t0; their entries are cut per list instead
    (`_small_image_entries`).
    """
    if box_pairs is not None:
        return _box_pair_entries(gc, rel_scores, pair_scale, m, box_pairs)
    rows = np.flatnonzero(gc.rank < m)  # the m best pairs of each image, in input order
    t0 = np.full(len(gc.counts), -np.inf)
    last = rows[gc.rank[rows] == m - 1]  # images with at least m pairs get a threshold
    t0[gc.image[last]] = gc.score[last]
    small = gc.counts[gc.image[rows]] < m
    parts = [_thresholded_entries(rows[~small], gc.image[rows[~small]], t0, rel_scores, pair_scale),
             _small_image_entries(rows[small], gc.image[rows[small]], rel_scores, pair_scale, m,
                                  list_ks or (rel_scores.shape[1] - 1,), len(gc.counts))]
    b, row, q, within, score = (np.concatenate(column) for column in zip(*parts))
    order = grouped_descending(score, b)  # entries of one image come from one part, in (row, q) order
    return Entries(b[order], row[order], q[order] + 1, within[order])


def _thresholded_entries(rows: np.ndarray, img: np.ndarray, t0: np.ndarray, rel_scores: np.ndarray,
                         pair_scale: np.ndarray, box_pair: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Entries scoring at least t0 of their image: (image, row, predicate - 1, within-pair rank, score);
    with `box_pair`, the within-pair rank counts over every row of the row's box pair."""
    scale, floor = pair_scale[rows], t0[img]
    with np.errstate(divide="ignore", invalid="ignore"):
        loose = np.where(scale > 0, floor / scale * (1 - 1e-6), np.where(floor <= 0, -np.inf, np.inf))
    probs = np.take(rel_scores, rows, axis=0)[:, 1:]
    j, q = np.nonzero(probs >= loose[:, None].astype(probs.dtype))
    row, b = rows[j], img[j]
    prob = probs[j, q].astype(np.float64)
    score = prob * pair_scale[row]
    exact = score >= t0[b]
    b, row, q, prob, score = b[exact], row[exact], q[exact], prob[exact], score[exact]
    within = np.empty(len(row), np.int64)
    if box_pair is not None:  # several rows per box pair: rank within the box pair
        group = box_pair[row]
        by_pair = np.lexsort((q, row, -prob, group))
        pair_sorted = group[by_pair]
    else:
        if probs.dtype == np.float32 and (not len(prob) or prob.min() >= 0):  # one int64 key; ties: q ascending
            by_pair = np.argsort(_pair_then_probability(row, prob), kind="stable")
        else:
            by_pair = np.lexsort((q, -prob, row))
        pair_sorted = row[by_pair]
    within[by_pair] = np.arange(len(row)) - np.searchsorted(pair_sorted, pair_sorted)
    return b, row, q, within, score


@dataclass
class BoxPairRanking:
    """Box pairs (several rows each) ranked by their best row's graph score, ties in row order."""

    box_pair: np.ndarray  # (C,) box-pair id of each row
    row_rank: np.ndarray  # (C,) rank of each row's box pair within the image; NO_RANK outside the top m
    t0: np.ndarray  # (B,) score of the m-th best box pair of each image; -inf with fewer than m


def box_pair_rank(gc: GraphRanking, box_pair: np.ndarray, m: int) -> BoxPairRanking:
    """Rank of each row's box pair (box_pair: (C,) ids 0..n-1) among its image's box pairs."""
    if not len(box_pair):
        return BoxPairRanking(box_pair, np.zeros(0, np.int64), np.full(len(gc.counts), -np.inf))
    order = grouped_descending(gc.score, box_pair)  # by box pair, best row first (first row on ties)
    grouped = box_pair[order]
    best = order[np.concatenate([[True], grouped[1:] != grouped[:-1]])]  # best row of box pair 0..n-1
    by_row = np.argsort(best, kind="stable")  # box pairs in the order of their best row: grouped by image
    rep = best[by_row]
    image = gc.image[rep]
    counts = np.bincount(image, minlength=len(gc.counts))
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(best), np.int64)
    rank[by_row] = rank_top(gc.score[rep], image, counts, first, m)
    t0 = np.full(len(gc.counts), -np.inf)
    last = by_row[rank[by_row] == m - 1]
    t0[gc.image[best[last]]] = gc.score[best[last]]
    return BoxPairRanking(box_pair, rank[box_pair], t0)


def _box_pair_entries(gc: GraphRanking, rel_scores: np.ndarray, pair_scale: np.ndarray, m: int,
                      bp: BoxPairRanking) -> Entries:
    """`candidate_entries` when several rows share a box pair and k counts per box pair.

    If (c, p) is in the top m of a list, each other box pair whose best row scores above it has its
    best entry (within-box-pair rank 0) in that list ranked before (c, p), so c's box pair is among
    the m best box pairs (by best row score); with at least m box pairs, every list holds the best
    entries of those m, so its m-th score is at least t0 = the m-th best box pair's score. All rows
    of the m best box pairs are kept (every row of a box pair shares its subject x object score, so
    the more probable predicates of the other rows score at least as high and stay, and within-box-
    pair ranks are exact); images with fewer than m box pairs keep every entry.
    """
    rows = np.flatnonzero(bp.row_rank < m)
    b, row, q, within, score = _thresholded_entries(rows, gc.image[rows], bp.t0, rel_scores, pair_scale, bp.box_pair)
    order = grouped_descending(score, b)
    return Entries(b[order], row[order], q[order] + 1, within[order])


def _small_image_entries(rows: np.ndarray, img: np.ndarray, rel_scores: np.ndarray, pair_scale: np.ndarray,
                         m: int, list_ks: tuple[int, ...], num_images: int) -> tuple[np.ndarray, ...]:
    """Entries of images with fewer than m pairs that can make the top m of some list.

    Lists are nested (k1 within k10 within all), so an entry whose within-pair rank is w belongs to
    every list with k > w, and the smallest such k has the lowest m-th best score t_k: the entry is
    needed iff its score reaches that t_k. Every more probable predicate of its pair then reaches
    its own (lower or equal) threshold too, so the ranks computed among the kept entries are exact.
    """
    probs = np.take(rel_scores, rows, axis=0)[:, 1:]
    n_rows, width = probs.shape
    if not n_rows:  # no image of the batch is small
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty, np.zeros(0)
    within = np.empty((n_rows, width), np.int64)
    within[np.arange(n_rows)[:, None], np.argsort(-probs, axis=1, kind="stable")] = np.arange(width)
    score = probs.astype(np.float64) * pair_scale[rows][:, None]
    floor = np.full((n_rows, width), -np.inf)
    lower = 0
    for k in sorted({min(int(k), width) for k in list_ks}):
        member = within < k
        per_image = np.bincount(img, minlength=num_images) * k
        first = np.concatenate([[0], np.cumsum(per_image)[:-1]])
        t_k = -_kth_best(-score[member], per_image, first, m)  # -inf where the list holds at most m
        floor = np.where(member & (within >= lower), t_k[img][:, None], floor)
        lower = k
    j, q = np.nonzero(score >= floor)
    return img[j], rows[j], q, within[j, q], score[j, q]


def _pair_then_probability(row: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """One int64 key ordering entries by pair row, then probability descending (probabilities are
    float32 values >= 0, whose bit patterns order like the values; -0.0 counts as 0)."""
    bits = (prob.astype(np.float32) + np.float32(0)).view(np.uint32).astype(np.int64)
    return row.astype(np.int64) * (1 << 32) + ((1 << 32) - 1 - bits)
