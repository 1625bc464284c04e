"""Images and ground-truth graphs of a prepared shapes dataset, as the auto-encoder uses them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from sgtool.data.graphs import SceneGraphs
from sgtool.data.prepared import PreparedDataset
from sgtool.data.shapes import node_points
from sgtool.errors import SgtoolError
from sgtool.flags import flag, setting


@dataclass
class LineDrawings:
    """One split: images (I, R, R) uint8 at the working resolution R, nodes and edges per image."""

    graphs: SceneGraphs
    images: np.ndarray
    points: list[np.ndarray]  # per image (n, 2) normalised to [-1, 1] (align_corners=False)
    edges: list[np.ndarray]  # per image (e, 2) image-local node pairs
    canvas: int  # original image side, pixels

    def __len__(self) -> int:
        return len(self.images)


def check_shapes_dataset(prepared: PreparedDataset) -> int:
    """The canvas side of a shapes dataset; anything else is refused in one sentence."""
    if prepared.manifest.get("recipe") != "shapes" or not prepared.has_images:
        raise SgtoolError(f"The ae head needs a shapes dataset, and '{prepared.name}' was prepared with the "
                          f"'{prepared.manifest.get('recipe')}' recipe.",
                          f"Run `sgtool prepare shapes` and pass {flag('dataset')} shapes.")
    return int(prepared.manifest.get("image_size", 128))


def to_normalised(points: np.ndarray, canvas: int) -> np.ndarray:
    """Pixel points (pixel centres at integers, as PIL draws) -> [-1, 1] coordinates."""
    return ((2 * points + 1) / canvas - 1).astype(np.float32)


def to_pixels(coords: np.ndarray, canvas: int) -> np.ndarray:
    return ((coords + 1) * canvas - 1) / 2


def load_image(path: str, resolution: int) -> np.ndarray:
    with Image.open(path) as image:
        a = np.asarray(image.convert("L"), dtype=np.float32)
    f = a.shape[0] // resolution
    if f > 1:
        a = a.reshape(resolution, f, resolution, f).mean(axis=(1, 3))
    return np.round(a).astype(np.uint8)


def load_split(prepared: PreparedDataset, split: str, resolution: int, limit: int = 0) -> LineDrawings:
    canvas = check_shapes_dataset(prepared)
    if canvas % resolution:
        raise SgtoolError(f"The working resolution {resolution} does not divide the {canvas}-pixel canvas.",
                          f"Use {setting('resolution', '64')} or 128.")
    graphs = prepared.graphs.split_subset(split)
    if limit:
        graphs = graphs.select(np.arange(min(limit, graphs.num_images)))
    images = np.stack([load_image(str(prepared.path / f), resolution) for f in graphs.files]) \
        if graphs.num_images else np.zeros((0, resolution, resolution), np.uint8)
    xy = to_normalised(node_points(graphs.boxes), canvas)
    bo, ro = graphs.box_offsets, graphs.relations.offsets
    points = [xy[bo[i]:bo[i + 1]] for i in range(graphs.num_images)]
    edges = [graphs.relations.pairs[ro[i]:ro[i + 1]] - bo[i] for i in range(graphs.num_images)]
    return LineDrawings(graphs, images, points, edges, canvas)
