"""Build SceneGraphs / Predictions from small per-image Python lists (for the eval tests)."""
from __future__ import annotations

import numpy as np

from sgtool.data.graphs import RelationSet, SceneGraphs, offsets_from_counts
from sgtool.data.predictions import Predictions


def relation_set(images: list[dict], key: str, box_offsets: np.ndarray) -> RelationSet:
    rels = [np.asarray(im.get(key, []), dtype=np.int64).reshape(-1, 3) for im in images]
    pairs = np.concatenate([r[:, :2] + box_offsets[i] for i, r in enumerate(rels)]) if rels else np.zeros((0, 2))
    preds = np.concatenate([r[:, 2] for r in rels]) if rels else np.zeros(0)
    return RelationSet(pairs.astype(np.int64).reshape(-1, 2), preds.astype(np.int64),
                       offsets_from_counts(np.array([len(r) for r in rels])))


def make_gt(images: list[dict], with_complete: bool = False) -> SceneGraphs:
    """images: [{"boxes": [[x1,y1,x2,y2],...], "labels": [...], "rels": [[s, o, p], ...], "complete": [...]}]."""
    counts = np.array([len(im["labels"]) for im in images])
    box_offsets = offsets_from_counts(counts)
    boxes = np.concatenate([np.asarray(im["boxes"], np.float32).reshape(-1, 4) for im in images])
    labels = np.concatenate([np.asarray(im["labels"], np.int64) for im in images])
    n = len(images)
    return SceneGraphs(np.arange(n), np.full(n, 100), np.full(n, 100), np.full(n, 2, np.int8), box_offsets,
                       boxes, labels, relation_set(images, "rels", box_offsets),
                       relation_set(images, "complete", box_offsets) if with_complete else None)


def make_pred(images: list[dict], num_predicates: int) -> Predictions:
    """images: [{"boxes", "labels", "scores", "pairs": [[s, o], ...], "rel_scores": (M, P)}]."""
    counts = np.array([len(im["labels"]) for im in images])
    box_offsets = offsets_from_counts(counts)
    boxes = np.concatenate([np.asarray(im["boxes"], np.float32).reshape(-1, 4) for im in images])
    labels = np.concatenate([np.asarray(im["labels"], np.int64) for im in images])
    scores = np.concatenate([np.asarray(im.get("scores", np.ones(len(im["labels"]))), np.float32) for im in images])
    pairs = [np.asarray(im["pairs"], np.int64).reshape(-1, 2) for im in images]
    rel = [np.asarray(im["rel_scores"], np.float32).reshape(-1, num_predicates) for im in images]
    return Predictions(np.arange(len(images)), box_offsets, boxes, labels, scores,
                       offsets_from_counts(np.array([len(p) for p in pairs])),
                       np.concatenate([p + box_offsets[i] for i, p in enumerate(pairs)]), np.concatenate(rel))
