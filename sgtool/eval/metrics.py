"""Every SGG metric from one hit table (docs/evaluation.md; SGB conventions).

`evaluate` ranks each batch of images first, then matches once — only the pairs that some ranking
can place within its top max(K), since no other pair can ever count — and records, per GT
relation and per ranking, the 0-based rank of the best-ranked prediction that hits it. "Recalled in the top K" is then
`rank < K`, so every K and every metric (R, ng-R, mR, zR, A, phrase, k-per-pair, complete GT)
comes from the same table with bincounts.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from sgtool.data.graphs import SceneGraphs, owner_of_rows
from sgtool.data.predictions import Predictions
from sgtool.errors import SgtoolError
from sgtool.eval.matching import NO_HIT, BatchBoxes, Candidates, is_member, match_candidates, min_rank
from sgtool.eval.ranking import (
    BoxPairRanking, EntryRanking, GraphRanking, box_pair_rank, candidate_entries, full_rank, graph_ranking,
)
from sgtool.flags import flag
from sgtool.tasks import TASKS  # noqa: F401 (re-exported)

BATCH_PAIRS = 60_000  # predicted pairs matched together (numpy work arrays stay cache-sized)
BATCH_IMAGES = 2048
GROUPS = ("head", "body", "tail")

# Metric families: name template (K = cut-off) -> convention, one line.
METRIC_FAMILIES: dict[str, str] = {
    "R@K": "graph-constrained recall: per image |GT relations hit by the top K| / |GT relations|, mean over images with GT",
    "ng-R@K": "no graph constraint: every (pair, predicate) ranked (ties stably: pair order, then predicate index), top K; per-image recall, mean over images with GT",
    "mR@K": "graph-constrained mean recall: per-predicate recall (mean over images holding it), mean over ALL predicates (absent = 0)",
    "ng-mR@K": "no-graph-constraint mean recall (ties stably: pair order, then predicate index), mean over ALL predicates (absent = 0)",
    "mR@K-present": "graph-constrained mean recall over the predicates present in the test GT only",
    "ng-mR@K-present": "no-graph-constraint mean recall (ties stably) over the predicates present in the test GT only",
    "zR@K": "graph-constrained zero-shot recall: only GT triplets unseen in training count; images without one skipped",
    "ng-zR@K": "no-graph-constraint zero-shot recall (ties stably): only unseen GT triplets count; images without one skipped",
    "A@K": "pair accuracy (PredCls/SGCls): predictions on GT pairs only, first K, hits / GT summed over the split (micro)",
    "head-mR@K": "graph-constrained mean of per-predicate recalls over the head group (absent = 0)",
    "body-mR@K": "graph-constrained mean of per-predicate recalls over the body group (absent = 0)",
    "tail-mR@K": "graph-constrained mean of per-predicate recalls over the tail group (absent = 0)",
    "F1@K": "2 R@K mR@K / (R@K + mR@K), graph-constrained",
    "phr-R@K": "per-image phrase detection: graph-constrained recall with union-box IoU >= threshold instead of two boxes, mean over images (the VRD protocol's split-level count is k1-phr-R@K)",
    "k1-R@K": "top 1 predicate per pair, then top K; GT hits / GT summed over the split (micro)",
    "k10-R@K": "top 10 predicates per pair, then top K; GT hits / GT summed over the split (micro)",
    "kfree-R@K": "every predicate of every pair, then top K; GT hits / GT summed over the split (micro)",
    "k1-phr-R@K": "phrase detection in the VRD protocol (Lu et al., RelDN): top 1 predicate per pair, then top K; union-box hits / GT summed over the split (micro)",
    "k10-phr-R@K": "phrase detection in the VRD protocol: top 10 predicates per pair, then top K; union-box hits / GT summed over the split (micro)",
    "kfree-phr-R@K": "phrase detection in the VRD protocol: every predicate of every pair, then top K; union-box hits / GT summed over the split (micro)",
    "complete-P@K": "vs complete GT: graph-constrained top K after removing duplicate predictions; correct / predictions, micro",
    "complete-R@K": "vs complete GT: complete GT relations hit by the top K unique predictions / all, micro over the split",
    "complete-F1@K": "harmonic mean of complete-P@K and complete-R@K",
}
# The hit table's per-GT-relation rank columns, and the column each metric family reads (one place:
# a new family names its column here; `HitTable.empty` and the streaming evaluator follow this list).
GT_RANK_COLUMNS = ("gc", "ng", "phr", "acc")
FAMILY_COLUMNS: dict[str, str] = {
    **{family: "gc" for family in ("R@K", "mR@K", "mR@K-present", "zR@K", "head-mR@K", "body-mR@K", "tail-mR@K", "F1@K")},
    **{family: "ng" for family in ("ng-R@K", "ng-mR@K", "ng-mR@K-present", "ng-zR@K")},
    "phr-R@K": "phr", "A@K": "acc", "k1-R@K": "k1", "k10-R@K": "k10", "kfree-R@K": "kfree",
    "k1-phr-R@K": "k1-phr", "k10-phr-R@K": "k10-phr", "kfree-phr-R@K": "kfree-phr",
    **{family: "complete" for family in ("complete-P@K", "complete-R@K", "complete-F1@K")},
}
# SGBench's metrics (eval/sgbench.py), computed by `sgtool eval --predictions`; InstR and PRank have no K.
SGBENCH_FAMILIES = ("sgbench-R@K", "sgbench-mR@K", "PairR@K")
NO_K_METRICS = ("InstR", "PRank")
_K_FAMILY = re.compile(r"^k([0-9]+|free)-(phr-)?R@([0-9]+)$")  # names as written, K in ASCII digits only


def _family_patterns() -> list[tuple[re.Pattern, str, str]]:
    out = []
    for template in (*METRIC_FAMILIES, *SGBENCH_FAMILIES):
        prefix, suffix = template.split("@K")
        out.append((re.compile(rf"^{re.escape(prefix)}@([0-9]+){re.escape(suffix)}$"), prefix, suffix))
    return out


_PATTERNS = _family_patterns()


def parse_metric(name: str) -> str:
    """Validate a user-typed metric name, written as listed ("mR@100"; "mr@100", "R@5_0" are unknown); SgtoolError
    listing the families if unknown."""
    text = name.strip()
    exact = {metric.lower(): metric for metric in NO_K_METRICS}
    if text.lower() in exact:
        return exact[text.lower()]
    k_match = _K_FAMILY.match(text)
    if k_match and int(k_match.group(3)) > 0:
        return f"k{k_match.group(1).lower()}-{(k_match.group(2) or '').lower()}R@{int(k_match.group(3))}"
    for pattern, prefix, suffix in _PATTERNS:
        found = pattern.match(text)
        if found and int(found.group(1)) > 0:
            return f"{prefix}@{int(found.group(1))}{suffix}"
    raise SgtoolError(f"Unknown metric '{name}'.",
                      "Use one of " + ", ".join((*METRIC_FAMILIES, *SGBENCH_FAMILIES, *NO_K_METRICS)) + " with K a positive integer, e.g. mR@100.")


def metric_family(name: str) -> tuple[str, int]:
    """"mR@100-present" -> ("mR@K-present", 100); a metric without K ("InstR") -> ("InstR", 0)."""
    if name in NO_K_METRICS:
        return name, 0
    found = re.search(r"@(\d+)", name)
    if not found:
        raise SgtoolError(f"'{name}' is not a metric name.", "Metric names look like R@50 or mR@100.")
    return name[: found.start()] + "@K" + name[found.end():], int(found.group(1))


@dataclass
class Hits:
    """Which GT relations were recalled and which predicted pairs hit, for every K at once.

    GT side, aligned with `gt.relations` rows (global): `gt_rank[i]` is the 0-based rank, in its
    image's graph-constrained ranking, of the best-ranked prediction that hits relation i
    (`NO_HIT` if none within the top max(ks)): relation i is recalled at K iff `gt_rank[i] < K`.
    `ng_gt_rank` is the same for the no-graph-constraint ranking.
    Pred side, aligned with `pred.pairs` rows (global): `pred_rank` (0-based graph-constrained
    rank within the image, known for the top max(ks) only, `NO_HIT` beyond: the pair is in the
    top K iff `pred_rank < K`), `pred_predicate` (the predicate it is ranked with, 1-based),
    `pred_score` (its triplet score) and `pred_hit` (that triplet hits at least one GT relation;
    known for the top max(ks) pairs: pairs ranked beyond are never matched and read False).
    `gt_recalled(image, K)` and `top_pairs(image, K)` slice one image.
    """

    gt_offsets: np.ndarray
    pair_offsets: np.ndarray
    gt_rank: np.ndarray
    ng_gt_rank: np.ndarray
    pred_rank: np.ndarray
    pred_predicate: np.ndarray
    pred_score: np.ndarray
    pred_hit: np.ndarray

    def gt_recalled(self, image: int, k: int, ng: bool = False) -> np.ndarray:
        """(relations of the image,) bool: recalled within the top k."""
        lo, hi = self.gt_offsets[image], self.gt_offsets[image + 1]
        return (self.ng_gt_rank if ng else self.gt_rank)[lo:hi] < k

    def top_pairs(self, image: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Global pair rows of the image's top k predictions, best first, and whether each hits."""
        lo, hi = self.pair_offsets[image], self.pair_offsets[image + 1]
        rows = lo + np.flatnonzero(self.pred_rank[lo:hi] < k)
        rows = rows[np.argsort(self.pred_rank[rows], kind="stable")]
        return rows, self.pred_hit[rows]


