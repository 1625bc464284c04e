"""Prediction files as other code bases write them, built here (no file from outside the tests).

`community_boxlist()` installs a stand-in BoxList under the community benchmark's module path
(maskrcnn_benchmark.structures.bounding_box), so torch.save pickles it exactly as the benchmark's
eval_results.pytorch does; the stand-in is removed afterwards, so loading cannot import it.
`sgb_split` makes a deterministic split: ground truth (boxes, labels, relation_tuple) and predictions
(boxes xyxy, pred_labels, pred_scores, rel_pair_idxs ranked by triplet score, pred_rel_scores).
"""
from __future__ import annotations

import contextlib
import sys
import types

import numpy as np

MODULE = "maskrcnn_benchmark.structures.bounding_box"


@contextlib.contextmanager
def community_boxlist():
    names = ["maskrcnn_benchmark", "maskrcnn_benchmark.structures", MODULE]
    saved = {name: sys.modules.get(name) for name in names}
    for name in names:
        sys.modules[name] = types.ModuleType(name)

    class BoxList:
        def __init__(self, bbox, image_size, mode="xyxy"):
            self.bbox, self.size, self.mode = bbox, image_size, mode
            self.extra_fields, self.triplet_extra_fields = {}, []

        def add_field(self, name, value):
            self.extra_fields[name] = value

    BoxList.__module__, BoxList.__qualname__ = MODULE, "BoxList"
    sys.modules[MODULE].BoxList = BoxList
    try:
        yield BoxList
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def sgb_split(seed: int = 0, images: int = 40, max_boxes: int = 12, num_predicates: int = 8, num_labels: int = 5,
              task: str = "sgdet") -> tuple[list[dict], list[dict]]:
    """Per image: GT {boxes, labels, relations (r, 3), size} and predictions {boxes, labels, scores, pairs, rel_scores}."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for _ in range(images):
        n = int(rng.integers(2, max_boxes + 1))
        xy = rng.uniform(0, 300, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 120, (n, 2))], 1).round(1).astype(np.float32)
        labels = rng.integers(1, num_labels + 1, n)
        s, o = np.nonzero(~np.eye(n, dtype=bool))
        pick = rng.random(len(s)) < min(1.0, 4 / len(s))
        relations = np.column_stack([s[pick], o[pick], rng.integers(1, num_predicates, int(pick.sum()))])
        if len(relations) and rng.random() < 0.2:  # an exact duplicate relation
            relations = np.concatenate([relations, relations[:1]])
        gts.append({"boxes": boxes, "labels": labels, "relations": relations, "size": (500, 450)})
        if task == "sgdet":
            m = n + int(rng.integers(0, 3))
            keep = np.concatenate([np.arange(n), rng.integers(0, n, m - n)])
            p_boxes = (boxes[keep] + rng.normal(0, 6, (m, 4))).astype(np.float32)
            p_labels = np.where(rng.random(m) < 0.85, labels[keep], rng.integers(1, num_labels + 1, m))
            p_scores = rng.uniform(0.2, 1.0, m).astype(np.float32)
        else:
            m, p_boxes, p_scores = n, boxes.copy(), np.ones(n, np.float32)
            p_labels = labels.copy() if task == "predcls" else np.where(rng.random(n) < 0.7, labels, 1)
            if task == "sgcls":
                p_scores = rng.uniform(0.2, 1.0, n).astype(np.float32)
        ps, po = np.nonzero(~np.eye(m, dtype=bool))
        logits = rng.normal(0, 1, (len(ps), num_predicates)) + np.eye(num_predicates)[0] * 1.5
        rel_scores = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
        triplet = rel_scores[:, 1:].max(1) * p_scores[ps] * p_scores[po]
        order = np.argsort(-triplet, kind="stable")
        preds.append({"boxes": p_boxes, "labels": p_labels, "scores": p_scores,
                      "pairs": np.column_stack([ps, po])[order], "rel_scores": rel_scores[order]})
    return gts, preds


def write_sgb(path, gts: list[dict], preds: list[dict], with_gt: bool = True) -> None:
    """eval_results.pytorch as the community benchmark saves it (torch.save of BoxLists)."""
    import torch

    with community_boxlist() as BoxList:
        gt_lists, pred_lists = [], []
        for gt, pred in zip(gts, preds):
            g = BoxList(torch.from_numpy(gt["boxes"]), gt["size"])
            g.add_field("labels", torch.from_numpy(gt["labels"]))
            g.add_field("relation_tuple", torch.from_numpy(gt["relations"]))
            p = BoxList(torch.from_numpy(pred["boxes"]), gt["size"])
            for name, key in (("pred_labels", "labels"), ("pred_scores", "scores"), ("rel_pair_idxs", "pairs"),
                              ("pred_rel_scores", "rel_scores")):
                p.add_field(name, torch.from_numpy(np.ascontiguousarray(pred[key])))
            p.add_field("pred_rel_labels", torch.from_numpy(pred["rel_scores"][:, 1:].argmax(1) + 1))
            gt_lists.append(g)
            pred_lists.append(p)
        payload = {"groundtruths": gt_lists, "predictions": pred_lists} if with_gt else {"predictions": pred_lists}
        torch.save(payload, path)


def _small_image(rng, extent: float, sides: tuple[float, float], num_labels: int, share: float, predicate_end: int):
    """2-6 boxes, their labels, and relations on about `share` of the ordered pairs (at least one)."""
    n = int(rng.integers(2, 7))
    xy = rng.uniform(0, extent, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(*sides, (n, 2))], 1).round(1)
    labels = rng.integers(1, num_labels + 1, n)
    s, o = np.nonzero(~np.eye(n, dtype=bool))
    pick = rng.random(len(s)) < share
    pick[rng.integers(0, len(s))] = True
    return n, boxes, labels, np.column_stack([s[pick], o[pick], rng.integers(1, predicate_end, int(pick.sum()))])


def sgbench_split(seed: int = 0, images: int = 30, num_predicates: int = 4, num_labels: int = 3) -> tuple[list[dict], dict]:
    """Ground truth per image (1-based labels / predicates) and an SGBench prediction JSON for it (0-based ids).

    Predicted boxes jitter the GT boxes (some far off, some relabelled, some duplicated); the ranked triplets
    mix true relations, reversed pairs and random ones, with repeats; ng_triplets list several predicates
    per pair."""
    rng = np.random.default_rng(seed)
    gts, pred_images = [], []
    for image_id in range(100, 100 + images):
        n, boxes, labels, relations = _small_image(rng, 200, (20, 80), num_labels, 0.35, num_predicates + 1)
        gts.append({"id": image_id, "boxes": boxes, "labels": labels, "relations": relations})
        m = n + 1
        keep = np.concatenate([np.arange(n), [int(rng.integers(0, n))]])
        p_boxes = boxes[keep] + rng.normal(0, 3, (m, 4)) + (rng.random((m, 1)) < 0.15) * 60
        p_labels = np.where(rng.random(m) < 0.9, labels[keep], rng.integers(1, num_labels + 1, m))
        ps, po = np.nonzero(~np.eye(m, dtype=bool))
        rows = rng.permutation(len(ps))[: int(rng.integers(3, len(ps) + 1))]
        triplets = np.column_stack([ps[rows], po[rows], rng.integers(0, num_predicates, len(rows))])
        triplets = np.concatenate([triplets, triplets[:2]])  # repeats: SGBench drops them
        ng = np.column_stack([np.repeat(ps[rows], 2), np.repeat(po[rows], 2), rng.integers(0, num_predicates, 2 * len(rows))])
        pred_images.append({"id": image_id, "bboxes": p_boxes.round(2).tolist(), "categories": (p_labels - 1).tolist(),
                            "triplets": triplets.tolist(), "ng_triplets": ng.tolist()})
    return gts, {"version": 1, "images": pred_images}


def vrd_split(seed: int = 0, images: int = 25, num_predicates: int = 16, num_labels: int = 4) -> tuple[list[dict], list[dict]]:
    """A small VRD-like SGDet split: GT with exact duplicate and multi-predicate relations; detections
    (jittered GT boxes, some relabelled, extra ones) scored on every ordered pair with full distributions."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for _ in range(images):
        n, boxes, labels, relations = _small_image(rng, 300, (15, 150), num_labels, 0.3, num_predicates)
        extra = relations[rng.random(len(relations)) < 0.3]
        relations = np.concatenate([relations, extra, np.column_stack([extra[:, :2], rng.integers(1, num_predicates, len(extra))])])
        gts.append({"boxes": boxes, "labels": labels, "relations": relations})
        m = n + int(rng.integers(0, 3))
        keep = np.concatenate([np.arange(n), rng.integers(0, n, m - n)])
        wh = np.concatenate([boxes[keep, 2:] - boxes[keep, :2]] * 2, 1)
        p_boxes = (boxes[keep] + rng.normal(0, 0.12, (m, 4)) * wh).round(2)
        p_boxes = np.concatenate([np.minimum(p_boxes[:, :2], p_boxes[:, 2:]), np.maximum(p_boxes[:, :2], p_boxes[:, 2:])], 1)
        p_labels = np.where(rng.random(m) < 0.85, labels[keep], rng.integers(1, num_labels + 1, m))
        ps, po = np.nonzero(~np.eye(m, dtype=bool))
        logits = rng.normal(0, 1.2, (len(ps), num_predicates))
        rel_scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        preds.append({"boxes": p_boxes, "labels": p_labels, "scores": rng.uniform(0.3, 1.0, m).round(4),
                      "pairs": np.column_stack([ps, po]), "rel_scores": rel_scores})
    return gts, preds
