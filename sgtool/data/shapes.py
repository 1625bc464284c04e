"""The Simple Shape dataset: one line drawing per image, its corners as nodes, its strokes as edges.

Each image holds a line, a triangle or a rectangle under a random affine transform (scale,
aspect, rotation, shear, translation), drawn in white strokes on a black canvas. The graph has
one node per end point / corner (stored as a small box around the point, class "node") and one
relation "connected" per drawn segment (subject < object). Deterministic: image i is drawn from
`np.random.default_rng([seed, i])`, so the same seed gives the same files whatever the workers.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sgtool.data.graphs import SPLIT_CODES, RelationSet, SceneGraphs, offsets_from_counts
from sgtool.config import check_options, option
from sgtool.data.formats import DatasetFormat, register_format
from sgtool.data.prepared import PreparedDataset, Staged, save_prepared
from sgtool.data.recipes import load_recipe
from sgtool.data.sgg_h5 import Vocabulary
from sgtool.data.workers import worker_pool
from sgtool.ui import SILENT, Reporter
from sgtool.workspace import Workspace

MAX_IMAGES = 1_000_000
RECIPE = "shapes"


@dataclass
class ShapeSpec:
    """The recipe as the renderer needs it (picklable for worker processes)."""

    names: list[str]
    weights: np.ndarray  # (S,) sampling probabilities
    corners: list[np.ndarray]  # per shape (n, 2) canonical corners
    canvas: int
    stroke: int
    node_box: float
    margin: float
    min_distance: float
    transform: dict


def load_spec(recipe: dict | None = None) -> ShapeSpec:
    recipe = recipe or load_recipe(RECIPE)
    shapes = recipe["shapes"]
    weights = np.array([float(v[0]) for v in shapes.values()])
    return ShapeSpec(list(shapes), weights / weights.sum(), [np.array(v[1], dtype=np.float64) for v in shapes.values()],
                     int(recipe["canvas"]), int(recipe["stroke"]), float(recipe["node_box"]),
                     float(recipe["margin"]), float(recipe["min_node_distance"]), dict(recipe["transform"]))


def shape_edges(n: int) -> np.ndarray:
    """(e, 2) node pairs (i < j) of the drawn segments: an open line for 2 nodes, a closed polygon otherwise."""
    if n == 2:
        return np.array([[0, 1]], dtype=np.int64)
    i = np.arange(n)
    return np.sort(np.stack([i, (i + 1) % n], axis=1), axis=1).astype(np.int64)


def _affine(spec: ShapeSpec, rng: np.random.Generator) -> np.ndarray:
    t = spec.transform
    s = rng.uniform(*t["scale"])
    aspect = rng.uniform(*t["aspect"])
    angle = math.radians(rng.uniform(*t["rotation"]))
    shear = rng.uniform(*t["shear"])
    scale = np.diag([s, s * aspect])
    shear_m = np.array([[1.0, shear], [0.0, 1.0]])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return rot @ shear_m @ scale


def _fits(points: np.ndarray, spec: ShapeSpec) -> bool:
    span = points.max(0) - points.min(0)
    if np.any(span > spec.canvas - 2 * spec.margin):
        return False
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    return bool(d[np.triu_indices(len(points), 1)].min() >= spec.min_distance)


def make_shape(spec: ShapeSpec, rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """(shape index, (n, 2) node points in pixels) of one image."""
    kind = int(rng.choice(len(spec.names), p=spec.weights))
    for _ in range(100):
        points = spec.corners[kind] @ _affine(spec, rng).T
        if _fits(points, spec):
            break
    else:  # pragma: no cover - the recipe's ranges make this practically impossible
        points = spec.corners[kind] * spec.canvas / 4
    lo = spec.margin - points.min(0)
    hi = spec.canvas - spec.margin - points.max(0)
    return kind, points + rng.uniform(lo, hi)


def render(spec: ShapeSpec, points: np.ndarray) -> Image.Image:
    image = Image.new("L", (spec.canvas, spec.canvas), 0)
    draw = ImageDraw.Draw(image)
    for i, j in shape_edges(len(points)):
        draw.line([tuple(points[i]), tuple(points[j])], fill=255, width=spec.stroke)
    return image


def _render_chunk(args: tuple) -> list[np.ndarray]:
    spec, seed, indices, images_dir = args
    out = []
    for index in indices:
        _, points = make_shape(spec, np.random.default_rng([seed, index]))
        render(spec, points).save(Path(images_dir) / f"{index + 1}.png", optimize=False, compress_level=1)
        out.append(points)
    return out


def render_dataset(spec: ShapeSpec, images: int, seed: int, images_dir: Path, workers: int,
                   reporter: Reporter = SILENT) -> list[np.ndarray]:
    """Draw every image into images_dir; the node points of each image, in order."""
    chunk = max(1, min(500, images // max(1, workers * 8) or 1))
    jobs = [(spec, seed, range(s, min(s + chunk, images)), str(images_dir)) for s in range(0, images, chunk)]
    points: list[np.ndarray] = []
    with reporter.progress() as bar:
        task = bar.add_task("draw", total=images, status="")
        pool = worker_pool(workers) if workers > 1 else None
        try:
            for part in (pool.map(_render_chunk, jobs) if pool else map(_render_chunk, jobs)):
                points.extend(part)
                bar.advance(task, len(part))
        finally:
            if pool:
                pool.shutdown(cancel_futures=True)
    return points


def assemble(points: list[np.ndarray], spec: ShapeSpec, split_fractions: dict) -> SceneGraphs:
    n = len(points)
    counts = np.array([len(p) for p in points], dtype=np.int64)
    box_offsets = offsets_from_counts(counts)
    xy = np.concatenate(points).astype(np.float32)
    half = spec.node_box / 2
    edges = [shape_edges(len(p)) + box_offsets[i] for i, p in enumerate(points)]
    split = np.full(n, SPLIT_CODES["test"], dtype=np.int8)
    n_train, n_val = int(round(n * split_fractions["train"])), int(round(n * split_fractions["val"]))
    split[:n_train] = SPLIT_CODES["train"]
    split[n_train:n_train + n_val] = SPLIT_CODES["val"]
    pairs = np.concatenate(edges)
    relations = RelationSet(pairs, np.ones(len(pairs), np.int64),
                            offsets_from_counts(np.array([len(e) for e in edges], dtype=np.int64)))
    return SceneGraphs(
        image_ids=np.arange(1, n + 1, dtype=np.int64), widths=np.full(n, spec.canvas, dtype=np.int64),
        heights=np.full(n, spec.canvas, dtype=np.int64), split=split, box_offsets=box_offsets,
        boxes=np.concatenate([xy - half, xy + half], axis=1), labels=np.ones(len(xy), np.int64),
        relations=relations, complete=None, files=[f"images/{i}.png" for i in range(1, n + 1)],
    )


def node_points(boxes: np.ndarray) -> np.ndarray:
    """(N, 2) node points from the stored (N, 4) node boxes (their centres)."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def prepare_shapes(ws: Workspace, images: int = 50_000, seed: int = 0, name: str = "shapes", workers: int = 0,
                   force: bool = False, reporter: Reporter = SILENT) -> PreparedDataset:
    """Draw the Simple Shape dataset into the workspace (stage behind `sgtool prepare shapes`)."""
    check_options(ShapesOptions(images=images, name=name, workers=workers, force=force))
    recipe = load_recipe(RECIPE)
    spec = load_spec(recipe)
    workers = workers or os.cpu_count() or 1

    def build(staging: Path) -> Staged:
        reporter.info(f"Drawing {images} line drawings ({spec.canvas}x{spec.canvas}) with seed {seed} ...")
        images_dir = staging / "images"
        images_dir.mkdir()
        points = render_dataset(spec, images, seed, images_dir, workers, reporter)
        graphs = assemble(points, spec, recipe["splits"])
        return Staged(graphs, Vocabulary(list(recipe["objects"]), list(recipe["predicates"])),
                      {"image_size": spec.canvas, "kind": "shapes"})

    return save_prepared(ws, name, RECIPE, {"images": images, "seed": seed}, build, None, force)


@dataclass
class ShapesOptions:
    """`sgtool prepare shapes`'s options."""

    images: int = option(50_000, "Number of line drawings to draw.", min=1, max=MAX_IMAGES)
    name: str = option("shapes", "Dataset name in the workspace.")
    workers: int = option(0, "Processes that draw images (0 = one per CPU core).", min=0)
    force: bool = option(False, "Replace a dataset of this name prepared with other parameters.")


def _prepare_shapes_options(ws: Workspace, options: ShapesOptions, seed: int, reporter: Reporter) -> PreparedDataset:
    return prepare_shapes(ws, images=options.images, seed=seed, name=options.name, workers=options.workers,
                          force=options.force, reporter=reporter)


register_format(DatasetFormat(
    "shapes", "The Simple Shape dataset (line, triangle or rectangle per image) for the ae auto-encoder.",
    ShapesOptions, _prepare_shapes_options))
