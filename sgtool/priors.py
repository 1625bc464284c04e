"""Frequency statistics of a prepared training split, as the community computes them.

fg[s, o, p] counts training relations; bg[s, o] counts ordered GT box pairs that overlap
(all pairs of an image when none of its pairs overlap) plus one; fg[:, :, 0] = bg and
log p(pred | s, o) = log(fg / sum_p fg + 1e-3) (Motifs' FREQ baseline). The tensor head's
prior is the +1-smoothed triplet count normalised over all (s, p, o).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgtool import atomic
from sgtool.data.graphs import SceneGraphs
from sgtool.errors import SgtoolError
from sgtool.geometry import boxes_overlap

GROUP_NAMES = ("head", "body", "tail")
_PAIR_CHUNK = 4_000_000  # pairs per array operation


@dataclass
class GroupRule:
    """How predicates fall into head / body / tail: by training-count thresholds, or by thirds."""

    method: str = "thirds"  # "thirds" | "thresholds"
    head_above: int = 10_000  # head: more than this many training instances
    tail_below: int = 500  # tail: fewer than this many

    @classmethod
    def from_dict(cls, spec: dict | None) -> "GroupRule":
        rule = cls(**(spec or {}))
        if rule.method not in ("thirds", "thresholds"):
            raise SgtoolError(f"Unknown predicate grouping '{rule.method}'.", "Use 'thirds' or 'thresholds'.")
        return rule


def background_pair_counts(graphs: SceneGraphs, num_object_classes: int) -> np.ndarray:
    """bg[s, o]: overlapping ordered GT pairs (all pairs where an image has none), without the +1.

    Images are grouped by box count n, so each group is one (k, n, n) array operation.
    """
    c = num_object_classes
    bg = np.zeros(c * c, dtype=np.int64)
    counts = graphs.box_counts()
    for n in np.unique(counts[counts >= 2]):
        starts = graphs.box_offsets[:-1][counts == n]
        for chunk in np.array_split(starts, max(1, len(starts) * n * n // _PAIR_CHUNK)):
            rows = chunk[:, None] + np.arange(n)
            b, labels = graphs.boxes[rows], graphs.labels[rows]
            off_diagonal = ~np.eye(n, dtype=bool)
            overlap = boxes_overlap(b[:, :, None], b[:, None, :]) & off_diagonal
            keep = overlap | (~overlap.any(axis=(1, 2))[:, None, None] & off_diagonal)
            index = labels[:, :, None] * c + labels[:, None, :]
            bg += np.bincount(index[keep], minlength=bg.size)
    return bg.reshape(c, c)


def predicate_groups(counts: np.ndarray, rule: GroupRule) -> np.ndarray:
    """Group id per predicate (0 head, 1 body, 2 tail; -1 for background index 0)."""
    groups = np.full(len(counts), -1, dtype=np.int8)
    fg = counts[1:]
    if rule.method == "thresholds":
        groups[1:] = np.where(fg > rule.head_above, 0, np.where(fg < rule.tail_below, 2, 1))
    else:
        order = np.argsort(-fg, kind="stable")
        for group, members in enumerate(np.array_split(order, 3)):
            groups[1 + members] = group
    return groups


def compute_priors(train: SceneGraphs, num_object_classes: int, num_predicate_classes: int,
                   rule: GroupRule | None = None) -> dict[str, np.ndarray]:
    """All priors from a training split (vectorised; index 0 of every axis is background)."""
    c, p = num_object_classes, num_predicate_classes
    rels = train.relations
    subj_labels = train.labels[rels.pairs[:, 0]]
    obj_labels = train.labels[rels.pairs[:, 1]]
    fg = np.bincount((subj_labels * c + obj_labels) * p + rels.predicates, minlength=c * c * p).reshape(c, c, p)
    bg = background_pair_counts(train, c)
    counts = fg.copy()
    counts[:, :, 0] = bg + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        log_freq = np.log(counts / counts.sum(2, keepdims=True) + 1e-3).astype(np.float32)
    smoothed = np.zeros((c, c, p), dtype=np.float64)
    smoothed[1:, 1:, 1:] = fg[1:, 1:, 1:] + 1.0
    triplet_prior = smoothed / smoothed.sum()
    predicate_counts = np.bincount(rels.predicates, minlength=p).astype(np.int64)
    predicate_counts[0] = 0
    return {
        "counts": counts,
        "bg_counts": bg,
        "log_freq": log_freq,
        "triplet_prior": triplet_prior,
        "predicate_counts": predicate_counts,
        "predicate_groups": predicate_groups(predicate_counts, rule or GroupRule()),
        "group_names": np.array(GROUP_NAMES),
    }


def save_priors(path: Path, priors: dict[str, np.ndarray]) -> None:
    atomic.write_npz(path, priors)


def load_priors(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError as exc:
        raise SgtoolError(f"No priors at {path}.", "Run `sgtool prepare` for this dataset again.") from exc
    except (OSError, ValueError) as exc:
        raise SgtoolError(f"{path} is not a readable priors file ({exc}).", "Run `sgtool prepare` again.") from exc
