"""Visual feature sources: pooled ROI vectors of box pairs for the relation heads (reldn, tensor, nodis, iwsl).

    source = DetectorVisualFeatures(detector, {image_id: image or loader})   # live: frozen backbone + ROIAlign
    feats = source(image_ids, box_offsets, boxes, pairs)                      # {"subject", "object", "union"}: (M, dim)
    source.with_images({0: pixels})                                          # same backbone, the caller's images

Images are given directly: a mapping from image id to a CHW tensor or to a zero-argument loader
returning one (e.g. a dataset's `SplitImages`), so the same source serves a prepared dataset
(ids of its splits) and `sgtool predict` (the user's pictures). Every ROI map is ROIAligned at
7 x 7 on the finest backbone map and average-pooled to grid x grid cells: dim = channels * grid**2.

A `FeatureTable` holds precomputed vectors (the `--cache-features` h5 files, `features/cache.py`):
the per-box vectors of a split's boxes and the union vectors of every ordered pair. A source with
tables serves the pairs whose image and boxes a table holds from it and runs the backbone for the
rest (e.g. detected boxes in SGDet), so a cache never changes which boxes are described.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Union

import numpy as np
import torch
from torch import Tensor

from sgtool.data.graphs import owner_of_rows
from sgtool.errors import SgtoolError

if TYPE_CHECKING:
    from sgtool.detect.api import Detector

KEYS = ("subject", "object", "union")
ImageLike = Union[Tensor, Callable[[], Tensor]]


class VisualSource(Protocol):
    """ROI features of box pairs: `source(image_ids, box_offsets, boxes, pairs)` -> subject / object / union.

    image_ids (I,), box_offsets (I + 1,), boxes (N, 4) xyxy pixels, pairs (M, 2) global box rows.
    Returns three (M, dim) float tensors (keys "subject", "object", "union"), in the order of pairs.
    """

    dim: int

    def __call__(self, image_ids: np.ndarray, box_offsets: np.ndarray, boxes: np.ndarray,
                 pairs: np.ndarray) -> dict[str, Tensor]: ...


@dataclass
class FeatureTable:
    """Precomputed vectors of some images: per box (N, dim) and per ordered pair (P, dim), rows grouped by image."""

    image_ids: np.ndarray  # (I,)
    box_offsets: np.ndarray  # (I + 1,)
    boxes: np.ndarray  # (N, 4)
    box_vectors: np.ndarray  # (N, dim) float32
    pairs: np.ndarray  # (P, 2) global box rows of this table
    union_vectors: np.ndarray  # (P, dim) float32

    def __post_init__(self) -> None:
        n = max(len(self.boxes), 1)
        keys = self.pairs[:, 0].astype(np.int64) * n + self.pairs[:, 1]
        self._order = np.argsort(keys, kind="stable")
        self._keys = keys[self._order]
        self._image_order = np.argsort(self.image_ids, kind="stable")

    @property
    def dim(self) -> int:
        return int(self.box_vectors.shape[1])

    def _table_images(self, image_ids: np.ndarray) -> np.ndarray:
        """Row of each id in this table, -1 when absent."""
        if not len(self.image_ids):
            return np.full(len(image_ids), -1, dtype=np.int64)
        sorted_ids = self.image_ids[self._image_order]
        pos = np.clip(np.searchsorted(sorted_ids, image_ids), 0, len(sorted_ids) - 1)
        return np.where(sorted_ids[pos] == image_ids, self._image_order[pos], -1)

    def _box_rows(self, image_ids: np.ndarray, box_offsets: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N,) this table's row of each query box, -1 for boxes of images the table does not hold as given."""
        table_image = self._table_images(np.asarray(image_ids))
        if not len(self.image_ids) or not len(boxes):
            return np.full(len(boxes), -1, dtype=np.int64)
        counts = np.diff(box_offsets)
        held = (table_image >= 0) & (counts == np.diff(self.box_offsets)[np.maximum(table_image, 0)])
        owner = owner_of_rows(box_offsets)
        rows = np.where(held[owner], self.box_offsets[np.maximum(table_image, 0)][owner] + np.arange(len(boxes))
                        - box_offsets[:-1][owner], -1)
        same = np.zeros(len(boxes), bool)
        ok = rows >= 0
        same[ok] = np.all(np.abs(self.boxes[rows[ok]] - boxes[ok]) <= 1e-3, axis=1)
        image_ok = np.bincount(owner, weights=(~same).astype(np.float64), minlength=len(counts)) == 0
        return np.where(image_ok[owner], rows, -1)

    def lookup(self, image_ids: np.ndarray, box_offsets: np.ndarray, boxes: np.ndarray,
               pairs: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(M,) bool: which pairs this table serves, and their vectors (rows of the served pairs only)."""
        rows = self._box_rows(image_ids, box_offsets, np.asarray(boxes, np.float32))
        s, o = rows[pairs[:, 0]], rows[pairs[:, 1]]
        key = s * max(len(self.boxes), 1) + o
        pos = np.zeros(len(pairs), dtype=np.int64)
        served = np.zeros(len(pairs), bool)
        if len(self._keys):
            pos = np.clip(np.searchsorted(self._keys, key), 0, len(self._keys) - 1)
            served = (s >= 0) & (o >= 0) & (self._keys[pos] == key)
        union_rows = self._order[pos[served]]
        return served, {"subject": self.box_vectors[s[served]], "object": self.box_vectors[o[served]],
                        "union": self.union_vectors[union_rows]}


class DetectorVisualFeatures:
    """A VisualSource on a trained detector's frozen backbone; images by id (tensors or loaders), optional tables."""

    def __init__(self, detector: Detector, images: Mapping[int, ImageLike], grid: int = 2,
                 tables: Sequence[FeatureTable] = (), images_per_step: int | None = None) -> None:
        self.detector, self.images, self.grid, self.tables = detector, images, grid, list(tables)
        self.images_per_step = images_per_step or int(getattr(detector, "batch_size", 16))
        self.dim = int(detector.out_channels) * grid * grid

    def with_images(self, images: Mapping[int, ImageLike]) -> DetectorVisualFeatures:
        """The same backbone and grid on other images (e.g. a user's pictures); tables are dropped."""
        return DetectorVisualFeatures(self.detector, images, self.grid, (), self.images_per_step)

    def with_tables(self, tables: Sequence[FeatureTable]) -> DetectorVisualFeatures:
        return DetectorVisualFeatures(self.detector, self.images, self.grid, tables, self.images_per_step)

    def image(self, image_id: int) -> Tensor:
        """The CHW pixels of an image by id (the trained predicate branch reads them too)."""
        return self._image(image_id)

    def _image(self, image_id: int) -> Tensor:
        if image_id not in self.images:
            raise SgtoolError(f"The visual feature source has no image with id {image_id}.",
                              "Give the source the images the objects were found on.")
        image = self.images[image_id]
        return image if isinstance(image, Tensor) else image()

    def __call__(self, image_ids: np.ndarray, box_offsets: np.ndarray, boxes: np.ndarray,
                 pairs: np.ndarray) -> dict[str, Tensor]:
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        out = {k: np.zeros((len(pairs), self.dim), np.float32) for k in KEYS}
        todo = np.ones(len(pairs), bool)
        for table in self.tables:
            served, vectors = table.lookup(image_ids, box_offsets, boxes, pairs[todo])
            rows = np.flatnonzero(todo)[served]
            for k in KEYS:
                out[k][rows] = vectors[k]
            todo[rows] = False
        if todo.any():
            live = self.compute(image_ids, box_offsets, boxes, pairs[todo])
            for k in KEYS:
                out[k][todo] = live[k]
        return {k: torch.from_numpy(v) for k, v in out.items()}

    def compute(self, image_ids: np.ndarray, box_offsets: np.ndarray, boxes: np.ndarray,
                pairs: np.ndarray) -> dict[str, np.ndarray]:
        """Run the backbone over the pairs' images, images_per_step images at a time; (M, dim) per key."""
        pair_image = owner_of_rows(box_offsets)[pairs[:, 0]]
        order = np.argsort(pair_image, kind="stable")  # pairs grouped by image, in their order within it
        used, first, counts = np.unique(pair_image[order], return_index=True, return_counts=True)
        out = {k: np.zeros((len(pairs), self.dim), np.float32) for k in KEYS}
        for start in range(0, len(used), self.images_per_step):
            step, step_counts = used[start:start + self.images_per_step], counts[start:start + self.images_per_step]
            rows = order[first[start]:first[start] + step_counts.sum()]
            local = pairs[rows] - box_offsets[pair_image[rows]][:, None]
            box_vectors, out["union"][rows] = self.step_vectors(image_ids, box_offsets, boxes, step,
                                                                np.split(local, np.cumsum(step_counts)[:-1]))
            box_first = np.concatenate([[0], np.cumsum(np.diff(box_offsets)[step])])[np.repeat(np.arange(len(step)), step_counts)]
            out["subject"][rows] = box_vectors[box_first + local[:, 0]]
            out["object"][rows] = box_vectors[box_first + local[:, 1]]
        return out

    def step_vectors(self, image_ids: np.ndarray, box_offsets: np.ndarray, boxes: np.ndarray, step: np.ndarray,
                     local_pairs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Pooled vectors of every box of the step's images (in order) and of their pairs' unions (in order)."""
        from sgtool.features.visual import pair_visual_features

        feats = pair_visual_features(self.detector, [self._image(int(image_ids[i])) for i in step],
                                     [torch.from_numpy(np.asarray(boxes[box_offsets[i]:box_offsets[i + 1]])) for i in step],
                                     [torch.from_numpy(p) for p in local_pairs])
        return self.pool(feats["boxes"]), self.pool(feats["union"])

    def pool(self, maps: Tensor) -> np.ndarray:
        return torch.nn.functional.adaptive_avg_pool2d(maps.float(), self.grid).flatten(1).cpu().numpy()


def loaders_by_id(image_ids: np.ndarray, images: Any) -> dict[int, Callable[[], Tensor]]:
    """{image id: loader} over an indexable of images (e.g. `SplitImages`), position i for image_ids[i]."""
    return {int(image_id): (lambda i=i: images[i]) for i, image_id in enumerate(image_ids)}
