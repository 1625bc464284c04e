"""The pieces of one synthetic scene that the scene generators share (synth.py, synth_confusion.py,
synth_multimodal.py): the Scene record, an instance's box from its drawing, the overlap test used when
placing, and the drawing of shapes and links."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import ImageDraw

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


# ---------------------------------------------------------------- drawing

def _polygon(drawing: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    def regular(k: int, radius: float, phase: float) -> list[tuple[float, float]]:
        return [(cx + radius * math.cos(phase + 2 * math.pi * i / k), cy + radius * math.sin(phase + 2 * math.pi * i / k))
                for i in range(k)]

    if drawing == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if drawing == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if drawing == "hexagon":
        return regular(6, r, 0)
    if drawing == "pentagon":
        return regular(5, r, -math.pi / 2)
    if drawing == "trapezoid":
        h = 0.7 * r
        return [(cx - 0.55 * r, cy - h), (cx + 0.55 * r, cy - h), (cx + r, cy + h), (cx - r, cy + h)]
    if drawing == "star":
        outer, inner = regular(5, r, -math.pi / 2), regular(5, 0.45 * r, -math.pi / 2 + math.pi / 5)
        return [pt for pair in zip(outer, inner) for pt in pair]
    if drawing == "cross":
        t = 0.33 * r
        return [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t), (cx + r, cy + t),
                (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t),
                (cx - r, cy - t), (cx - t, cy - t)]
    raise ValueError(drawing)


def draw_shape(draw: ImageDraw.ImageDraw, drawing: str, box: np.ndarray, centre: np.ndarray, r: float, colour: tuple) -> None:
    """One filled (or outlined: ring, frame) shape of an instance."""
    x1, y1, x2, y2 = (int(v) for v in box)
    outline = max(2, round(r / 6))
    if drawing == "circle":
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=colour)
    elif drawing == "ellipse":
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=colour)
    elif drawing in ("square", "bar"):
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=colour)
    elif drawing == "ring":
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], outline=colour, width=outline)
    elif drawing == "frame":
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=colour, width=outline)
    elif drawing == "heart":
        cx, cy = centre
        draw.ellipse([cx - r, cy - r, cx, cy], fill=colour)
        draw.ellipse([cx, cy - r, cx + r, cy], fill=colour)
        draw.polygon([(cx - r, cy - r / 2), (cx + r, cy - r / 2), (cx, cy + r)], fill=colour)
    else:
        draw.polygon(_polygon(drawing, centre[0], centre[1], r), fill=colour)


def _edge_point(centre: np.ndarray, r: float, towards: np.ndarray) -> np.ndarray:
    d = towards - centre
    return centre + d / max(np.linalg.norm(d), 1e-6) * r


def draw_link(draw: ImageDraw.ImageDraw, spec: Any, scene: Scene, s: int, o: int, kind: str) -> None:
    """The link between instances s and o: a solid line (holds), an arrow (points at), a dashed line (plays with)."""
    a = _edge_point(scene.centres[s], scene.radii[s], scene.centres[o])
    b = _edge_point(scene.centres[o], scene.radii[o] + spec.px(1), scene.centres[s])
    width = max(1, round(spec.px(1.5)))
    if kind == "plays with":
        steps = max(2, int(np.linalg.norm(b - a) / spec.px(4)))
        points = [a + (b - a) * t for t in np.linspace(0, 1, steps + 1)]
        for p, q in zip(points[0::2], points[1::2]):
            draw.line([tuple(p), tuple(q)], fill=spec.link_colour, width=width)
        return
    draw.line([tuple(a), tuple(b)], fill=spec.link_colour, width=width)
    if kind == "points at":
        d = (b - a) / max(np.linalg.norm(b - a), 1e-6)
        normal = np.array([-d[1], d[0]])
        head = spec.px(5)
        draw.polygon([tuple(b), tuple(b - d * head + normal * head * 0.6), tuple(b - d * head - normal * head * 0.6)],
                     fill=spec.link_colour)
