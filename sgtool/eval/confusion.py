"""Metrics of the confusion sets (RelDN's two errors) on PredCls predictions over every ordered pair.

For a link predicate e and the ground truth of images whose every e-relation is annotated:

- `average_precision`: AP of e over all candidate pairs, score p(e | s, o), positive = annotated
  with e (the area under the precision-recall curve, precision taken at each positive's rank).
- partner accuracy: for each annotated (s, e, o), the candidates are the pairs (s, o') with o' of
  o's class; credit 1 when (s, o) has the highest p(e) among them (1/t for a t-way tie), and the
  chance level of the same choice is 1 / number of candidates.
- wrong-partner false positives: the share of those candidate pairs not annotated with e whose
  argmax prediction (∅ included) is e (in a proximal-ambiguity scene: the crossed pairs).
"""
from __future__ import annotations

import numpy as np

from sgtool.data.graphs import SceneGraphs, take_ragged
from sgtool.data.predictions import Predictions


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
    n = max(len(gt.labels), 1)
    rels = gt.relations
    out: dict[str, float] = {}
    credit, chance, fp, fp_total = [], [], 0, 0
    guess = pred.rel_scores.argmax(1)
    pair_key = pred.pairs[:, 0] * n + pred.pairs[:, 1]
    for e in predicates:
        mine = rels.predicates == e
        keys = rels.pairs[mine, 0] * n + rels.pairs[mine, 1]
        is_e = np.isin(pair_key, keys)
        out[f"AP-{e}"] = average_precision(pred.rel_scores[:, e], is_e)
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
        credit.append(np.where(own == best[rel_slot], 1.0 / at_best[rel_slot], 0.0))
        chance.append(1.0 / size[rel_slot])
        wrong = ~is_e[candidate]
        fp += int((guess[candidate][wrong] == e).sum())
        fp_total += int(wrong.sum())
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
