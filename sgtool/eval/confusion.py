"""Metrics of the confusion sets (RelDN's two errors) on PredCls predictions over every ordered pair.

For a link predicate e and the ground truth of images whose every e-relation is annotated:

- `average_precision`: AP of e over all candidate pairs, score p(e | s, o), positive = annotated
  with e (the area under the precision-recall curve, precision taken at each positive's rank).
- partner accuracy: for each annotated (s, e, o), the candidates are the pairs (s, o') with o' of
  o's class; credit 1 when (s, o) has the highest p(e) among them (1/t for a t-way tie), and the
  chance level of the same choice is 1 / number of candidates.
- wrong-partner false positives: the share of those candidate pairs not annotated with e whose
  argmax prediction (∅ included) is e (in a proximal-ambiguity scene: the crossed pairs).

SGDet (`sgdet_confusion_metrics`): each GT box is stood for by the highest-scoring detection of its
label with IoU >= 0.5 (`match_detections`); the measures above are taken on every ordered GT pair
with the distribution of the pair of detections standing for it, and p(∅) = 1 where a box was
not detected (a miss is a pair the model relates to nothing). AP is the detection AP of e instead
(`detection_average_precision`): every scored detection pair ranked by p(s)·p(e)·p(o), a hit when
its boxes match a GT relation with e not claimed by a higher-ranked pair, divided by the GT count.
"""
from __future__ import annotations

import numpy as np

from sgtool.data.graphs import SceneGraphs, offsets_from_counts, ordered_pairs, owner_of_rows, take_ragged
from sgtool.data.predictions import Predictions
from sgtool.eval.matching import BatchBoxes, expand_ranges, match_candidates
from sgtool.geometry import rowwise_iou