@dataclass
class EvalResult:
    metrics: dict[str, float]  # every metric by name, fractions in [0, 1] (NaN where undefined)
    per_predicate: dict[str, np.ndarray]  # "R@K" / "ng-R@K" -> (P,) recall per predicate, NaN where absent
    conventions: dict[str, str]  # metric name -> one line: what it counts
    hits: Hits
    counts: dict[str, int] = field(default_factory=dict)  # images evaluated, GT relations, ...


@dataclass
class EvalSetup:
    gt: SceneGraphs
    pred: Predictions
    task: str
    num_predicates: int
    ks: tuple[int, ...]
    kmax: int
    k_lists: dict[str, int | None]  # metric prefix ("k1") -> k (None = free)
    iou_threshold: float
    legacy_iou: bool
    empty_images: str = "zero"  # an image with GT relations and no candidate pair: "zero" counts 0, "skip" leaves it out


EMPTY_IMAGES = {
    "zero": "an image with GT relations and no candidate pair counts 0",
    "skip": "an image with GT relations and no candidate pair is left out (as SGB does)",
}


@dataclass
class HitTable:
    """The hit table of the whole split (filled batch by batch)."""

    gc: np.ndarray
    ng: np.ndarray
    phr: np.ndarray
    acc: np.ndarray
    k_lists: dict[str, np.ndarray]
    complete: np.ndarray
    pred_rank: np.ndarray
    pred_predicate: np.ndarray
    pred_score: np.ndarray
    pred_hit: np.ndarray
    pred_unique_rank: np.ndarray  # graph rank after removing duplicates (NO_HIT for a duplicate)
    pred_complete_hit: np.ndarray
    pair_counts: np.ndarray  # (images,) candidate pairs per image
    every_pair_predicate: bool = True  # False: pred_predicate only for pairs ranked in the top max(K)

    @classmethod
    def empty(cls, n_gt: int, n_complete: int, n_pairs: int, k_names: list[str], n_images: int) -> "HitTable":
        def ranks(n: int) -> np.ndarray:
            return np.full(n, NO_HIT, dtype=np.int64)

        gt_side = {name: ranks(n_gt) for name in GT_RANK_COLUMNS}
        with_complete = n_pairs if n_complete else 0  # the complete-GT columns exist only with complete GT
        return cls(**gt_side, k_lists={k: ranks(n_gt) for k in k_names}, complete=ranks(n_complete),
                   pred_rank=np.empty(n_pairs, np.int64), pred_predicate=np.empty(n_pairs, np.int64),
                   pred_score=np.empty(n_pairs), pred_hit=np.zeros(n_pairs, bool),
                   pred_unique_rank=ranks(with_complete), pred_complete_hit=np.zeros(with_complete, bool),
                   pair_counts=np.zeros(n_images, np.int64))

    def gt_columns(self) -> dict[str, np.ndarray]:
        """Every per-GT-relation rank column (aligned with the GT relations), k-lists included."""
        return {**{name: getattr(self, name) for name in GT_RANK_COLUMNS}, **self.k_lists}


