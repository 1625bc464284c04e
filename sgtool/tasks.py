"""The three standard scene-graph tasks, named once for heads, stages and metrics.

predcls: ground-truth boxes and labels are given, the predicates are predicted;
sgcls: ground-truth boxes are given, labels and predicates are predicted;
sgdet: everything is predicted from the image.
"""
from __future__ import annotations

TASKS = ("predcls", "sgcls", "sgdet")
