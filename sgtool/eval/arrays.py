"""The Python API on plain numpy arrays: one dict-free dataclass per image, then `evaluate_arrays`.

    from sgtool.eval import ImageGraph, ImagePrediction, evaluate_arrays
    gt = [ImageGraph(boxes=(n, 4) xyxy pixels, labels=(n,) 1-based, relations=(r, 3) [subject, object, predicate])]
    pred = [ImagePrediction(boxes=(m, 4), labels=(m,), scores=(m,), pairs=(c, 2) box indices of the image,
                            rel_scores=(c, P) predicate distribution, column 0 = no relation)]
    result = evaluate_arrays(gt, pred, task="sgdet", num_predicates=P)   # result.metrics["R@50"], ...

Indices are per image (0-based box rows of that image); predicates are 1-based (0 = background).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sgtool.data.graphs import SPLIT_CODES, RelationSet, SceneGraphs, offsets_from_counts
from sgtool.data.predictions import Predictions
from sgtool.eval.metrics import EvalResult, check, evaluate


@dataclass
class ImageGraph:
    """Ground truth of one image."""

    boxes: np.ndarray  # (n, 4) xyxy pixels
    labels: np.ndarray  # (n,) 1-based object labels
    relations: np.ndarray  # (r, 3) [subject row, object row, predicate (1-based)]
    image_id: int | None = None
    size: tuple[int, int] = (0, 0)  # (width, height) where known


@dataclass
class ImagePrediction:
    """One image's predictions: boxes with labels and scores, candidate pairs with predicate distributions."""

    boxes: np.ndarray  # (m, 4) xyxy pixels
    labels: np.ndarray  # (m,) 1-based
    scores: np.ndarray  # (m,) object scores
    pairs: np.ndarray  # (c, 2) [subject row, object row] within the image
    rel_scores: np.ndarray  # (c, P) predicate distribution, column 0 = no relation
    meta: dict = field(default_factory=dict)


def _rows(parts: list[np.ndarray], shape: tuple[int, ...], dtype) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype).reshape((-1, *shape)) for p in parts]) if parts else \
        np.zeros((0, *shape), dtype)


def scene_graphs_from_arrays(images: Sequence[ImageGraph], split: str = "test") -> SceneGraphs:
    """One SceneGraphs of the images (ids 0.. where an image has none)."""
    counts = np.array([len(im.labels) for im in images], np.int64)
    box_offsets = offsets_from_counts(counts)
    relations = [np.asarray(im.relations, np.int64).reshape(-1, 3) for im in images]
    for i, (rels, n) in enumerate(zip(relations, counts)):
        check(not len(rels) or (rels[:, :2].min() >= 0 and rels[:, :2].max() < n),
              f"A relation of image {i} points at a box the image does not have.",
              "Relations index the image's own boxes, 0-based.")
    pairs = _rows([r[:, :2] + box_offsets[i] for i, r in enumerate(relations)], (2,), np.int64)
    rels = RelationSet(pairs, _rows([r[:, 2] for r in relations], (), np.int64),
                       offsets_from_counts(np.array([len(r) for r in relations], np.int64)))
    ids = np.array([i if im.image_id is None else im.image_id for i, im in enumerate(images)], np.int64)
    sizes = np.array([im.size for im in images], np.int64).reshape(-1, 2)
    return SceneGraphs(ids, sizes[:, 0], sizes[:, 1], np.full(len(images), SPLIT_CODES[split], np.int8), box_offsets,
                       _rows([im.boxes for im in images], (4,), np.float32), _rows([im.labels for im in images], (), np.int64),
                       rels)


def predictions_from_arrays(images: Sequence[ImagePrediction], image_ids: np.ndarray,
                            num_predicates: int, meta: dict | None = None) -> Predictions:
    """One Predictions of the images (pairs become global box rows)."""
    box_offsets = offsets_from_counts(np.array([len(im.labels) for im in images], np.int64))
    pair_counts = np.array([len(np.asarray(im.pairs).reshape(-1, 2)) for im in images], np.int64)
    pairs = _rows([np.asarray(im.pairs, np.int64).reshape(-1, 2) + box_offsets[i] for i, im in enumerate(images)],
                  (2,), np.int64)
    return Predictions(np.asarray(image_ids, np.int64), box_offsets, _rows([im.boxes for im in images], (4,), np.float32),
                       _rows([im.labels for im in images], (), np.int64), _rows([im.scores for im in images], (), np.float32),
                       offsets_from_counts(pair_counts), pairs,
                       _rows([im.rel_scores for im in images], (num_predicates,), np.float32), dict(meta or {}))


def evaluate_arrays(gt: Sequence[ImageGraph], predictions: Sequence[ImagePrediction], *, task: str,
                    num_predicates: int, **options) -> EvalResult:
    """`evaluate` on per-image numpy arrays (images matched by order); options as `evaluate`'s."""
    check(len(gt) == len(predictions), f"{len(predictions)} predicted images for {len(gt)} ground-truth images.",
          "Give one prediction per ground-truth image, in the same order.")
    graphs = scene_graphs_from_arrays(gt)
    return evaluate(graphs, predictions_from_arrays(predictions, graphs.image_ids, num_predicates), task=task,
                    num_predicates=num_predicates, **options)