# ---------------------------------------------------------------- validation

def check(condition: bool, message: str, hint: str) -> None:
    if not condition:
        raise SgtoolError(message, hint)


def validate_inputs(gt: SceneGraphs, pred: Predictions, task: str, num_predicates: int, ks: tuple[int, ...],
                    predicate_groups: np.ndarray | None, seen_triplets: np.ndarray | None, iou_threshold: float,
                    top_k_per_pair: tuple) -> None:
    check(task in TASKS, f"Unknown task '{task}'.", "Use predcls, sgcls or sgdet.")
    check(num_predicates >= 2, f"num_predicates={num_predicates} leaves no foreground predicate.",
           "Count the predicates including background (index 0).")
    check(len(ks) > 0 and all(isinstance(k, (int, np.integer)) and k > 0 for k in ks),
           f"Invalid K values {ks}.", "Give positive integers, e.g. 20 50 100.")
    check(0.0 < iou_threshold <= 1.0, f"IoU threshold {iou_threshold} is outside (0, 1].", "The usual value is 0.5.")
    check(all(k is None or (isinstance(k, (int, np.integer)) and k > 0) for k in top_k_per_pair),
           f"Invalid predictions-per-pair values {top_k_per_pair}.", "Use positive integers or None (free k).")
    check(gt.num_images == pred.num_images,
           f"The predictions cover {pred.num_images} images but the split has {gt.num_images}.",
           "Evaluate the predictions against the split they were made for.")
    check(np.array_equal(gt.image_ids, pred.image_ids), "The predictions' image ids differ from the split's.",
           "Predictions must follow the split's images in the same order.")
    check(pred.rel_scores.ndim == 2 and pred.rel_scores.shape[1] == num_predicates,
           f"The predictions hold {pred.rel_scores.shape[-1]} predicate columns, the vocabulary {num_predicates}.",
           "Predictions were made with another vocabulary; predict again.")
    for rels in (gt.relations, gt.complete):
        if rels is not None and len(rels):
            check(rels.predicates.min() >= 1 and rels.predicates.max() < num_predicates,
                   "Some ground-truth predicates fall outside the vocabulary.", "Prepare the dataset again.")
    if task != "sgdet":
        check(np.array_equal(gt.box_counts(), np.diff(pred.box_offsets)),
               f"{task} predictions must keep the ground-truth boxes, but their box counts differ.",
               f"Use {flag('task')} sgdet for predictions on detected boxes.")
    if predicate_groups is not None:
        check(np.shape(predicate_groups) == (num_predicates,),
               f"predicate_groups has shape {np.shape(predicate_groups)}, expected ({num_predicates},).",
               "Take the groups from the dataset's priors.")
    if seen_triplets is not None:
        check(np.ndim(seen_triplets) == 2 and np.shape(seen_triplets)[1] == 3,
               "seen_triplets must be a (T, 3) array of [subject, predicate, object] labels.",
               "Take the training triplets from the prepared training split.")


