"""`sgtool draw`: a scene graph as a picture (PNG or SVG).

Left: the image with labelled boxes (when the graph names an existing image). Right: the graph,
nodes at box centres when there is an image, else on a circle; directed, labelled edges,
green for hits and red for misses when relations carry "hit".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

from sgtool import atomic  # noqa: E402
from sgtool.errors import SgtoolError  # noqa: E402
from sgtool.flags import flag
from sgtool.ui import SILENT, Reporter  # noqa: E402
from sgtool.viz.graph_json import image_path, read_graph, top_relations  # noqa: E402

FORMATS = ("png", "svg")
DEFAULT_TOP = 100  # relations drawn when --top is not given: more are unreadable, and slow to draw
MAX_TOP = 2000  # the most --top may ask for
MAX_OBJECTS = 300  # objects drawn at most (those in drawn relations first, then by score)
PANEL_INCHES = 6.0
DPI = 100
HIT, MISS, PLAIN = "#1a9850", "#d73027", "#4a4a8a"


@dataclass
class Drawing:
    path: Path
    format: str
    objects: int
    relations: int
    with_image: bool
    relations_left_out: int = 0
    objects_left_out: int = 0


def output_path(graph_path: Path, out: Path | None) -> tuple[Path, str]:
    # photo.graph.json -> photo.graph.png: never the name of the image the graph was made from
    path = Path(out) if out is not None else Path(graph_path).with_suffix(".png")
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise SgtoolError(f"Cannot draw into '{path.name}': the extension must be .png or .svg.",
                          f"Pass {flag('out')} FILE.png or {flag('out')} FILE.svg.")
    return path, fmt


def draw_graph(graph_path: Path, out: Path | None = None, top: int | None = None, reporter: Reporter = SILENT) -> Drawing:
    """Draw at most `top` relations (DEFAULT_TOP when None) and MAX_OBJECTS objects, best first; the
    picture says how many were left out, so any graph.json draws in bounded time and memory. A named image
    that is missing is left out with a warning."""
    if top is not None and not 1 <= top <= MAX_TOP:
        raise SgtoolError(f"{flag('top')} must be from 1 to {MAX_TOP}, not {top}.", "Pass the number of relations to draw.")
    graph = read_graph(graph_path)
    path, fmt = output_path(graph_path, out)
    every = graph.get("relations", [])
    relations = top_relations(every, top or DEFAULT_TOP)
    objects = _objects_to_show(graph["objects"], relations, top is not None or len(relations) < len(every))
    image = image_path(graph, graph_path)
    if image is None and graph.get("image"):
        reporter.warn(f"The graph's image {graph['image']} is not a file next to {graph_path} (or at that path), "
                      "so the graph is drawn without it.")
    left_out = (len(every) - len(relations), len(graph["objects"]) - len(objects))
    figure = _figure(graph, objects, relations, image, left_out)
    try:
        with atomic.atomic_path(path) as tmp:
            figure.savefig(tmp, format=fmt, dpi=DPI)
    finally:
        plt.close(figure)
    return Drawing(path, fmt, len(objects), len(relations), image is not None, *left_out)


def _objects_to_show(objects: list[dict], relations: list[dict], only_related: bool) -> list[dict]:
    """The objects of the drawn relations (all objects when not cut), at most MAX_OBJECTS, best scores first."""
    used = {r["subject"] for r in relations} | {r["object"] for r in relations}
    shown = [o for o in objects if o["id"] in used] if only_related and relations else objects
    if len(shown) <= MAX_OBJECTS:
        return shown
    order = sorted(range(len(shown)), key=lambda i: (shown[i]["id"] not in used, -(shown[i].get("score") or 0.0)))
    return [shown[i] for i in sorted(order[:MAX_OBJECTS])]


def _left_out_note(left_out: tuple[int, int]) -> str:
    parts = [f"{n:,} {what} left out" for n, what in zip(left_out, ("relations", "objects")) if n]
    return f" ({', '.join(parts)}; {flag('top')} N draws more)" if parts else ""


def _figure(graph: dict, objects: list[dict], relations: list[dict], image: Path | None,
            left_out: tuple[int, int] = (0, 0)) -> plt.Figure:
    panels = 2 if image is not None else 1
    figure, axes = plt.subplots(1, panels, figsize=(PANEL_INCHES * panels, PANEL_INCHES), dpi=DPI, squeeze=False)
    graph_axes = axes[0, -1]
    if image is not None:
        size = _draw_image(axes[0, 0], image, objects)
        positions = _centre_positions(objects, size)
    else:
        positions = _circle_positions(objects)
    _draw_edges(graph_axes, relations, positions)
    _draw_nodes(graph_axes, objects, positions)
    graph_axes.set_xlim(-0.15, 1.15)
    graph_axes.set_ylim(-0.15, 1.15)
    graph_axes.set_aspect("equal")
    graph_axes.axis("off")
    graph_axes.set_title(f"{len(objects)} objects, {len(relations)} relations{_left_out_note(left_out)}", fontsize=10)
    figure.subplots_adjust(left=0.02, right=0.98, top=0.93, bottom=0.02, wspace=0.05)
    return figure


def _draw_image(ax: Axes, image: Path, objects: list[dict]) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image) as handle:
            pixels = handle.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise SgtoolError(f"The graph's image {image} is too large to open ({str(exc).split(',')[0]}).",
                          "Scale the image down, or set the graph's 'image' to null to draw the graph alone.") from exc
    except (OSError, UnidentifiedImageError) as exc:
        raise SgtoolError(f"The image {image} cannot be read ({exc}).", "Fix the graph's 'image' path.") from exc
    ax.imshow(pixels)
    for obj in objects:
        x1, y1, x2, y2 = _within(obj["box"], pixels.size)
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="#ffcc00", linewidth=1.5))
        ax.text(x1, y1, f"{obj['id']}:{obj['label']}", fontsize=7, color="black", va="bottom",
                bbox={"facecolor": "#ffcc00", "alpha": 0.8, "pad": 1, "linewidth": 0})
    ax.axis("off")
    return pixels.size


def _within(box: list[float], size: tuple[int, int]) -> list[float]:
    """The box clipped to one image size around the image: absurd coordinates (1e308) still draw."""
    width, height = max(size[0], 1), max(size[1], 1)
    return [min(max(v, -limit), 2 * limit) for v, limit in zip(box, (width, height, width, height))]


def _centre_positions(objects: list[dict], size: tuple[int, int]) -> dict:
    """Box centres in [0, 1] (y up), nudged apart where centres coincide."""
    width, height = max(size[0], 1), max(size[1], 1)
    positions, seen = {}, {}
    for obj in objects:
        x1, y1, x2, y2 = _within(obj["box"], size)
        x, y = (x1 + x2) / 2 / width, 1 - (y1 + y2) / 2 / height
        key = (round(x, 2), round(y, 2))
        shift = 0.04 * seen.get(key, 0)
        seen[key] = seen.get(key, 0) + 1
        positions[obj["id"]] = (x + shift, y - shift)
    return _spread(positions)


def _spread(positions: dict) -> dict:
    """Stretch each axis to [0.05, 0.95] so clustered centres stay readable (order is kept)."""
    if len(positions) < 2:
        return positions
    xs, ys = zip(*positions.values())

    def scale(v: float, lo: float, hi: float) -> float:
        return 0.5 if hi - lo < 1e-9 else 0.05 + 0.9 * (v - lo) / (hi - lo)

    return {key: (scale(x, min(xs), max(xs)), scale(y, min(ys), max(ys))) for key, (x, y) in positions.items()}


def _circle_positions(objects: list[dict]) -> dict:
    n = max(len(objects), 1)
    return {obj["id"]: (0.5 + 0.45 * math.cos(2 * math.pi * k / n + math.pi / 2),
                        0.5 + 0.45 * math.sin(2 * math.pi * k / n + math.pi / 2)) for k, obj in enumerate(objects)}


def _draw_nodes(ax: Axes, objects: list[dict], positions: dict) -> None:
    for obj in objects:
        x, y = positions[obj["id"]]
        ax.text(x, y, f"{obj['id']}:{obj['label']}", ha="center", va="center", fontsize=8, zorder=3,
                bbox={"boxstyle": "round,pad=0.3", "facecolor": "#dde6f5", "edgecolor": "#4a4a8a"})


def _draw_edges(ax: Axes, relations: list[dict], positions: dict) -> None:
    drawn: dict = {}
    for rel in relations:
        if rel["subject"] not in positions or rel["object"] not in positions:
            continue
        start, end = positions[rel["subject"]], positions[rel["object"]]
        key = (rel["subject"], rel["object"])
        bend = 0.15 + 0.12 * drawn.get(key, 0)
        drawn[key] = drawn.get(key, 0) + 1
        colour = PLAIN if "hit" not in rel else (HIT if rel["hit"] else MISS)
        ax.add_patch(FancyArrowPatch(start, end, connectionstyle=f"arc3,rad={bend}", arrowstyle="-|>",
                                     mutation_scale=12, color=colour, linewidth=1.2, shrinkA=14, shrinkB=14, zorder=2))
        mid_x = (start[0] + end[0]) / 2 + bend * (end[1] - start[1]) / 2
        mid_y = (start[1] + end[1]) / 2 - bend * (end[0] - start[0]) / 2
        ax.text(mid_x, mid_y, rel["predicate"], fontsize=7, color=colour, ha="center", va="center", zorder=2,
                bbox={"facecolor": "white", "alpha": 0.7, "pad": 0.5, "linewidth": 0})


def show_drawing(drawing: Drawing, as_json: bool = False) -> None:
    from sgtool import ui

    payload = {"path": str(drawing.path), "format": drawing.format, "objects": drawing.objects,
               "relations": drawing.relations, "with_image": drawing.with_image,
               "relations_left_out": drawing.relations_left_out, "objects_left_out": drawing.objects_left_out}
    if as_json:
        ui.print_json(payload)
    else:
        note = _left_out_note((drawing.relations_left_out, drawing.objects_left_out))
        ui.out.print(f"Drew {drawing.objects} objects and {drawing.relations} relations into {drawing.path}{note}",
                     highlight=False)
