"""Batches of box pairs for the network heads (nodis, iwsl): one flat tensor layout per batch of images.

A `RelBatch` holds the objects of a few images (rows 0..N-1, `box_image` says whose) and candidate
ordered pairs (rows into those objects). Training batches take every annotated pair plus up to
`bg_ratio` times as many unannotated pairs per image (target 0 = no relation); prediction batches
take every ordered pair. Geometry is normalised by each image's frame [0, 0, W, H] where W, H are
the largest x2, y2 of its boxes, so training (ground truth) and prediction (any object source,
which carries no image sizes) see the same numbers.

Visual features are optional: a `VisualSource` maps (image ids, boxes, pairs) to pooled ROI vectors;
heads work from boxes and labels alone when there is none.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sgtool.data.graphs import SceneGraphs, offsets_from_counts, ordered_pairs, owner_of_rows, take_ragged
from sgtool.data.predictions import Predictions
from sgtool.errors import SgtoolError
from sgtool.features.source import VisualSource  # noqa: F401 (the heads import it from here too)
from sgtool.features.spatial import normalized_coords, spatial_features, union_boxes
from sgtool.heads import VisualInputs

OBJECT_GEOMETRY_DIM = 5



@dataclass
class RelBatch:
    image_ids: np.ndarray  # (I,)
    box_offsets: np.ndarray  # (I + 1,) rows of this batch
    boxes: torch.Tensor  # (N, 4) xyxy pixels
    labels: torch.Tensor  # (N,) 1-based (given or predicted)
    scores: torch.Tensor  # (N,)
    pairs: torch.Tensor  # (M, 2) rows into boxes
    targets: torch.Tensor | None = None  # (M,) predicate, 0 = no relation
    rows: np.ndarray | None = None  # (N,) rows of the source (split / ObjectPredictions)
    visual: dict[str, torch.Tensor] = field(default_factory=dict)  # "objects" (N, D), "union" (M, D)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # a head's own per-batch tensors

    @property
    def num_images(self) -> int:
        return int(len(self.image_ids))

    @property
    def device(self) -> torch.device:
        return self.boxes.device

    def to(self, device: torch.device | str) -> "RelBatch":
        """The batch with its tensors on device."""
        move = dict(boxes=self.boxes, labels=self.labels, scores=self.scores, pairs=self.pairs, targets=self.targets)
        moved = {k: None if v is None else v.to(device) for k, v in move.items()}
        return RelBatch(self.image_ids, self.box_offsets, rows=self.rows,
                        visual={k: v.to(device) for k, v in self.visual.items()},
                        extra={k: v.to(device) for k, v in self.extra.items()}, **moved)

    @property
    def box_image(self) -> torch.Tensor:
        return torch.from_numpy(owner_of_rows(self.box_offsets)).to(self.device)

    @property
    def pair_image(self) -> torch.Tensor:
        return self.box_image[self.pairs[:, 0]]

    def frames(self) -> torch.Tensor:
        """(I, 2) [W, H] per image: the largest x2, y2 of its boxes (at least 1 pixel)."""
        return _reduce(torch.ones(self.num_images, 2, device=self.device), self.box_image, self.boxes[:, 2:], "amax")

    def object_geometry(self) -> torch.Tensor:
        """(N, 5) normalised (x1, y1, x2, y2, area) in the image frame."""
        return normalized_coords(self.boxes, self.frames()[self.box_image])

    def pair_geometry(self) -> torch.Tensor:
        """(M, 22) RelDN spatial features of the pairs."""
        s, o = self.boxes[self.pairs[:, 0]], self.boxes[self.pairs[:, 1]]
        return spatial_features(s, o, self.frames()[self.pair_image])

    def union_geometry(self) -> torch.Tensor:
        """(M, 5) normalised union box of each pair."""
        u = union_boxes(self.boxes[self.pairs[:, 0]], self.boxes[self.pairs[:, 1]])
        return normalized_coords(u, self.frames()[self.pair_image])

    def scene_geometry(self) -> torch.Tensor:
        """(I, 5) normalised union of all boxes of each image (the global context box)."""
        lo = _reduce(torch.full((self.num_images, 2), float("inf"), device=self.device), self.box_image, self.boxes[:, :2], "amin")
        hi = _reduce(torch.zeros(self.num_images, 2, device=self.device), self.box_image, self.boxes[:, 2:], "amax")
        return normalized_coords(torch.cat([lo, hi], 1), self.frames())


def _reduce(out: torch.Tensor, index: torch.Tensor, src: torch.Tensor, how: str) -> torch.Tensor:
    """out[index[r]] = how(out[index[r]], src[r]) row-wise (max / min per image)."""
    return out.scatter_reduce_(0, index[:, None].expand_as(src), src, how)


def image_chunks(num_images: int, batch_size: int, shuffle: bool, rng: np.random.Generator) -> Iterator[np.ndarray]:
    order = rng.permutation(num_images) if shuffle else np.arange(num_images)
    for start in range(0, num_images, batch_size):
        yield np.sort(order[start:start + batch_size])


def sample_pairs(box_offsets: np.ndarray, rel_pairs: np.ndarray, rel_predicates: np.ndarray, bg_ratio: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(M, 2) local rows and (M,) targets: all annotated pairs + up to bg_ratio x as many others per image
    (at least one). A pair annotated with several predicates trains on one of them, drawn at random
    from rng on every call (so on each of them over the epochs)."""
    image, subj, obj = ordered_pairs(box_offsets)
    n = int(box_offsets[-1])
    key = subj * n + obj
    target_of_key = np.zeros(n * n, dtype=np.int64)
    chosen = one_predicate_per_pair(rel_pairs[:, 0] * n + rel_pairs[:, 1], rng)
    target_of_key[(rel_pairs[:, 0] * n + rel_pairs[:, 1])[chosen]] = rel_predicates[chosen]
    targets = target_of_key[key]
    fg = targets > 0
    num_images = len(box_offsets) - 1
    budget = np.maximum(np.ceil(bg_ratio * np.bincount(image[fg], minlength=num_images)), 1)
    noise = rng.random(len(key))
    order = np.lexsort((noise, fg, image))  # per image: background pairs first, in random order
    rank = np.arange(len(order)) - offsets_from_counts(np.bincount(image, minlength=num_images))[image[order]]
    keep_sorted = fg[order] | (rank < budget[image[order]])
    keep = np.sort(order[keep_sorted])
    return np.stack([subj[keep], obj[keep]], 1), targets[keep]


