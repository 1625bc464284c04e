"""Streaming evaluation: `evaluate`'s metrics with the predictions given chunk by chunk.

The process loop of `SceneGraphEvaluator` (evaluator.py): only one chunk of predictions is in memory
at a time; the ground truth of the split is held whole (it is small).
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from sgtool.data.graphs import SceneGraphs
from sgtool.data.predictions import Predictions
from sgtool.eval.evaluator import SceneGraphEvaluator
from sgtool.eval.metrics import EvalResult, IoURule


def evaluate_chunks(gt: SceneGraphs, chunks: Iterable[Predictions], *, task: str, num_predicates: int,
                    ks: tuple[int, ...] = (20, 50, 100), predicate_groups: np.ndarray | None = None,
                    seen_triplets: np.ndarray | None = None, iou_threshold: float = 0.5, legacy_iou: bool = True,
                    top_k_per_pair: tuple = (1, 10, None), empty_images: str = "zero") -> EvalResult:
    """`evaluate(gt, all chunks joined, ...)`: chunks hold consecutive images of gt, in order."""
    evaluator = SceneGraphEvaluator(gt, task=task, num_predicates=num_predicates, ks=ks,
                                    predicate_groups=predicate_groups, seen_triplets=seen_triplets,
                                    iou=IoURule(iou_threshold, legacy_iou), top_k_per_pair=top_k_per_pair,
                                    empty_images=empty_images)
    for pred in chunks:
        evaluator.process(None, pred)
    return evaluator.evaluate()
