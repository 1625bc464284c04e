"""Streaming evaluation: the metrics of `evaluate`, with the predictions given chunk by chunk.

Every rank the metrics need is computed within one image, so each chunk of consecutive images is
matched on its own (`metrics._run_batches`, the same code as `evaluate`) and its per-GT-relation
ranks are placed into one hit table for the whole split; the per-pair side keeps only what the
complete-GT precision needs (pairs ranked within the top max(K)). `metrics._aggregate` then turns
the table into the same numbers `evaluate` gives on the whole split at once. Only one chunk of
predictions is in memory at a time; the ground truth of the split is held whole (it is small).
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from sgtool.data.graphs import SceneGraphs
from sgtool.data.predictions import Predictions
from sgtool.eval.metrics import (
    EvalResult, Hits, _aggregate, _check, _conventions, _empty_counts, _k_list_names, _run_batches, _Setup, _Table,
    _validate, check_empty_images,
)


def evaluate_chunks(gt: SceneGraphs, chunks: Iterable[Predictions], *, task: str, num_predicates: int,
                    ks: tuple[int, ...] = (20, 50, 100), predicate_groups: np.ndarray | None = None,
                    seen_triplets: np.ndarray | None = None, iou_threshold: float = 0.5, legacy_iou: bool = True,
                    top_k_per_pair: tuple = (1, 10, None), empty_images: str = "zero") -> EvalResult:
    """`evaluate(gt, all chunks joined, ...)`: chunks hold consecutive images of gt, in order.

    The result's `hits` holds the GT side only (its per-pair arrays are empty)."""
    _check(len(gt.relations) > 0 or (gt.complete is not None and len(gt.complete) > 0),
           "No image of the split has a ground-truth relation, so there is nothing to recall.",
           "Check the split (--split) or the dataset's relations.")
    ks = tuple(int(k) for k in ks)
    check_empty_images(empty_images)
    whole = _Setup(gt, None, task, num_predicates, ks, max(ks), _k_list_names(tuple(top_k_per_pair)),
                   float(iou_threshold), bool(legacy_iou), empty_images)
    table = _Table.empty(len(gt.relations), len(gt.complete) if gt.complete is not None else 0, 0, list(whole.k_lists),
                         gt.num_images)
    kept_rank, kept_hit, done, pairs = [], [], 0, 0
    for pred in chunks:
        part = gt.select(np.arange(done, min(done + pred.num_images, gt.num_images)))
        _validate(part, pred, task, num_predicates, ks, predicate_groups, seen_triplets, iou_threshold,
                  tuple(top_k_per_pair))
        chunk = _chunk_table(whole, part, pred)
        _place(table, chunk, gt, done, done + pred.num_images)
        keep = chunk.pred_unique_rank < whole.kmax
        kept_rank.append(chunk.pred_unique_rank[keep])
        kept_hit.append(chunk.pred_complete_hit[keep])
        done, pairs = done + pred.num_images, pairs + len(pred.pairs)
    _check(done == gt.num_images, f"The predictions cover {done} images but the split has {gt.num_images}.",
           "Evaluate the predictions against the split they were made for.")
    table.pred_unique_rank = np.concatenate(kept_rank) if kept_rank else table.pred_unique_rank
    table.pred_complete_hit = np.concatenate(kept_hit) if kept_hit else table.pred_complete_hit
    metrics, per_pred = _aggregate(whole, table, predicate_groups, seen_triplets)
    none = np.zeros(0, np.int64)
    hits = Hits(gt.relations.offsets, np.zeros(1, np.int64), table.gc, table.ng, none, none, np.zeros(0), np.zeros(0, bool))
    counts = {"images": gt.num_images, "images_with_relations": int((gt.relations.counts() > 0).sum()),
              "relations": len(gt.relations), "predicted_pairs": pairs, **_empty_counts(whole, table)}
    return EvalResult(metrics, per_pred, _conventions(metrics, whole), hits, counts)


def _chunk_table(whole: _Setup, part: SceneGraphs, pred: Predictions) -> _Table:
    s = _Setup(part, pred, whole.task, whole.num_predicates, whole.ks, whole.kmax, whole.k_lists,
               whole.iou_threshold, whole.legacy_iou, whole.empty_images)
    table = _Table.empty(len(part.relations), len(part.complete) if part.complete is not None else 0,
                         len(pred.pairs), list(whole.k_lists), part.num_images)
    _run_batches(s, table, None, 1)
    return table


def _place(table: _Table, chunk: _Table, gt: SceneGraphs, i0: int, i1: int) -> None:
    """Copy a chunk's per-GT-relation ranks into the split's table (images i0..i1 are contiguous rows)."""
    lo, hi = gt.relations.offsets[i0], gt.relations.offsets[i1]
    for name in ("gc", "ng", "phr", "acc"):
        getattr(table, name)[lo:hi] = getattr(chunk, name)
    table.pair_counts[i0:i1] = chunk.pair_counts
    for name, ranks in chunk.k_lists.items():
        table.k_lists[name][lo:hi] = ranks
    if gt.complete is not None:
        table.complete[gt.complete.offsets[i0]:gt.complete.offsets[i1]] = chunk.complete
