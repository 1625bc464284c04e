"""The evaluator protocol (as detectron2's): `reset()`, `process(inputs, outputs)` per chunk, `evaluate()`.

`SceneGraphEvaluator` is the hit-table engine of `metrics.py` fed chunk by chunk: every rank the
metrics need is computed within one image, so each chunk of consecutive images is scored on its own
(`metrics.score_batches`, the same code as `evaluate`) and its per-GT-relation rank columns
(`HitTable.gt_columns`, the one list every metric family reads from) are placed into one table for the
whole split. The per-pair side keeps only what the complete-GT precision needs (pairs ranked within the
top max(K)). `evaluate()` then aggregates exactly as `evaluate` does on the whole split at once.
Its siblings (point graphs, confusion sets, COCO box mAP) are in siblings.py.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from sgtool.data.graphs import SceneGraphs
from sgtool.data.predictions import Predictions
from sgtool.eval.matching import NO_HIT
from sgtool.eval.metrics import (
    EvalResult, EvalSetup, Hits, HitTable, IoURule, aggregate, check, check_empty_images, conventions_of,
    empty_counts, k_list_names, list_columns, score_batches, validate_inputs,
)
from sgtool.eval.sgbench import SgbenchTable, sgbench_aggregate, sgbench_table
from sgtool.flags import flag


class Evaluator(Protocol):
    """What every sgtool evaluator does: start over, take one chunk, give the metrics."""

    def reset(self) -> None: ...

    def process(self, inputs: Any, outputs: Any) -> None: ...

    def evaluate(self) -> Any: ...


class SceneGraphEvaluator:
    """Every SGG metric of `evaluate`, with the predictions given chunk by chunk (consecutive images).

    `gt`: the split's ground truth (held whole, it is small). `process(inputs, outputs)`: `outputs` the
    `Predictions` of the next images of the split, `inputs` their ground truth (`SceneGraphs`, checked
    against the split's next image ids) or None to take it from the split. The result's `hits` holds the
    GT side only (its per-pair arrays are empty). `sgbench=True` adds SGBench's metrics (sgbench.py),
    computed chunk by chunk from the same ranking."""

    def __init__(self, gt: SceneGraphs, *, task: str, num_predicates: int, ks: tuple[int, ...] = (20, 50, 100),
                 predicate_groups: np.ndarray | None = None, seen_triplets: np.ndarray | None = None,
                 iou: IoURule = IoURule(), top_k_per_pair: tuple = (1, 10, None), empty_images: str = "zero",
                 sgbench: bool = False) -> None:
        check(len(gt.relations) > 0 or (gt.complete is not None and len(gt.complete) > 0),
              "No image of the split has a ground-truth relation, so there is nothing to recall.",
              f"Check the split ({flag('split')}) or the dataset's relations.")
        check_empty_images(empty_images)
        ks = tuple(int(k) for k in ks)
        self.setup = EvalSetup(gt, None, task, num_predicates, ks, max(ks), k_list_names(tuple(top_k_per_pair)),
                               float(iou.threshold), bool(iou.legacy), empty_images)
        self.options = (predicate_groups, seen_triplets, tuple(top_k_per_pair))
        self.sgbench = sgbench
        self.reset()

    def reset(self) -> None:
        gt = self.setup.gt
        self.table = HitTable.empty(len(gt.relations), len(gt.complete) if gt.complete is not None else 0, 0,
                                    list_columns(self.setup.k_lists), gt.num_images)
        self._kept: list[tuple[np.ndarray, np.ndarray]] = []
        self._sgbench: list[SgbenchTable] = []
        self._done = self._pairs = 0

    def process(self, inputs: SceneGraphs | None, outputs: Predictions) -> None:
        s, groups_seen_k = self.setup, self.options
        i0, i1 = self._done, self._done + outputs.num_images
        check(i1 <= s.gt.num_images, f"The predictions cover more than the {s.gt.num_images} images of the split.",
              "Evaluate the predictions against the split they were made for.")
        part = s.gt.select(np.arange(i0, i1)) if inputs is None else inputs
        check(np.array_equal(part.image_ids, s.gt.image_ids[i0:i1]),
              f"The ground truth given for images {i0}..{i1 - 1} is not that of the split's images there.",
              "Give the chunks in the split's image order.")
        validate_inputs(part, outputs, s.task, s.num_predicates, s.ks, groups_seen_k[0], groups_seen_k[1],
                        s.iou_threshold, groups_seen_k[2])
        chunk = HitTable.empty(len(part.relations), len(part.complete) if part.complete is not None else 0,
                               len(outputs.pairs), list_columns(s.k_lists), part.num_images)
        chunk.every_pair_predicate = False  # only the top max(K) pairs are kept
        score_batches(EvalSetup(part, outputs, s.task, s.num_predicates, s.ks, s.kmax, s.k_lists, s.iou_threshold,
                                s.legacy_iou, s.empty_images), chunk, None, 1)
        self._place(chunk, i0, i1)
        keep = chunk.pred_unique_rank < s.kmax
        self._kept.append((chunk.pred_unique_rank[keep], chunk.pred_complete_hit[keep]))
        if self.sgbench:
            self._sgbench.append(sgbench_table(part, outputs, chunk.pred_rank, chunk.pred_predicate, s.kmax, s.task))
        self._done, self._pairs = i1, self._pairs + len(outputs.pairs)

    def _place(self, chunk: HitTable, i0: int, i1: int) -> None:
        """Copy a chunk's per-GT-relation columns into the split's table (images i0..i1 are contiguous rows)."""
        gt, table = self.setup.gt, self.table
        lo, hi = gt.relations.offsets[i0], gt.relations.offsets[i1]
        columns = table.gt_columns()
        for name, ranks in chunk.gt_columns().items():
            columns[name][lo:hi] = ranks
        table.pair_counts[i0:i1] = chunk.pair_counts
        if gt.complete is not None:
            table.complete[gt.complete.offsets[i0]:gt.complete.offsets[i1]] = chunk.complete

    def evaluate(self) -> EvalResult:
        s, t, gt = self.setup, self.table, self.setup.gt
        check(self._done == gt.num_images, f"The predictions cover {self._done} images but the split has {gt.num_images}.",
              "Evaluate the predictions against the split they were made for.")
        if self._kept:
            t.pred_unique_rank = np.concatenate([rank for rank, _ in self._kept])
            t.pred_complete_hit = np.concatenate([hit for _, hit in self._kept])
        metrics, per_pred = aggregate(s, t, self.options[0], self.options[1])
        conventions = conventions_of(metrics, s)
        if self._sgbench:
            extra, lines = sgbench_aggregate(SgbenchTable.join(self._sgbench), gt.relations.counts() > 0, s.ks,
                                             s.num_predicates)
            metrics.update(extra)
            conventions.update(lines)
        none = np.zeros(0, np.int64)
        hits = Hits(gt.relations.offsets, np.zeros(1, np.int64), t.gc, t.ng, none, none, np.zeros(0), np.zeros(0, bool))
        counts = {"images": gt.num_images, "images_with_relations": int((gt.relations.counts() > 0).sum()),
                  "relations": len(gt.relations), "predicted_pairs": self._pairs, **empty_counts(s, t)}
        return EvalResult(metrics, per_pred, conventions, hits, counts)


__all__ = ["NO_HIT", "Evaluator", "SceneGraphEvaluator"]
