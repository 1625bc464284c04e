"""The pieces of one synthetic scene that the scene generators share (synth.py, synth_confusion.py):
the Scene record, an instance's box from its drawing, and the overlap test used when placing."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sgtool.geometry import overlap_sides

@dataclass
class Scene:
    labels: np.ndarray  # (n,) 0-based class
    centres: np.ndarray  # (n, 2) float
    radii: np.ndarray  # (n,) float
    colours: np.ndarray  # (n,) colour index
    boxes: np.ndarray  # (n, 4) int xyxy (x2, y2 exclusive)
    links: list[tuple[int, int, str]]  # (subject, object, predicate name) drawn between instances


def shape_extent(drawing: str, r: float) -> tuple[float, float]:
    """Half width and half height of a drawing of size r."""
    return {"ellipse": (r, 0.6 * r), "bar": (2.2 * r, 0.35 * r), "trapezoid": (r, 0.7 * r)}.get(drawing, (r, r))


def box_of(spec: Any, label: int, centre: np.ndarray, r: float) -> np.ndarray:
    """The box of an instance of `label` (drawn by the recipe's spec, a synth.SynthSpec) of size r at centre."""
    hw, hh = shape_extent(spec.drawings[label], r)
    x1, y1 = math.floor(centre[0] - hw), math.floor(centre[1] - hh)
    x2, y2 = math.ceil(centre[0] + hw), math.ceil(centre[1] + hh)
    return np.array([x1, y1, x2, y2], dtype=np.int64)


def overlaps_any(box: np.ndarray, boxes: list[np.ndarray], margin: float) -> bool:
    if not boxes:
        return False
    iw, ih = overlap_sides(np.array(boxes), box)
    return bool(np.any((iw > -margin) & (ih > -margin)))