def list_columns(k_lists: dict[str, int | None]) -> list[str]:
    """Hit-table columns of the k-per-pair lists: relationship ("k1") and phrase ("k1-phr") detection."""
    return [*k_lists, *(f"{name}-phr" for name in k_lists)]


def k_list_names(top_k_per_pair: tuple) -> dict[str, int | None]:
    return {f"k{'free' if k is None else int(k)}": (None if k is None else int(k)) for k in top_k_per_pair}


# ---------------------------------------------------------------- one batch

def _batch_bounds(pair_offsets: np.ndarray) -> list[tuple[int, int]]:
    """Image ranges holding about BATCH_PAIRS predicted pairs (and at most BATCH_IMAGES images) each."""
    n, target_pairs, max_images = len(pair_offsets) - 1, BATCH_PAIRS, BATCH_IMAGES
    by_pairs = np.searchsorted(pair_offsets, np.arange(target_pairs, pair_offsets[-1], target_pairs))
    cuts = np.unique(np.concatenate([[0, n], by_pairs, np.arange(0, n, max_images)]).clip(0, n))
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:])] or [(0, n)]


def _slice_boxes(boxes: np.ndarray, labels: np.ndarray, offsets: np.ndarray, i0: int, i1: int) -> BatchBoxes:
    b0, b1 = offsets[i0], offsets[i1]
    return BatchBoxes(boxes[b0:b1], labels[b0:b1], offsets[i0:i1 + 1] - b0)


def _gt_pair_flags(s: EvalSetup, i0: int, i1: int, pairs: np.ndarray, pb: BatchBoxes) -> np.ndarray:
    """Which predicted pairs are GT pairs (same box indices as an annotated relation) — for A@K.

    PredCls / SGCls keep the GT boxes (validated), so a batch-local box row names the same box on
    both sides and a pair is one int64 key, looked up among the few GT keys (`is_member`)."""
    g0, g1 = s.gt.relations.offsets[i0], s.gt.relations.offsets[i1]
    width = max(len(pb.labels), 1)
    gt_pairs = s.gt.relations.pairs[g0:g1] - s.gt.box_offsets[i0]
    return is_member(pairs[:, 0] * width + pairs[:, 1], gt_pairs[:, 0] * width + gt_pairs[:, 1])


