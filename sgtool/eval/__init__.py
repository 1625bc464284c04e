"""Triplet matching and every metric, implemented once (see docs/evaluation.md).

The Python API: `evaluate(SceneGraphs, Predictions, ...)` on a whole split, `SceneGraphEvaluator`
(reset / process / evaluate) chunk by chunk, and `evaluate_arrays` on plain per-image numpy arrays
(`ImageGraph`, `ImagePrediction`). Sibling evaluators on the same protocol: `PointGraphEvaluator`,
`ConfusionEvaluator`, `CocoEvaluator` (siblings.py). Every metric is listed in `METRIC_FAMILIES` with its convention and
in `FAMILY_COLUMNS` with the hit-table column it reads.
"""
from __future__ import annotations

from sgtool.eval.arrays import (
    ImageGraph, ImagePrediction, evaluate_arrays, predictions_from_arrays, scene_graphs_from_arrays,
)
from sgtool.eval.evaluator import Evaluator, SceneGraphEvaluator
from sgtool.eval.matching import NO_HIT
from sgtool.eval.metrics import (
    FAMILY_COLUMNS, METRIC_FAMILIES, TASKS, EvalResult, Hits, IoURule, evaluate, metric_family, parse_metric,
)
from sgtool.eval.siblings import CocoEvaluator, ConfusionEvaluator, PointGraphEvaluator

__all__ = ["FAMILY_COLUMNS", "METRIC_FAMILIES", "NO_HIT", "TASKS", "CocoEvaluator", "ConfusionEvaluator",
           "EvalResult", "Evaluator", "Hits", "ImageGraph",
           "ImagePrediction", "IoURule", "PointGraphEvaluator", "SceneGraphEvaluator", "evaluate", "evaluate_arrays",
           "metric_family", "parse_metric", "predictions_from_arrays", "scene_graphs_from_arrays"]