IOU = 0.5


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """AP of a ranking: mean over the positives of the precision at their rank (ties broken stably); nan without one."""
    if not positive.any():
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = positive[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def select_predictions(pred: Predictions, images: np.ndarray) -> Predictions:
    """The predictions of the chosen images (indices, in order), box rows renumbered."""
    rows, box_offsets = take_ragged(pred.box_offsets, images)
    pair_rows, pair_offsets = take_ragged(pred.pair_offsets, images)
    shift = np.repeat(box_offsets[:-1] - pred.box_offsets[:-1][images], np.diff(pair_offsets))
    return Predictions(pred.image_ids[images], box_offsets, pred.boxes[rows], pred.labels[rows], pred.scores[rows],
                       pair_offsets, pred.pairs[pair_rows] + shift[:, None], pred.rel_scores[pair_rows], dict(pred.meta))


def _pair_rows(pred: Predictions, keys: np.ndarray, n: int) -> np.ndarray:
    """Row of each (subject * n + object) key among the predicted pairs (every key must be there)."""
    own = pred.pairs[:, 0] * n + pred.pairs[:, 1]
    order = np.argsort(own, kind="stable")
    pos = np.clip(np.searchsorted(own[order], keys), 0, max(len(own) - 1, 0))
    if not len(own) or np.any(own[order][pos] != keys):
        raise ValueError("confusion_metrics needs predictions for every ordered pair of the ground truth (PredCls)")
    return order[pos]


def confusion_metrics(gt: SceneGraphs, pred: Predictions, predicates: list[int]) -> dict[str, float]:
    """AP-<e> per predicate, partner_accuracy, partner_chance and wrong_partner_fp over the given link predicates.

    gt and pred hold the same images and boxes in the same order (PredCls), pred every ordered pair."""
    return confusion_from_parts([confusion_parts(gt, pred, predicates)], predicates)


def confusion_parts(gt: SceneGraphs, pred: Predictions, predicates: list[int]) -> dict:
    """What `confusion_metrics` needs from some images (every measure but AP is per image; AP keeps each
    pair's score and label): `confusion_from_parts` of the parts of consecutive chunks gives the split's."""
    n = max(len(gt.labels), 1)
    rels = gt.relations
    parts: dict = {"scores": {}, "positive": {}, "credit": [], "chance": [], "fp": 0, "fp_total": 0}
    guess = pred.rel_scores.argmax(1)
    pair_key = pred.pairs[:, 0] * n + pred.pairs[:, 1]
    for e in predicates:
        mine = rels.predicates == e
        keys = rels.pairs[mine, 0] * n + rels.pairs[mine, 1]
        is_e = np.isin(pair_key, keys)
        parts["scores"][e], parts["positive"][e] = pred.rel_scores[:, e], is_e
        if not mine.any():
            continue
        # candidate groups: (subject, class of the object)
        group_of_pair = pred.pairs[:, 0] * (int(gt.labels.max()) + 1) + gt.labels[pred.pairs[:, 1]]
        rel_group = rels.pairs[mine, 0] * (int(gt.labels.max()) + 1) + gt.labels[rels.pairs[mine, 1]]
        used, rel_slot = np.unique(rel_group, return_inverse=True)
        candidate = np.isin(group_of_pair, used)
        slot = np.searchsorted(used, group_of_pair[candidate])
        score = pred.rel_scores[candidate, e]
        best = np.full(len(used), -np.inf)
        np.maximum.at(best, slot, score)
        at_best = np.bincount(slot, weights=(score == best[slot]).astype(float), minlength=len(used))
        size = np.bincount(slot, minlength=len(used))
        own = pred.rel_scores[_pair_rows(pred, keys, n), e]
        parts["credit"].append(np.where(own == best[rel_slot], 1.0 / at_best[rel_slot], 0.0))
        parts["chance"].append(1.0 / size[rel_slot])
        wrong = ~is_e[candidate]
        parts["fp"] += int((guess[candidate][wrong] == e).sum())
        parts["fp_total"] += int(wrong.sum())
    return parts


def confusion_from_parts(parts: list[dict], predicates: list[int]) -> dict[str, float]:
    """`confusion_metrics` of the images whose `confusion_parts` are given (in image order)."""
    out: dict[str, float] = {
        f"AP-{e}": average_precision(np.concatenate([p["scores"][e] for p in parts]),
                                     np.concatenate([p["positive"][e] for p in parts])) for e in predicates}
    credit = [c for p in parts for c in p["credit"]]
    chance = [c for p in parts for c in p["chance"]]
    fp, fp_total = sum(p["fp"] for p in parts), sum(p["fp_total"] for p in parts)
    credit_all = np.concatenate(credit) if credit else np.zeros(0)
    out["partner_accuracy"] = float(credit_all.mean()) if len(credit_all) else float("nan")
    out["partner_chance"] = float(np.concatenate(chance).mean()) if chance else float("nan")
    out["wrong_partner_fp"] = fp / fp_total if fp_total else float("nan")
    out["relations"] = int(len(credit_all))
    return out


# ---------------------------------------------------------------- predicate confusion matrix

def matched_boxes(gt: SceneGraphs, pred: Predictions, iou_threshold: float = 0.5) -> np.ndarray:
    """(GT boxes,) the predicted box row each GT box matches best in its image (IoU >= threshold, the
    legacy +1-pixel areas, labels ignored; the box of the same index wins a tie), -1 when none does."""
    from sgtool.eval.matching import expand_ranges
    from sgtool.geometry import rowwise_iou

    image = gt.image_of_box()
    local = np.arange(len(gt.boxes)) - gt.box_offsets[image]
    owner, rows = expand_ranges(pred.box_offsets[image], np.diff(pred.box_offsets)[image])
    iou = rowwise_iou(gt.boxes[owner], pred.boxes[rows], legacy=True)
    same_index = (rows - pred.box_offsets[image[owner]]) == local[owner]
    order = np.lexsort((~same_index, -iou, owner))
    first = order[np.r_[True, owner[order][1:] != owner[order][:-1]]] if len(order) else order
    out = np.full(len(gt.boxes), -1, np.int64)
    good = iou[first] >= iou_threshold
    out[owner[first][good]] = rows[first][good]
    return out


def predicate_confusion(gt: SceneGraphs, pred: Predictions, num_predicates: int,
                        iou_threshold: float = 0.5) -> np.ndarray:
    """(P, P) counts: row = a GT relation's predicate, column = the predicate the predictions rank first
    (foreground argmax) on the pair of boxes matching its subject and object; column 0 = no such pair."""
    box_of = matched_boxes(gt, pred, iou_threshold)
    rels = gt.relations
    subj, obj = box_of[rels.pairs[:, 0]], box_of[rels.pairs[:, 1]]
    n = max(len(pred.boxes), 1)
    keys = np.where((subj >= 0) & (obj >= 0), subj * n + obj, -1)
    guess = np.zeros(len(keys), np.int64)
    if len(pred.pairs):
        own = pred.pairs[:, 0] * n + pred.pairs[:, 1]
        order = np.argsort(own, kind="stable")
        pos = np.clip(np.searchsorted(own[order], keys), 0, len(own) - 1)
        found = (keys >= 0) & (own[order][pos] == keys)
        guess[found] = pred.rel_scores[order[pos[found]], 1:].argmax(1) + 1
    matrix = np.zeros((num_predicates, num_predicates), np.int64)
    np.add.at(matrix, (rels.predicates, guess), 1)
    return matrix


def _same_images(gt: SceneGraphs, pred: Predictions) -> None:
    if not np.array_equal(gt.image_ids, pred.image_ids):
        raise ValueError("confusion metrics need the ground truth and the predictions of the same images in one order")


def match_detections(gt: SceneGraphs, pred: Predictions, iou_threshold: float = IOU) -> np.ndarray:
    """(GT boxes,) the detection row standing for each GT box: the highest-scoring detection of its image
    and label with IoU >= iou_threshold; -1 where none."""
    _same_images(gt, pred)
    gt_image = owner_of_rows(gt.box_offsets)
    owner, rows = expand_ranges(pred.box_offsets[:-1][gt_image], np.diff(pred.box_offsets)[gt_image])
    ok = (pred.labels[rows] == gt.labels[owner]) & (rowwise_iou(gt.boxes[owner], pred.boxes[rows], False) >= iou_threshold)
    owner, rows = owner[ok], rows[ok]
    order = np.lexsort((-pred.scores[rows], owner))
    owner, rows = owner[order], rows[order]
    first = np.ones(len(owner), bool)
    first[1:] = owner[1:] != owner[:-1]
    best = np.full(len(gt.labels), -1, dtype=np.int64)
    best[owner[first]] = rows[first]
    return best


def project_to_gt(gt: SceneGraphs, pred: Predictions, iou_threshold: float = IOU) -> Predictions:
    """SGDet predictions seen on the GT boxes: every ordered GT pair with the distribution of the detections
    standing for its boxes, p(∅) = 1 where a box has none or the pair was not scored."""
    stand = match_detections(gt, pred, iou_threshold)
    image, subj, obj = ordered_pairs(gt.box_offsets)
    rel = np.zeros((len(subj), pred.rel_scores.shape[1]), dtype=np.float32)
    rel[:, 0] = 1.0
    n = max(len(pred.labels), 1)
    own = pred.pairs[:, 0].astype(np.int64) * n + pred.pairs[:, 1]
    order = np.argsort(own, kind="stable")
    ds, do = stand[subj], stand[obj]
    want = np.flatnonzero((ds >= 0) & (do >= 0) & (ds != do))
    keys = ds[want] * n + do[want]
    pos = np.clip(np.searchsorted(own[order], keys), 0, max(len(own) - 1, 0))
    found = (own[order][pos] == keys) if len(own) else np.zeros(len(keys), bool)
    rel[want[found]] = pred.rel_scores[order[pos[found]]]
    pair_offsets = offsets_from_counts(np.bincount(image, minlength=len(gt.image_ids)))
    return Predictions(gt.image_ids, gt.box_offsets, gt.boxes, gt.labels, np.ones(len(gt.labels), np.float32),
                       pair_offsets, np.stack([subj, obj], 1), rel, dict(pred.meta))


def detection_average_precision(gt: SceneGraphs, pred: Predictions, predicate: int, iou_threshold: float = IOU) -> float:
    """Detection AP of one predicate (module doc); nan without a GT relation of it."""
    return detection_ap_from_hits(*detection_hits(gt, pred, predicate, iou_threshold))


def detection_hits(gt: SceneGraphs, pred: Predictions, predicate: int,
                   iou_threshold: float = IOU) -> tuple[np.ndarray, np.ndarray, int]:
    """Each detection pair's score for the predicate, whether it claims a GT relation of it (the best-ranked
    pair hitting that relation: ranks never cross images, so chunks of images give the split's), the GT count."""
    _same_images(gt, pred)
    mine = gt.relations.predicates == predicate
    score = pred.rel_scores[:, predicate] * pred.scores[pred.pairs[:, 0]] * pred.scores[pred.pairs[:, 1]]
    if not mine.any():
        return score, np.zeros(len(score), bool), 0
    order = np.argsort(-score, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    found = match_candidates(gt.relations.pairs[mine], BatchBoxes(gt.boxes, gt.labels, gt.box_offsets),
                             pred.pairs, BatchBoxes(pred.boxes, pred.labels, pred.box_offsets),
                             np.arange(len(pred.pairs)), iou_threshold, legacy=False)
    hit_rel, hit_rank = found.gt[found.rel_ok], rank[found.pair[found.rel_ok]]
    claim = np.full(int(mine.sum()), len(order), dtype=np.int64)  # the best-ranked pair hitting each relation
    np.minimum.at(claim, hit_rel, hit_rank)
    claimed = np.zeros(len(order) + 1, bool)
    claimed[claim] = True
    return score, claimed[:-1][rank], int(mine.sum())


def detection_ap_from_hits(score: np.ndarray, claims: np.ndarray, relations: int) -> float:
    """AP of the pairs ranked by score (stable), hits = the claiming pairs, over `relations` GT relations."""
    if not relations:
        return float("nan")
    hits = claims[np.argsort(-score, kind="stable")]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].sum() / relations)


def sgdet_confusion_metrics(gt: SceneGraphs, pred: Predictions, predicates: list[int],
                            iou_threshold: float = IOU) -> dict[str, float]:
    """confusion_metrics on the GT pairs seen through the detections, with each AP-<e> the detection AP."""
    out = confusion_metrics(gt, project_to_gt(gt, pred, iou_threshold), predicates)
    out.update({f"AP-{e}": detection_average_precision(gt, pred, e, iou_threshold) for e in predicates})
    out["detected_boxes"] = float(np.mean(match_detections(gt, pred, iou_threshold) >= 0)) if len(gt.labels) else 0.0
    return out
