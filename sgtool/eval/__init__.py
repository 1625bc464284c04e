"""Triplet matching and every metric, implemented once (see EVALUATION.md)."""
from __future__ import annotations

from sgtool.eval.matching import NO_HIT
from sgtool.eval.metrics import METRIC_FAMILIES, TASKS, EvalResult, Hits, evaluate, metric_family, parse_metric

__all__ = ["METRIC_FAMILIES", "NO_HIT", "TASKS", "EvalResult", "Hits", "evaluate", "metric_family", "parse_metric"]