def one_predicate_per_pair(keys: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of relations to keep: one per distinct pair key, drawn uniformly among its duplicates."""
    order = np.lexsort((rng.random(len(keys)), keys))
    sorted_keys = keys[order]
    first = np.ones(len(order), bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return order[first]


RelationFilter = Callable[[SceneGraphs, np.ndarray, np.random.Generator], np.ndarray]


def train_batches(graphs: SceneGraphs, batch_size: int, bg_ratio: float, shuffle: bool,
                  rng: np.random.Generator, visual: VisualSource | None = None, order: np.ndarray | None = None,
                  keep: RelationFilter | None = None) -> Iterator[RelBatch]:
    """Ground-truth objects (PredCls) with sampled pairs and their predicate targets.

    order: the images to visit (may repeat; an image drawn twice into one batch appears once in it);
    keep(sub, images, rng) -> (M,) bool: which annotated relations of the batch's graphs to train on."""
    chunks = (image_chunks(graphs.num_images, batch_size, shuffle, rng) if order is None else
              (np.unique(order[i:i + batch_size]) for i in range(0, len(order), batch_size)))
    for images in chunks:
        sub = graphs.select(images)
        rel = sub.relations
        mask = keep(sub, images, rng) if keep is not None else np.ones(len(rel), bool)
        pairs, targets = sample_pairs(sub.box_offsets, rel.pairs[mask], rel.predicates[mask], bg_ratio, rng)
        yield _batch(sub.image_ids, sub.box_offsets, sub.boxes, sub.labels, np.ones(len(sub.labels), np.float32),
                     pairs, targets, None, visual)


def predict_batches(image_ids: np.ndarray, box_offsets: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                    scores: np.ndarray, batch_size: int, visual: VisualSource | None = None) -> Iterator[RelBatch]:
    """Every ordered pair of each image, a few images at a time, in order."""
    rng = np.random.default_rng(0)
    for images in image_chunks(len(image_ids), batch_size, False, rng):
        rows, offsets = take_ragged(box_offsets, images)
        _, subj, obj = ordered_pairs(offsets)
        yield _batch(image_ids[images], offsets, boxes[rows], labels[rows], scores[rows],
                     np.stack([subj, obj], 1), None, rows, visual)


def _batch(image_ids: np.ndarray, offsets: np.ndarray, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray,
           pairs: np.ndarray, targets: np.ndarray | None, rows: np.ndarray | None,
           visual: VisualSource | None) -> RelBatch:
    batch = RelBatch(image_ids, offsets, torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                     torch.as_tensor(labels, dtype=torch.int64), torch.as_tensor(scores, dtype=torch.float32),
                     torch.as_tensor(pairs, dtype=torch.int64).reshape(-1, 2),
                     None if targets is None else torch.as_tensor(targets, dtype=torch.int64), rows)
    if visual is not None:
        asked = np.concatenate([np.asarray(pairs, np.int64).reshape(-1, 2), covering_pairs(offsets, pairs)])
        feats = visual_features(visual(image_ids, offsets, boxes, asked), torch.from_numpy(asked), len(batch.labels))
        batch.visual = {"objects": feats["objects"], "union": feats["union"][:len(batch.pairs)]}
    return batch


def covering_pairs(offsets: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(K, 2) one extra pair per box that is in none of `pairs` (a sampled training batch leaves some
    out), so that every box gets its own ROI vector: partnered with another box of its image, or itself."""
    num_objects = int(offsets[-1])
    covered = np.zeros(num_objects, bool)
    covered[np.asarray(pairs, np.int64).ravel()] = True
    lonely = np.flatnonzero(~covered)
    owner = owner_of_rows(offsets)[lonely]
    start, count = offsets[:-1][owner], np.diff(offsets)[owner]
    partner = np.where(count > 1, np.where(lonely == start, start + 1, start), lonely)
    return np.stack([lonely, partner], 1).astype(np.int64)


def visual_features(pair_feats: dict[str, torch.Tensor], pairs: torch.Tensor, num_objects: int) -> dict[str, torch.Tensor]:
    """Per object (its ROI vector, zeros for a box in no pair) and per pair (union ROI vector)."""
    subject, obj, union = (pair_feats[k].float().cpu() for k in ("subject", "object", "union"))
    objects = subject.new_zeros(num_objects, subject.shape[1])
    objects[pairs[:, 1]] = obj
    objects[pairs[:, 0]] = subject
    return {"objects": objects, "union": union}


def assemble(image_ids: np.ndarray, box_offsets: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
             scores: np.ndarray, batches: list[tuple[RelBatch, np.ndarray]], num_predicates: int) -> Predictions:
    """Predictions from per-batch (batch, (M, P) distribution) results, batches in image order."""
    pair_rows = [b.rows[b.pairs.numpy()] for b, _ in batches]
    counts = [np.bincount(b.pair_image.numpy(), minlength=b.num_images) for b, _ in batches]
    dist = [d for _, d in batches]
    return Predictions(
        image_ids=image_ids, box_offsets=box_offsets, boxes=boxes, labels=labels,
        scores=scores.astype(np.float32),
        pair_offsets=offsets_from_counts(np.concatenate(counts) if counts else np.zeros(len(image_ids), np.int64)),
        pairs=np.concatenate(pair_rows).astype(np.int64) if pair_rows else np.zeros((0, 2), np.int64),
        rel_scores=np.concatenate(dist).astype(np.float32) if dist else np.zeros((0, num_predicates), np.float32),
    )


class NetworkHelpers(VisualInputs):
    """What the nodis and iwsl heads share: the built network, its device, and the optional visual source."""

    def _require_model(self) -> Any:
        if self.model is None:
            raise SgtoolError(f"The {self.name} head has no network yet.", "Train it or load its checkpoint first.")
        return self.model

    def _device(self) -> torch.device:
        return next(self._require_model().parameters()).device

    def _visual(self) -> VisualSource | None:
        """The source for this network's batches: None when it was built without visual inputs."""
        return self.visual_source if self.uses_visual() else None