def _filtered_rank(flag: np.ndarray, score: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Graph-constrained rank among the flagged pairs of the same image (NO_HIT for others)."""
    out = np.full(len(flag), NO_HIT, dtype=np.int64)
    rows = np.flatnonzero(flag)
    out[rows] = full_rank(score[rows], image[rows])
    return out


def _has_identical_boxes(pb: BatchBoxes) -> tuple[bool, np.ndarray]:
    """Whether an image holds two boxes with equal label and coordinates; a canonical id per box."""
    cols = [pb.boxes[:, 3], pb.boxes[:, 2], pb.boxes[:, 1], pb.boxes[:, 0], pb.labels, pb.image_of()]
    sort = np.lexsort(cols)
    keys = np.stack([c[sort] for c in cols], axis=1)
    new = np.ones(len(sort), bool)
    new[1:] = np.any(keys[1:] != keys[:-1], axis=1)
    canon = np.empty(len(sort), np.int64)
    canon[sort] = np.cumsum(new) - 1
    return not bool(new.all()), canon


def _unique_rank(gc: GraphRanking, pairs: np.ndarray, pb: BatchBoxes, image: np.ndarray, unique_pairs: bool,
                 num_predicates: int, row_labels: np.ndarray | None = None) -> np.ndarray:
    """Graph rank after dropping duplicates (same predicate, identical subject and object boxes and labels;
    with `row_labels`, the rows' own labels)."""
    identical, canon = _has_identical_boxes(pb)
    if unique_pairs and not identical:
        return gc.rank.copy()
    rank = gc.full_rank()
    n = max(len(canon), 1)
    triplet = (canon[pairs[:, 0]] * n + canon[pairs[:, 1]]) * num_predicates + gc.predicate
    if row_labels is not None:
        width = int(row_labels.max(initial=0)) + 1
        triplet = (triplet * width + row_labels[:, 0]) * width + row_labels[:, 1]
    _, group = np.unique(triplet, return_inverse=True)
    group = group.ravel()
    dup = rank != min_rank(int(group.max(initial=-1)) + 1, group, rank)[group]
    sort = np.lexsort((rank, image))  # image, then rank
    dup_sorted, img = dup[sort], image[sort]
    before = np.cumsum(dup_sorted) - dup_sorted
    before -= before[np.searchsorted(img, img)]  # dups earlier in the same image
    unique = np.empty(len(rank), np.int64)
    unique[sort] = rank[sort] - before
    return np.where(dup, NO_HIT, unique)


@dataclass
class _Batch:
    """One batch of images i0..i1: its predicted pairs p0..p1 and GT relations g0..g1, batch-local rows."""

    i0: int
    i1: int
    p0: int
    p1: int
    g0: int
    g1: int
    pb: BatchBoxes
    gb: BatchBoxes
    pairs: np.ndarray
    image: np.ndarray  # batch image of each pair
    rel_scores: np.ndarray
    scale: np.ndarray  # subject score x object score (1 in PredCls)
    pair_labels: np.ndarray | None = None  # (pairs, 2) each row's own labels (Predictions.pair_labels)
    box_pairs: np.ndarray | None = None  # (pairs,) box-pair id of each row, given with pair_labels
    box_pair_ranking: BoxPairRanking | None = None  # box_pairs ranked (set while matching, read by the lists)


def _batch(s: EvalSetup, i0: int, i1: int) -> _Batch:
    gt, pred = s.gt, s.pred
    p0, p1 = int(pred.pair_offsets[i0]), int(pred.pair_offsets[i1])
    pb = _slice_boxes(pred.boxes, pred.labels, pred.box_offsets, i0, i1)
    pairs = pred.pairs[p0:p1] - pred.box_offsets[i0]
    obj_scores = None  # predcls: object scores are 1 by convention
    if s.task != "predcls":
        obj_scores = pred.scores[pred.box_offsets[i0]:pred.box_offsets[i1]].astype(np.float64)
    pair_labels = box_pairs = None
    if pred.pair_labels is not None:  # several rows (labellings) per box pair
        pair_labels = pred.pair_labels[p0:p1]
        box_pairs = np.unique(pairs[:, 0] * max(len(pb.labels), 1) + pairs[:, 1], return_inverse=True)[1].ravel()
    return _Batch(i0, i1, p0, p1, int(gt.relations.offsets[i0]), int(gt.relations.offsets[i1]), pb,
                  _slice_boxes(gt.boxes, gt.labels, gt.box_offsets, i0, i1), pairs,
                  owner_of_rows(pred.pair_offsets[i0:i1 + 1] - p0), pred.rel_scores[p0:p1],
                  np.broadcast_to(1.0, (len(pairs),)) if obj_scores is None else obj_scores[pairs[:, 0]] * obj_scores[pairs[:, 1]],
                  pair_labels, box_pairs)


def _process_batch(s: EvalSetup, t: HitTable, i0: int, i1: int) -> None:
    """Rank every pair of a batch of images, then match only the pairs some ranking puts in its top max(K)."""
    b = _batch(s, i0, i1)
    counts = np.diff(s.pred.pair_offsets[i0:i1 + 1])
    t.pair_counts[i0:i1] = counts
    gc = graph_ranking(b.rel_scores, None if s.task == "predcls" else b.scale, b.image, counts,
                       s.pred.pair_offsets[i0:i1] - b.p0, s.kmax)
    t.pred_rank[b.p0:b.p1], t.pred_score[b.p0:b.p1] = gc.rank, gc.score
    if t.every_pair_predicate:
        t.pred_predicate[b.p0:b.p1] = gc.predicate
    else:  # only the ranked top is read (streaming): the others are left 0
        top = np.flatnonzero(gc.rank < s.kmax)
        t.pred_predicate[b.p0:b.p1] = 0
        t.pred_predicate[b.p0 + top] = gc.predicate_at(top)
    cand, gt_pred = _match_relations(s, t, gc, b)
    _entry_lists(s, t, gc, b, cand, gt_pred)
    if s.gt.complete is not None:
        _complete(s, t, gc, b)


def _match_relations(s: EvalSetup, t: HitTable, gc: GraphRanking, b: _Batch) -> tuple[Candidates, np.ndarray]:
    """Graph-constrained, phrase and pair-accuracy ranks of the batch's GT relations."""
    gt = s.gt
    gt_pairs = gt.relations.pairs[b.g0:b.g1] - gt.box_offsets[b.i0]
    gt_pred = gt.relations.predicates[b.g0:b.g1]
    ranked = gc.rank < s.kmax  # the top max(K) of the graph ranking: also holds every pair of the
    frank = None  # no-graph, k-per-pair and phrase top lists (see ranking.candidate_entries)
    if s.task != "sgdet":
        flag = _gt_pair_flags(s, b.i0, b.i1, b.pairs, b.pb)
        frank = _filtered_rank(flag, gc.score, b.image)
        ranked |= frank < s.kmax
    if b.box_pairs is not None:  # k per box pair: a row counts only if its box pair is among the top max(K)
        b.box_pair_ranking = box_pair_rank(gc, b.box_pairs, s.kmax)  # kept for the k-per-box-pair lists
        ranked |= b.box_pair_ranking.row_rank < s.kmax
    cand = match_candidates(gt_pairs, b.gb, b.pairs, b.pb, np.flatnonzero(ranked), s.iou_threshold, s.legacy_iou,
                            b.pair_labels)
    same = gc.predicate_at(cand.pair) == gt_pred[cand.gt]
    hit = cand.rel_ok & same
    phrase = cand.phr_ok & same
    n = b.g1 - b.g0
    t.gc[b.g0:b.g1] = min_rank(n, cand.gt[hit], gc.rank[cand.pair[hit]])
    t.phr[b.g0:b.g1] = min_rank(n, cand.gt[phrase], gc.rank[cand.pair[phrase]])
    t.pred_hit[b.p0 + cand.pair[hit]] = True
    if frank is not None:
        on_pair = hit & flag[cand.pair]
        t.acc[b.g0:b.g1] = min_rank(n, cand.gt[on_pair], frank[cand.pair[on_pair]])
    return cand, gt_pred


def _entry_lists(s: EvalSetup, t: HitTable, gc: GraphRanking, b: _Batch, cand: Candidates, gt_pred: np.ndarray) -> None:
    """No-graph-constraint ranking and the k-predictions-per-(box) pair lists."""
    P = s.num_predicates
    list_ks = tuple(sorted({P - 1 if k is None else min(k, P - 1) for k in [None, *s.k_lists.values()]}))
    entries = candidate_entries(gc, b.rel_scores, b.scale, s.kmax, list_ks, b.box_pair_ranking)
    found = {kind: (cand.pair[ok] * P + gt_pred[cand.gt[ok]], cand.gt[ok])
             for kind, ok in (("", cand.rel_ok), ("-phr", cand.phr_ok))}
    lists: dict[int | None, EntryRanking] = {}
    for name, k in [("ng", None)] + list(s.k_lists.items()):
        k = None if (k is None or k >= P - 1) else k
        if k not in lists:
            lists[k] = entries.top(k, s.kmax, P)
        for kind, (keys, gts) in found.items():
            if name == "ng" and kind:
                continue
            target = t.ng if name == "ng" else t.k_lists[name + kind]
            target[b.g0:b.g1] = min_rank(b.g1 - b.g0, gts, lists[k].lookup(keys))


def _has_duplicate_pairs(pairs: np.ndarray, pb: BatchBoxes) -> bool:
    """Whether some (subject, object) pair is listed twice (a count per subject row x local object)."""
    if len(pairs) < 2:
        return False
    width = int(np.diff(pb.offsets).max(initial=1))
    local_object = pairs[:, 1] - pb.offsets[pb.image_of()[pairs[:, 1]]]
    return bool(np.bincount(pairs[:, 0] * width + local_object).max() > 1)


def _complete(s: EvalSetup, t: HitTable, gc: GraphRanking, b: _Batch) -> None:
    """Precision and recall against the complete ground truth (duplicates removed)."""
    rels = s.gt.complete
    c0, c1 = int(rels.offsets[b.i0]), int(rels.offsets[b.i1])
    c_pairs = rels.pairs[c0:c1] - s.gt.box_offsets[b.i0]
    unique_rank = _unique_rank(gc, b.pairs, b.pb, b.image, not _has_duplicate_pairs(b.pairs, b.pb), s.num_predicates,
                               b.pair_labels)
    rows = np.flatnonzero(unique_rank < s.kmax)  # only these can enter a top-K list without duplicates
    cand = match_candidates(c_pairs, b.gb, b.pairs, b.pb, rows, s.iou_threshold, s.legacy_iou, b.pair_labels)
    hit = cand.rel_ok & (gc.predicate[cand.pair] == rels.predicates[c0:c1][cand.gt])
    t.pred_unique_rank[b.p0:b.p1] = unique_rank
    t.pred_complete_hit[b.p0 + cand.pair[hit]] = True
    t.complete[c0:c1] = min_rank(c1 - c0, cand.gt[hit], unique_rank[cand.pair[hit]])


# ---------------------------------------------------------------- aggregation

def _mean_recall_per_image(hit: np.ndarray, image: np.ndarray, n_images: int) -> float:
    """Mean over images with at least one relation of hits / relations."""
    total = np.bincount(image, minlength=n_images)
    hits = np.bincount(image, weights=hit, minlength=n_images)
    has = total > 0
    return float(np.mean(hits[has] / total[has])) if has.any() else float("nan")


class _PredicateGroups:
    """(image, predicate) groups of the GT relations, for per-predicate recall."""

    def __init__(self, image: np.ndarray, predicate: np.ndarray, num_predicates: int) -> None:
        keys, self.group = np.unique(image * num_predicates + predicate, return_inverse=True)
        self.group = self.group.ravel()
        self.size = np.bincount(self.group, minlength=len(keys))
        self.predicate = keys % num_predicates
        self.images_with = np.bincount(self.predicate, minlength=num_predicates)
        self.P = num_predicates

    def recall(self, hit: np.ndarray) -> np.ndarray:
        """(P,) per-predicate recall: mean over images holding it of its per-image recall; NaN if absent."""
        ratio = np.bincount(self.group, weights=hit, minlength=len(self.size)) / np.maximum(self.size, 1)
        total = np.bincount(self.predicate, weights=ratio, minlength=self.P)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(self.images_with > 0, total / np.maximum(self.images_with, 1), np.nan)
        out[0] = np.nan
        return out


def _mean_all(per_pred: np.ndarray, members: np.ndarray | None = None) -> float:
    """Mean over the given predicates (default: all foreground), absent (NaN) counting 0."""
    values = per_pred[1:] if members is None else per_pred[members]
    if not len(values) or np.isnan(per_pred[1:]).all():
        return float("nan")
    return float(np.nan_to_num(values, nan=0.0).mean())


def _f1(a: float, b: float) -> float:
    return float(2 * a * b / (a + b)) if (a + b) > 0 else (0.0 if a == a and b == b else float("nan"))


def counted_images(s: EvalSetup, t: HitTable) -> np.ndarray:
    """(images,) bool: the images the metrics average over (all, or with --empty-images skip only
    those with at least one candidate pair)."""
    return (t.pair_counts > 0) | (s.empty_images == "zero")


def aggregate(s: EvalSetup, t: HitTable, predicate_groups: np.ndarray | None,
              seen_triplets: np.ndarray | None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    gt, P, n_img = s.gt, s.num_predicates, s.gt.num_images
    image = owner_of_rows(gt.relations.offsets)
    keep = counted_images(s, t)[image]  # GT relations of the images that count
    image, pred_of = image[keep], gt.relations.predicates[keep]
    groups = _PredicateGroups(image, pred_of, P)
    unseen = _unseen_mask(gt, seen_triplets, P)[keep] if seen_triplets is not None else None
    n_rel = len(pred_of) or float("nan")  # NaN when --empty-images skip left every image out
    metrics: dict[str, float] = {}
    per_pred: dict[str, np.ndarray] = {}
    for K in s.ks:
        for prefix, ranks in (("", t.gc[keep]), ("ng-", t.ng[keep])):
            hit = ranks < K
            metrics[f"{prefix}R@{K}"] = _mean_recall_per_image(hit, image, n_img)
            per = groups.recall(hit)
            per_pred[f"{prefix}R@{K}"] = per
            metrics[f"{prefix}mR@{K}"] = _mean_all(per)
            metrics[f"{prefix}mR@{K}-present"] = float(np.nanmean(per[1:])) if np.isfinite(per[1:]).any() else float("nan")
            if unseen is not None:
                metrics[f"{prefix}zR@{K}"] = _mean_recall_per_image(hit[unseen], image[unseen], n_img)
        if s.task != "sgdet":
            metrics[f"A@{K}"] = float((t.acc[keep] < K).sum() / n_rel)
        if predicate_groups is not None:
            for g, name in enumerate(GROUPS):
                metrics[f"{name}-mR@{K}"] = _mean_all(per_pred[f"R@{K}"], np.flatnonzero(np.asarray(predicate_groups) == g))
        metrics[f"F1@{K}"] = _f1(metrics[f"R@{K}"], metrics[f"mR@{K}"])
        metrics[f"phr-R@{K}"] = _mean_recall_per_image(t.phr[keep] < K, image, n_img)
        for name in s.k_lists:
            metrics[f"{name}-R@{K}"] = float((t.k_lists[name][keep] < K).sum() / n_rel)
            metrics[f"{name}-phr-R@{K}"] = float((t.k_lists[name + "-phr"][keep] < K).sum() / n_rel)
        if gt.complete is not None:
            metrics.update(_complete_metrics(s, t, K, counted_images(s, t)[owner_of_rows(gt.complete.offsets)]))
    return metrics, per_pred


def _unseen_mask(gt: SceneGraphs, seen: np.ndarray, P: int) -> np.ndarray:
    """GT relations whose (subject label, predicate, object label) triplet was never seen in training."""
    seen = np.asarray(seen, dtype=np.int64).reshape(-1, 3)
    rels = gt.relations
    width = int(max(gt.labels.max(initial=0), seen[:, [0, 2]].max(initial=0))) + 1
    pw = max(P, int(seen[:, 1].max(initial=0)) + 1)

    def key(s: np.ndarray, p: np.ndarray, o: np.ndarray) -> np.ndarray:
        return (s * pw + p) * width + o

    gt_keys = key(gt.labels[rels.pairs[:, 0]], rels.predicates, gt.labels[rels.pairs[:, 1]])
    return ~np.isin(gt_keys, key(seen[:, 0], seen[:, 1], seen[:, 2]))


def _complete_metrics(s: EvalSetup, t: HitTable, K: int, keep: np.ndarray) -> dict[str, float]:
    total = int(keep.sum())
    recall = float((t.complete[keep] < K).sum() / total) if total else float("nan")
    kept = t.pred_unique_rank < K
    n_pred = int(kept.sum())
    precision = float((kept & t.pred_complete_hit).sum() / n_pred) if n_pred else float("nan")
    return {f"complete-P@{K}": precision, f"complete-R@{K}": recall, f"complete-F1@{K}": _f1(precision, recall)}


def _convention_line(family: str) -> str:
    if family in METRIC_FAMILIES:
        return METRIC_FAMILIES[family]
    k = family.split("-")[0][1:]
    hits = "union-box hits (phrase detection)" if "-phr-" in family else "GT hits"
    return f"top {k} predicates per pair, then top K; {hits} / GT summed over the split (micro)"


def conventions_of(metrics: dict[str, float], s: EvalSetup) -> dict[str, str]:
    iou = f"IoU >= {s.iou_threshold:g}" + (" with the +1-pixel legacy area" if s.legacy_iou else " with exact areas")
    shared = f"{s.task}; {iou}; {EMPTY_IMAGES[s.empty_images]}; ties in every ranking keep the input order"
    return {name: f"{_convention_line(metric_family(name)[0])}; {shared}" for name in metrics}


# ---------------------------------------------------------------- entry point

@dataclass(frozen=True)
class IoURule:
    """When a predicted box matches a GT box: IoU >= threshold, areas with the legacy +1 pixel or exact."""

    threshold: float = 0.5
    legacy: bool = True


def evaluate(gt: SceneGraphs, pred: Predictions, *, task: str, num_predicates: int,
             ks: tuple[int, ...] = (20, 50, 100), predicate_groups: np.ndarray | None = None,
             seen_triplets: np.ndarray | None = None, iou: IoURule = IoURule(),
             top_k_per_pair: tuple = (1, 10, None), reporter=None, workers: int | None = None,
             empty_images: str = "zero") -> EvalResult:
    """Evaluate predictions of one split against its ground truth (docs/evaluation.md conventions).

    iou: the box-matching rule (IoU >= 0.5 with the legacy +1-pixel areas by default).
    empty_images: "zero" (default) counts an image with GT relations and no candidate pair as
    recall 0; "skip" leaves it out of every metric, as the community benchmark (SGB) does."""
    iou_threshold, legacy_iou = iou.threshold, iou.legacy
    validate_inputs(gt, pred, task, num_predicates, tuple(ks), predicate_groups, seen_triplets, iou_threshold,
              tuple(top_k_per_pair))
    check_empty_images(empty_images)
    check(len(gt.relations) > 0 or (gt.complete is not None and len(gt.complete) > 0),
           "No image of the split has a ground-truth relation, so there is nothing to recall.",
           f"Check the split ({flag('split')}) or the dataset's relations.")
    ks = tuple(int(k) for k in ks)
    s = EvalSetup(gt, pred, task, num_predicates, ks, max(ks), k_list_names(tuple(top_k_per_pair)),
               float(iou_threshold), bool(legacy_iou), empty_images)
    n_complete = len(gt.complete) if gt.complete is not None else 0
    t = HitTable.empty(len(gt.relations), n_complete, len(pred.pairs), list_columns(s.k_lists), gt.num_images)
    score_batches(s, t, reporter, workers)
    metrics, per_pred = aggregate(s, t, predicate_groups, seen_triplets)
    hits = Hits(gt.relations.offsets, pred.pair_offsets, t.gc, t.ng, t.pred_rank, t.pred_predicate, t.pred_score,
                t.pred_hit)
    counts = {"images": gt.num_images, "images_with_relations": int((gt.relations.counts() > 0).sum()),
              "relations": len(gt.relations), "predicted_pairs": len(pred.pairs), **empty_counts(s, t)}
    return EvalResult(metrics, per_pred, conventions_of(metrics, s), hits, counts)


def check_empty_images(value: str) -> None:
    check(value in EMPTY_IMAGES, f"Unknown {flag('empty_images')} value '{value}'.",
           "Use zero (count such an image as 0) or skip (leave it out, as SGB does).")


def empty_counts(s: EvalSetup, t: HitTable) -> dict[str, int]:
    """Images with GT relations and no candidate pair, and how many of them the metrics left out."""
    empty = (s.gt.relations.counts() > 0) & (t.pair_counts == 0)
    return {"images_with_relations_and_no_pair": int(empty.sum()),
            "images_left_out": int((empty & ~counted_images(s, t)).sum())}


def score_batches(s: EvalSetup, t: HitTable, reporter, workers: int | None) -> None:
    bounds = _batch_bounds(s.pred.pair_offsets)
    workers = workers or 1  # threads help little: the work is memory-bound
    track = (lambda it: reporter.track(it, len(bounds), "Evaluating")) if reporter is not None else (lambda it: it)
    if workers <= 1:
        for i0, i1 in track(bounds):
            _process_batch(s, t, i0, i1)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in track(pool.map(lambda b: _process_batch(s, t, *b), bounds)):
            pass
