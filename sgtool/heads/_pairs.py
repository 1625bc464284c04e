"""Candidate pairs for the heads that score pairs one by one (freq, reldn, tensor): capping detections,
scoring every ordered pair in chunks, the per-image frame, random ranks for sampling and the pair
inputs (labels + RelDN's spatial vector) the two networks share.

Box coordinates are normalised by each image's box extent (max x2, max y2 of its boxes), in training
and prediction alike, because the objects a head receives carry no image size.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from sgtool.data.graphs import offsets_from_counts, ordered_pairs, owner_of_rows
from sgtool.data.predictions import Predictions
from sgtool.features.spatial import spatial_features
from sgtool.heads import ObjectPredictions

PairScorer = Callable[[ObjectPredictions, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def cap_boxes(objects: ObjectPredictions, max_boxes: int) -> ObjectPredictions:
    """Keep each image's max_boxes highest-scoring objects (stable), ranked by score."""
    image = owner_of_rows(objects.box_offsets)
    order = np.lexsort((-objects.scores, image))
    rank = np.arange(len(order)) - objects.box_offsets[image]
    rows = order[rank < max_boxes]
    counts = np.minimum(np.diff(objects.box_offsets), max_boxes)
    class_scores = objects.class_scores[rows] if objects.class_scores is not None else None
    return ObjectPredictions(objects.image_ids, offsets_from_counts(counts), objects.boxes[rows],
                             objects.labels[rows], objects.scores[rows], objects.detected,
                             objects.labels_given, class_scores)


def score_all_pairs(objects: ObjectPredictions, max_boxes: int, num_predicates: int, score: PairScorer,
                    chunk_pairs: int) -> Predictions:
    """Predictions over every ordered pair (detections capped at max_boxes per image), scored
    chunk_pairs at a time: score(objects, image, subj, obj) -> (M, P) distributions of those pairs."""
    if objects.detected:
        objects = cap_boxes(objects, max_boxes)
    image, subj, obj = ordered_pairs(objects.box_offsets)
    probs = np.zeros((len(subj), num_predicates), np.float32)
    for lo in range(0, len(subj), chunk_pairs):
        hi = min(lo + chunk_pairs, len(subj))
        probs[lo:hi] = score(objects, image[lo:hi], subj[lo:hi], obj[lo:hi])
    return Predictions(
        image_ids=objects.image_ids, box_offsets=objects.box_offsets, boxes=objects.boxes, labels=objects.labels,
        scores=objects.scores.astype(np.float32),
        pair_offsets=offsets_from_counts(np.bincount(image, minlength=objects.num_images)),
        pairs=np.stack([subj, obj], axis=1).astype(np.int64), rel_scores=probs,
    )


def frame_sizes(box_offsets: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(I, 2) [W, H] per image: the extent of its boxes (max x2, max y2), at least 1 pixel."""
    sizes = np.ones((len(box_offsets) - 1, 2), dtype=np.float32)
    if len(boxes):
        np.maximum.at(sizes, owner_of_rows(box_offsets), boxes[:, 2:4].astype(np.float32))
    return sizes


def random_rank(group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each row's 0-based position in a random order of the rows of its group."""
    order = np.lexsort((rng.random(len(group)), group))
    sorted_group = group[order]
    rank = np.empty(len(group), dtype=np.int64)
    rank[order] = np.arange(len(group)) - np.searchsorted(sorted_group, sorted_group, side="left")
    return rank


def pair_inputs(box_offsets: np.ndarray, boxes: np.ndarray, labels: np.ndarray, subj: np.ndarray,
                obj: np.ndarray, image: np.ndarray | None = None) -> dict[str, Tensor]:
    """Network inputs of pairs (global box rows): labels and the RelDN spatial vector in the image's frame;
    image: each pair's image when the caller has it (else read from the subject rows)."""
    image = owner_of_rows(box_offsets)[subj] if image is None else image
    sizes = frame_sizes(box_offsets, boxes)[image]
    return {"subj_label": torch.from_numpy(labels[subj].astype(np.int64)),
            "obj_label": torch.from_numpy(labels[obj].astype(np.int64)),
            "spatial": spatial_features(torch.from_numpy(boxes[subj]), torch.from_numpy(boxes[obj]),
                                        torch.from_numpy(sizes))}
