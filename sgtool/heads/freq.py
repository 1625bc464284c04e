"""Motifs' frequency baseline (FREQ): predicate = p(pred | subject class, object class) from training counts.

Nothing is optimised. fg[s, o, p] counts training relations; the background column counts
ordered training box pairs + 1, and log p = log(fg / sum_p fg + 1e-3) (the priors file's rule).
Which pairs count as background follows Motifs: plain FREQ counts all ordered pairs of every
training image; FREQ + overlap counts only overlapping pairs (all pairs of an image where none
overlap), which is exactly the priors file's `log_freq`, and scores only overlapping pairs too.

Per candidate pair (i != j): distribution = exp(log_freq[s, o, :]) normalised over all columns
(column 0 = no relation kept); triplet score = best non-background probability x both object scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from sgtool.data.graphs import SceneGraphs, offsets_from_counts, ordered_pairs
from sgtool.data.predictions import Predictions
from sgtool.config import option
from sgtool.errors import SgtoolError
from sgtool.geometry import boxes_overlap
from sgtool.heads import HeadConfig, ObjectPredictions, StatisticalHead, TrainData, register_head
from sgtool.heads._pairs import cap_boxes

_CHUNK_PAIRS = 4_000_000  # candidate pairs scored at once (bounds memory on large splits)


@dataclass
class FreqConfig(HeadConfig):
    epochs: int = 1  # nothing to optimise; accepted and ignored
    overlap: bool = option(False, "Only pairs whose boxes overlap, for statistics and candidates.")
    max_boxes: int = option(80, "Detections kept per image (highest scores) before pairing.", min=2, flag=False)


def all_pair_counts(graphs: SceneGraphs, num_object_classes: int) -> np.ndarray:
    """bg[s, o]: ordered pairs (i != j) of boxes of the same image with labels (s, o)."""
    image = graphs.image_of_box()
    hist = sp.csr_matrix((np.ones(len(image)), (image, graphs.labels)),
                         shape=(graphs.num_images, num_object_classes))
    pairs = np.asarray((hist.T @ hist).todense())
    pairs[np.diag_indices(num_object_classes)] -= np.bincount(graphs.labels, minlength=num_object_classes)
    return pairs.astype(np.int64)


def frequency_table(priors: dict[str, np.ndarray], train: SceneGraphs, overlap: bool) -> np.ndarray:
    """log p(pred | s, o), shape (C, C, P), with the background column counted the Motifs way."""
    if overlap:
        return priors["log_freq"].astype(np.float32)
    counts = priors["counts"].astype(np.float64)
    counts[:, :, 0] = all_pair_counts(train, counts.shape[0]) + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(counts / counts.sum(2, keepdims=True) + 1e-3).astype(np.float32)


def candidate_pairs(box_offsets: np.ndarray, boxes: np.ndarray, overlap: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, subject row, object row) of every candidate ordered pair; with overlap, only pairs
    whose boxes share a positive area, or all pairs of an image where no pair does."""
    image, subj, obj = ordered_pairs(box_offsets)
    if not overlap or len(image) == 0:
        return image, subj, obj
    hit = boxes_overlap(boxes[subj], boxes[obj])
    image_has_overlap = np.bincount(image, weights=hit, minlength=len(box_offsets) - 1) > 0
    keep = hit | ~image_has_overlap[image]
    return image[keep], subj[keep], obj[keep]


def _image_chunks(box_offsets: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive image ranges whose ordered pairs number at most about _CHUNK_PAIRS."""
    pairs = np.diff(box_offsets) ** 2
    cumulative = np.cumsum(pairs)
    chunks, start = [], 0
    while start < len(pairs):
        base = cumulative[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(cumulative, base + _CHUNK_PAIRS, side="right")))
        chunks.append((start, stop))
        start = stop
    return chunks


@register_head("freq")
class FreqHead(StatisticalHead):
    """Motifs FREQ / FREQ + overlap."""

    Config = FreqConfig

    def __init__(self, config: FreqConfig, num_object_classes: int, num_predicate_classes: int) -> None:
        super().__init__(config, num_object_classes, num_predicate_classes)
        self.log_freq: np.ndarray | None = None

    def fit(self, data: TrainData, reporter: Any = None) -> list[dict]:
        self.log_freq = frequency_table(data.priors, data.train, self.config.overlap)
        if self.log_freq.shape != (self.num_object_classes, self.num_object_classes, self.num_predicate_classes):
            raise SgtoolError(f"The priors have shape {self.log_freq.shape}, which does not fit the vocabulary.",
                              "Run `sgtool prepare` for this dataset again.")
        return [{"event": "fit", "source": "priors", "overlap": self.config.overlap,
                 "train_images": data.train.num_images, "train_relations": len(data.train.relations)}]

    def distribution(self, subj_labels: np.ndarray, obj_labels: np.ndarray) -> np.ndarray:
        """(M, P) predicate distributions of label pairs, column 0 = no relation."""
        probs = np.exp(self.log_freq[subj_labels, obj_labels])
        return probs / probs.sum(1, keepdims=True)

    def predict(self, objects: ObjectPredictions, reporter: Any = None) -> Predictions:
        if self.log_freq is None:
            raise SgtoolError("The freq head has no statistics yet.", "Fit it on a dataset or load its checkpoint first.")
        if objects.detected:
            objects = cap_boxes(objects, self.config.max_boxes)
        pair_counts, pairs, rel_scores = [], [], []
        for start, stop in _image_chunks(objects.box_offsets):
            offsets = objects.box_offsets[start:stop + 1]
            image, subj, obj = candidate_pairs(offsets - offsets[0], objects.boxes[offsets[0]:offsets[-1]],
                                               self.config.overlap)
            subj, obj = subj + offsets[0], obj + offsets[0]
            pair_counts.append(np.bincount(image, minlength=stop - start))
            pairs.append(np.stack([subj, obj], axis=1))
            rel_scores.append(self.distribution(objects.labels[subj], objects.labels[obj]).astype(np.float32))
        num_p = self.num_predicate_classes
        return Predictions(
            image_ids=objects.image_ids, box_offsets=objects.box_offsets, boxes=objects.boxes,
            labels=objects.labels, scores=objects.scores.astype(np.float32),
            pair_offsets=offsets_from_counts(np.concatenate(pair_counts) if pair_counts else np.zeros(0, np.int64)),
            pairs=np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64),
            rel_scores=np.concatenate(rel_scores) if rel_scores else np.zeros((0, num_p), np.float32),
        )

    def state_dict(self) -> dict[str, Any]:
        return {"log_freq": self.log_freq, "overlap": np.array(self.config.overlap)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        log_freq = np.asarray(state["log_freq"], dtype=np.float32)
        if log_freq.shape != (self.num_object_classes, self.num_object_classes, self.num_predicate_classes):
            raise SgtoolError(f"The freq checkpoint holds a table of shape {log_freq.shape}, which does not fit "
                              "the dataset's vocabulary.", "Evaluate it on the dataset it was trained on.")
        self.log_freq = log_freq
