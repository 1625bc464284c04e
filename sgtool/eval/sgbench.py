"""SGBench's metrics (Lorenz et al., CVPR 2024 workshop; the `sgbench` package), vectorised over a split.

SGBench first matches instances: each predicted box takes the ground-truth box of its label with the
highest IoU (exact areas; first such box on ties), if that IoU is >= 0.5, else none. Predicted
triplets [subject, object, predicate] (ranked, repeats removed first) are rewritten onto those GT boxes.
Per image with GT relations (GT triplets counted once each):
- `sgbench-R@K`: |GT triplets among the first K rewritten triplets| / |GT triplets|; mean over images.
- `sgbench-mR@K`: the same per predicate; per predicate the mean over images holding it, then the mean
  over the predicates present in the test ground truth.
- `PairR@K` (pair recall): |GT (subject, object) pairs among the pairs of the first K triplets| / |GT pairs|.
  (The package's `pair_recall` also cuts the GT list at K; the definition, and sgtool, use every GT pair.)
- `InstR` (instance recall): |GT boxes some predicted box matches| / |GT boxes|; mean over images.
- `PRank` (predicate rank): in the no-graph-constraint list, the 0-based rank of a GT predicate among the
  distinct predicates listed for its (matched) pair; mean over each image's GT relations of a predicate
  found there, then `nanmean` over every (image, predicate) cell. Lower is better.
For files with full predicate distributions the ranked list is sgtool's graph-constrained ranking and the
no-graph-constraint list is every (pair, predicate) by score; SGBench files give both lists themselves.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sgtool.data.graphs import SceneGraphs, owner_of_rows
from sgtool.data.predictions import Predictions
from sgtool.eval.matching import expand_ranges, is_member
from sgtool.eval.ranking import grouped_descending
from sgtool.geometry import rowwise_iou

CONVENTIONS = {
    "sgbench-R@K": "SGBench recall: instances matched first (best same-label IoU >= 0.5, exact areas), unique GT triplets in the first K; mean over images",
    "sgbench-mR@K": "SGBench mean recall: per predicate, mean over images holding it; mean over the predicates present",
    "PairR@K": "SGBench pair recall: GT (subject, object) pairs among the first K matched pairs, every GT pair counted; mean over images",
    "InstR": "SGBench instance recall: GT boxes matched by some predicted box (best same-label IoU >= 0.5); mean over images",
    "PRank": "SGBench predicate rank: 0-based rank of the GT predicate among its matched pair's predicates (no graph constraint); nanmean over (image, predicate); lower is better",
}


def match_instances(gt: SceneGraphs, pred: Predictions, threshold: float = 0.5) -> np.ndarray:
    """(predicted boxes,) the global GT box row each predicted box matches, or -1 (SGBench's rule).

    A predicted box that is its own GT box (PredCls / SGCls) is matched at once (`_matching_itself`);
    the others are compared with every GT box of their label and image."""
    out = np.full(len(pred.labels), -1, np.int64)
    itself = _matching_itself(gt, pred, threshold)
    out[itself] = np.flatnonzero(itself)
    _match_by_iou(gt, pred, np.flatnonzero(~itself), threshold, out)
    return out


def _matching_itself(gt: SceneGraphs, pred: Predictions, threshold: float) -> np.ndarray:
    """Predicted boxes whose match is the GT box of the same row: same image, label and coordinates, IoU
    exactly 1 (a positive area) and at least the threshold, and no other GT box of that image and label
    with the same coordinates (only such a twin could tie at IoU 1 and come first)."""
    if not np.array_equal(gt.box_offsets, pred.box_offsets):
        return np.zeros(len(pred.labels), bool)
    iou = rowwise_iou(pred.boxes, gt.boxes, legacy=False)
    same = (gt.labels == pred.labels) & np.all(gt.boxes == pred.boxes, axis=1) & (iou == 1.0) & (iou >= threshold)
    columns = [gt.boxes[:, 3], gt.boxes[:, 2], gt.boxes[:, 1], gt.boxes[:, 0], gt.labels, gt.image_of_box()]
    sort = np.lexsort(columns)
    keys = np.stack([c[sort] for c in columns], axis=1)
    twin = np.zeros(len(sort) + 1, bool)
    twin[1:-1] = np.all(keys[1:] == keys[:-1], axis=1)
    same[sort[twin[1:] | twin[:-1]]] = False
    return same


def _match_by_iou(gt: SceneGraphs, pred: Predictions, rows: np.ndarray, threshold: float, out: np.ndarray) -> None:
    """SGBench's rule for the predicted boxes `rows`: the first GT box of the highest IoU among those of their
    label and image, if that IoU is >= threshold (written into `out`)."""
    p_image, g_image = owner_of_rows(pred.box_offsets)[rows], gt.image_of_box()
    width = int(max(gt.labels.max(initial=0), pred.labels.max(initial=0))) + 1
    g_key = g_image * width + gt.labels
    order = np.argsort(g_key, kind="stable")
    p_key = p_image * width + pred.labels[rows]
    start = np.searchsorted(g_key[order], p_key, side="left")
    stop = np.searchsorted(g_key[order], p_key, side="right")
    which, at = expand_ranges(start, stop - start)
    box, g_row = rows[which], order[at]
    iou = rowwise_iou(np.take(pred.boxes, box, axis=0), np.take(gt.boxes, g_row, axis=0), legacy=False)  # by box, GT rows ascending
    if not len(box):
        return
    starts = np.flatnonzero(np.concatenate([[True], box[1:] != box[:-1]]))
    best = np.fmax.reduceat(iou, starts)  # per predicted box with candidates: the highest IoU (NaN last)
    at_best = np.flatnonzero(iou == np.repeat(best, np.diff(np.append(starts, len(box)))))
    first = at_best[np.concatenate([[True], box[at_best][1:] != box[at_best][:-1]])]  # the first GT box on ties
    ok = iou[first] >= threshold
    out[box[first][ok]] = g_row[first][ok]


def _gt_triplets(gt: SceneGraphs) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unique GT triplets: (image, subject row, object row, predicate), sorted."""
    rels = gt.relations
    n, width = max(len(gt.labels), 1), int(rels.predicates.max(initial=0)) + 1
    key = np.unique((rels.pairs[:, 0] * n + rels.pairs[:, 1]) * width + rels.predicates)  # rows name the image
    subject, rest = np.divmod(key, n * width)
    obj, predicate = np.divmod(rest, width)
    return gt.image_of_box()[subject], subject, obj, predicate


def _first_position(keys: np.ndarray, positions: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """For each wanted key, the smallest position listed with it (int64 max where none)."""
    none = np.iinfo(np.int64).max
    if not len(keys):
        return np.full(len(wanted), none, np.int64)
    order = np.lexsort((positions, keys))
    keys, positions = keys[order], positions[order]
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[at] == wanted, positions[at], none)


@dataclass
class SgbenchTable:
    """What SGBench's metrics need, per unique GT triplet, GT pair, image and (image, predicate) cell;
    chunks of consecutive images are joined with `join` (image numbers shifted)."""

    triplet_image: np.ndarray
    triplet_predicate: np.ndarray
    triplet_pos: np.ndarray  # first position of the GT triplet in the ranked list (int64 max: never)
    pair_image: np.ndarray
    pair_pos: np.ndarray
    matched_boxes: np.ndarray  # (images,) GT boxes some predicted box matches
    boxes: np.ndarray  # (images,)
    cell_image: np.ndarray  # PRank cells: (image, predicate) with a found rank, their rank sum and count
    cell_predicate: np.ndarray
    cell_sum: np.ndarray
    cell_count: np.ndarray

    @classmethod
    def join(cls, tables: list["SgbenchTable"]) -> "SgbenchTable":
        shift, parts = 0, []
        for table in tables:
            parts.append([a + shift if name in ("triplet_image", "pair_image", "cell_image") else a
                          for name, a in table.__dict__.items()])
            shift += len(table.boxes)
        return cls(*(np.concatenate(column) for column in zip(*parts)))


def _recall_columns(gt: SceneGraphs, pred: Predictions, pred_rank: np.ndarray, pred_predicate: np.ndarray,
                    mapped: np.ndarray, kmax: int, num_predicates: int, triplets: tuple) -> tuple[np.ndarray, ...]:
    """First positions of the unique GT triplets and GT pairs in the graph-constrained top kmax."""
    rows = np.flatnonzero(pred_rank < kmax)
    chosen = np.take(pred.pairs, rows, axis=0)
    s, o = mapped[chosen[:, 0]], mapped[chosen[:, 1]]
    g_img, g_s, g_o, g_p = triplets  # _gt_triplets
    n = max(len(gt.labels), 1)
    gt_pair = g_s * n + g_o  # GT box rows are global: a pair of rows names its image
    ok = (s >= 0) & (o >= 0)
    pair_key, position = s[ok] * n + o[ok], pred_rank[rows][ok]
    triplet_pos = _first_position(pair_key * num_predicates + pred_predicate[rows][ok], position,
                                  gt_pair * num_predicates + g_p)
    pair_keys, first = np.unique(gt_pair, return_index=True)
    return g_img, g_p, triplet_pos, g_img[first], _first_position(pair_key, position, pair_keys)


def sgbench_table(gt: SceneGraphs, pred: Predictions, pred_rank: np.ndarray, pred_predicate: np.ndarray, kmax: int,
                  task: str, ng_lists: list[np.ndarray] | None = None) -> SgbenchTable:
    """SGBench's columns of these images: pred_rank / pred_predicate are sgtool's graph-constrained ranking."""
    num_predicates = pred.rel_scores.shape[1]
    mapped = match_instances(gt, pred)
    triplets = _gt_triplets(gt)
    recall = _recall_columns(gt, pred, pred_rank, pred_predicate, mapped, kmax, num_predicates, triplets)
    matched = np.unique(mapped[mapped >= 0])
    matched_boxes = np.bincount(gt.image_of_box()[matched], minlength=gt.num_images)
    cells = _prank_cells(gt, pred, mapped, task, ng_lists, num_predicates, triplets)
    return SgbenchTable(*recall, matched_boxes, gt.box_counts(), *cells)


def _per_image_mean(hit: np.ndarray, image: np.ndarray, counted: np.ndarray) -> float:
    total = np.bincount(image, minlength=len(counted))
    hits = np.bincount(image, weights=hit, minlength=len(counted))
    has = counted & (total > 0)
    return float(np.mean(hits[has] / total[has])) if has.any() else float("nan")


def _mean_recall(hit: np.ndarray, image: np.ndarray, predicate: np.ndarray, num_predicates: int) -> float:
    if not len(hit):
        return float("nan")
    keys, group = np.unique(image * num_predicates + predicate, return_inverse=True)
    ratio = np.bincount(group.ravel(), weights=hit, minlength=len(keys)) / np.bincount(group.ravel(), minlength=len(keys))
    per = np.bincount(keys % num_predicates, weights=ratio, minlength=num_predicates)
    held = np.bincount(keys % num_predicates, minlength=num_predicates)
    return float(np.mean(per[held > 0] / held[held > 0]))


def sgbench_aggregate(t: SgbenchTable, counted: np.ndarray, ks: tuple[int, ...],
                      num_predicates: int) -> tuple[dict[str, float], dict[str, str]]:
    """SGBench's metrics over the images `counted` (those with GT relations)."""
    metrics = {}
    keep = counted[t.triplet_image]
    for k in ks:
        hit = t.triplet_pos < k
        metrics[f"sgbench-R@{k}"] = _per_image_mean(hit, t.triplet_image, counted)
        metrics[f"sgbench-mR@{k}"] = _mean_recall(hit[keep], t.triplet_image[keep], t.triplet_predicate[keep], num_predicates)
        metrics[f"PairR@{k}"] = _per_image_mean(t.pair_pos < k, t.pair_image, counted)
    use = counted & (t.boxes > 0)
    metrics["InstR"] = float(np.mean(t.matched_boxes[use] / t.boxes[use])) if use.any() else float("nan")
    cells = counted[t.cell_image]
    metrics["PRank"] = float(np.mean(t.cell_sum[cells] / t.cell_count[cells])) if cells.any() else float("nan")
    conventions = {name: CONVENTIONS[name.split("@")[0] + ("@K" if "@" in name else "")] for name in metrics}
    return metrics, conventions


def _on_gt_pairs(s: np.ndarray, o: np.ndarray, n: int, gt_pairs: np.ndarray) -> np.ndarray:
    """Which (subject, object) GT-box rows (-1: unmatched) form a GT pair (keys s * n + o)."""
    key = np.where((s >= 0) & (o >= 0), s * n + o, n * n)  # n * n: no pair of GT rows
    return is_member(key, gt_pairs)


def _prank_entries(pred: Predictions, mapped: np.ndarray, task: str, ng_lists: list[np.ndarray] | None,
                   gt_pairs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """No-graph-constraint entries on GT pairs: (GT pair key, predicate, order key: lower = listed earlier)."""
    if ng_lists is not None:  # SGBench's own list: file order
        image = np.repeat(np.arange(len(ng_lists)), [len(t) for t in ng_lists])
        table = np.concatenate(ng_lists) if ng_lists else np.zeros((0, 3), np.int64)
        s = mapped[table[:, 0] + pred.box_offsets[image]]
        o = mapped[table[:, 1] + pred.box_offsets[image]]
        on = _on_gt_pairs(s, o, n, gt_pairs)
        return (s * n + o)[on], table[on, 2], np.flatnonzero(on).astype(np.float64)
    key, rows = _rows_on_gt_pairs(pred, mapped, gt_pairs, n)
    width = pred.rel_scores.shape[1] - 1
    score = _ng_scores(pred, rows, task)
    order = np.argsort(grouped_descending(score.ravel(), np.zeros(score.size, np.int64)), kind="stable")
    return np.repeat(key, width), np.tile(np.arange(1, width + 1), len(rows)), order.astype(np.float64)


def _rows_on_gt_pairs(pred: Predictions, mapped: np.ndarray, gt_pairs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(GT pair key, predicted row) of every predicted row whose matched boxes form a GT pair, in row order."""
    s, o = pred.pairs[:, 0], pred.pairs[:, 1]
    rows = np.flatnonzero(is_member(s * len(mapped) + o, _predicted_box_pairs(mapped, gt_pairs, n)))
    return mapped[s[rows]] * n + mapped[o[rows]], rows


def _predicted_box_pairs(mapped: np.ndarray, gt_pairs: np.ndarray, n: int) -> np.ndarray:
    """Keys (subject * boxes + object) of every pair of predicted boxes that `mapped` sends onto a GT pair
    (keys gt subject * n + gt object): the GT pairs pulled back through the matching, so the many
    predicted pairs are looked up by their own boxes."""
    order = np.argsort(mapped, kind="stable")
    by_gt = mapped[order]
    g_s, g_o = np.divmod(gt_pairs, n)
    start, stop = np.searchsorted(by_gt, g_s, "left"), np.searchsorted(by_gt, g_s, "right")
    pair, at = expand_ranges(start, stop - start)  # (GT pair, predicted subject) combinations
    subject = order[at]
    start, stop = np.searchsorted(by_gt, g_o[pair], "left"), np.searchsorted(by_gt, g_o[pair], "right")
    which, at = expand_ranges(start, stop - start)
    return subject[which] * len(mapped) + order[at]


def _ng_scores(pred: Predictions, rows: np.ndarray, task: str) -> np.ndarray:
    """(rows, predicates - 1) float64 no-graph scores: probability x subject score x object score."""
    scale = np.ones(len(rows)) if task == "predcls" else \
        pred.scores[pred.pairs[rows, 0]].astype(np.float64) * pred.scores[pred.pairs[rows, 1]]
    return np.take(pred.rel_scores, rows, axis=0)[:, 1:].astype(np.float64) * scale[:, None]


def _prank_cells(gt: SceneGraphs, pred: Predictions, mapped: np.ndarray, task: str,
                 ng_lists: list[np.ndarray] | None, num_predicates: int, triplets: tuple) -> tuple[np.ndarray, ...]:
    """PRank's (image, predicate) cells: each GT triplet's rank among the distinct predicates listed for its
    pair (in list order), summed and counted per cell over the GT triplets found."""
    g_img, g_s, g_o, g_p = triplets  # _gt_triplets
    n = max(len(gt.labels), 1)
    gt_pair = g_s * n + g_o
    found = None if ng_lists is not None else _prank_by_row(pred, mapped, task, gt_pair, g_p, n)
    if found is None:
        found = _prank_listed(pred, mapped, task, ng_lists, gt_pair * num_predicates + g_p, np.unique(gt_pair), n,
                              num_predicates)
    has = found != np.iinfo(np.int64).max
    cells, group = np.unique(g_img[has] * num_predicates + g_p[has], return_inverse=True)
    group = group.ravel()
    return (cells // num_predicates, cells % num_predicates, np.bincount(group, weights=found[has], minlength=len(cells)),
            np.bincount(group, minlength=len(cells)))


def _prank_listed(pred: Predictions, mapped: np.ndarray, task: str, ng_lists: list[np.ndarray] | None,
                  gt_triplet: np.ndarray, gt_pairs: np.ndarray, n: int, num_predicates: int) -> np.ndarray:
    """PRank of each GT triplet (key pair * P + predicate) from the whole no-graph list on GT pairs: the
    distinct predicates listed for its pair before it (int64 max where it is not listed)."""
    key, predicate, order = _prank_entries(pred, mapped, task, ng_lists, gt_pairs, n)
    sort = np.lexsort((order, key))
    key, predicate = key[sort], predicate[sort]
    triplet = key * num_predicates + predicate
    new = np.ones(len(triplet), bool)  # first listing of each (pair, predicate)
    if len(triplet):
        by_triplet = np.lexsort((np.arange(len(triplet)), triplet))
        new[by_triplet[1:]] = triplet[by_triplet[1:]] != triplet[by_triplet[:-1]]
    distinct_before = np.cumsum(new) - new
    rank = (distinct_before - distinct_before[np.searchsorted(key, key)])[new]
    return _first_position(triplet[new], rank, gt_triplet)


def _prank_by_row(pred: Predictions, mapped: np.ndarray, task: str, gt_pair: np.ndarray, gt_predicate: np.ndarray,
                  n: int) -> np.ndarray | None:
    """PRank of each GT triplet when every GT pair is listed by at most one predicted row (None otherwise).

    The no-graph list sorts every (row, predicate) by score, ties in (row, predicate) order; restricted to
    one row's entries that is the row's own stable sort of -score, and each predicate is listed once, so
    the rank among distinct predicates is the predicate's rank within its row (same scores, same ties)."""
    key, rows = _rows_on_gt_pairs(pred, mapped, np.unique(gt_pair), n)
    order = np.argsort(key, kind="stable")
    key, rows = key[order], rows[order]
    if np.any(key[1:] == key[:-1]):
        return None
    width = pred.rel_scores.shape[1] - 1
    within = np.empty((len(rows), width), np.int64)
    within[np.arange(len(rows))[:, None], np.argsort(-_ng_scores(pred, rows, task), axis=1, kind="stable")] = np.arange(width)
    found = np.full(len(gt_pair), np.iinfo(np.int64).max, np.int64)
    if not len(key):
        return found
    at = np.minimum(np.searchsorted(key, gt_pair), len(key) - 1)
    listed = (key[at] == gt_pair) & (gt_predicate >= 1) & (gt_predicate <= width)
    found[listed] = within[at[listed], gt_predicate[listed] - 1]
    return found


def sgbench_metrics(gt: SceneGraphs, pred: Predictions, hits, ks: tuple[int, ...], task: str,
                    ng_lists: list[np.ndarray] | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """SGBench's metrics over the images with GT relations; `hits` is sgtool's ranking of the same predictions."""
    table = sgbench_table(gt, pred, hits.pred_rank, hits.pred_predicate, max(ks), task, ng_lists)
    return sgbench_aggregate(table, gt.relations.counts() > 0, tuple(ks), pred.rel_scores.shape[1])
