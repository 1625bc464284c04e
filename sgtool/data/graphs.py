"""Ragged scene graphs of many images, held as flat numpy arrays.

Boxes are [x1, y1, x2, y2] in original-image pixels; labels and predicates are 1-based
(0 is background). Relations index box rows globally, as the SGG h5 file does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def offsets_from_counts(counts: np.ndarray) -> np.ndarray:
    """(n,) counts -> (n + 1,) offsets, so item i spans offsets[i]:offsets[i + 1]."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def owner_of_rows(offsets: np.ndarray) -> np.ndarray:
    """For each row of a ragged array, the index of the item (image) it belongs to."""
    counts = np.diff(offsets)
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)


def take_ragged(offsets: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the chosen items, in order, and the new offsets."""
    counts = np.diff(offsets)[items]
    new_offsets = offsets_from_counts(counts)
    starts = np.repeat(offsets[:-1][items] - new_offsets[:-1], counts)
    rows = np.arange(new_offsets[-1], dtype=np.int64) + starts
    return rows, new_offsets


@dataclass
class RelationSet:
    """Relations of many images: global box rows (M, 2), predicates (M,), per-image offsets."""

    pairs: np.ndarray
    predicates: np.ndarray
    offsets: np.ndarray

    @classmethod
    def empty(cls, num_images: int) -> "RelationSet":
        return cls(np.zeros((0, 2), np.int64), np.zeros(0, np.int64), np.zeros(num_images + 1, np.int64))

    def __len__(self) -> int:
        return int(len(self.predicates))

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass
class SceneGraphs:
    """Scene graphs of many images (one dataset, or one split of it)."""

    image_ids: np.ndarray  # (I,) int64
    widths: np.ndarray  # (I,) int64
    heights: np.ndarray  # (I,) int64
    split: np.ndarray  # (I,) int8, SPLIT_CODES
    box_offsets: np.ndarray  # (I + 1,) int64
    boxes: np.ndarray  # (N, 4) float32, xyxy pixels
    labels: np.ndarray  # (N,) int64, 1-based
    relations: RelationSet  # annotated relations
    complete: RelationSet | None = None  # every true relation, where the dataset knows it
    files: list[str | None] = field(default_factory=list)  # image path relative to the dataset

    @property
    def num_images(self) -> int:
        return int(len(self.image_ids))

    def box_counts(self) -> np.ndarray:
        return np.diff(self.box_offsets)

    def image_of_box(self) -> np.ndarray:
        return owner_of_rows(self.box_offsets)

    def select(self, images: np.ndarray) -> "SceneGraphs":
        """The graphs of the chosen images (indices or boolean mask), rows renumbered."""
        images = np.asarray(images)
        if images.dtype == bool:
            images = np.flatnonzero(images)
        box_rows, box_offsets = take_ragged(self.box_offsets, images)
        new_row = np.full(len(self.labels), -1, dtype=np.int64)
        new_row[box_rows] = np.arange(len(box_rows), dtype=np.int64)

        def subset(rels: RelationSet | None) -> RelationSet | None:
            if rels is None:
                return None
            rows, offsets = take_ragged(rels.offsets, images)
            return RelationSet(new_row[rels.pairs[rows]], rels.predicates[rows], offsets)

        return SceneGraphs(
            image_ids=self.image_ids[images],
            widths=self.widths[images],
            heights=self.heights[images],
            split=self.split[images],
            box_offsets=box_offsets,
            boxes=self.boxes[box_rows],
            labels=self.labels[box_rows],
            relations=subset(self.relations),
            complete=subset(self.complete),
            files=[self.files[i] for i in images] if self.files else [],
        )

    def split_subset(self, name: str) -> "SceneGraphs":
        return self.select(self.split == SPLIT_CODES[name])

    def image(self, index: int) -> dict:
        """One image's graph with image-local box indices (handy for tests and drawing)."""
        lo, hi = self.box_offsets[index], self.box_offsets[index + 1]
        rlo, rhi = self.relations.offsets[index], self.relations.offsets[index + 1]
        return {
            "image_id": int(self.image_ids[index]),
            "width": int(self.widths[index]),
            "height": int(self.heights[index]),
            "boxes": self.boxes[lo:hi],
            "labels": self.labels[lo:hi],
            "pairs": self.relations.pairs[rlo:rhi] - lo,
            "predicates": self.relations.predicates[rlo:rhi],
        }

    def counts_by_split(self) -> dict[str, dict[str, int]]:
        """Images, objects and annotated relations per split."""
        box_counts = self.box_counts()
        rel_counts = self.relations.counts()
        out = {}
        for name, code in SPLIT_CODES.items():
            mask = self.split == code
            out[name] = {
                "images": int(mask.sum()),
                "objects": int(box_counts[mask].sum()),
                "relations": int(rel_counts[mask].sum()),
            }
        return out


def ordered_pairs(box_offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs (i != j) of each image's boxes: (image, subject row, object row), global rows."""
    counts = np.diff(box_offsets)
    per_image = counts * counts
    image = np.repeat(np.arange(len(counts), dtype=np.int64), per_image)
    local = np.arange(per_image.sum(), dtype=np.int64) - np.repeat(offsets_from_counts(per_image)[:-1], per_image)
    n = counts[image]
    subj, obj = local // n, local % n
    keep = subj != obj
    base = box_offsets[:-1][image]
    return image[keep], (base + subj)[keep], (base + obj)[keep]
