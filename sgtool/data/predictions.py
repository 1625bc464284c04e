"""Predictions of a relation head for one split: what `eval`, `predict` and `draw` read.

Per image (ragged through offsets): boxes (xyxy, original pixels), labels, object scores, and
candidate pairs (global rows into `boxes`, like the SGG h5) with the full predicate
distribution per pair (column 0 = no relation). Pairs are stored ranked by triplet score.

Optional `pair_labels` (M, 2): the subject and object labels a pair row is scored with, for a head
that labels each pair itself (the tensor head's phrase classification: one row per kept (s, o)
labelling of a box pair, so a box pair may have several rows). Without it a row takes its boxes'
labels. The evaluator counts k predictions per *box pair* either way.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from sgtool import atomic
from sgtool.data.graphs import owner_of_rows
from sgtool.data.sgg_h5 import Vocabulary
from sgtool.errors import SgtoolError
from sgtool.flags import flag

_ARRAYS = ("image_ids", "box_offsets", "boxes", "labels", "scores", "pair_offsets", "pairs", "rel_scores")


def vocabulary_fingerprint(vocab: Vocabulary) -> str:
    """Identifies a vocabulary, so predictions made for another dataset are recognised."""
    return hashlib.sha256(json.dumps([vocab.objects, vocab.predicates]).encode()).hexdigest()[:16]


@dataclass
class Predictions:
    image_ids: np.ndarray  # (I,) int64, the dataset's image ids, in the split's order
    box_offsets: np.ndarray  # (I + 1,) int64
    boxes: np.ndarray  # (N, 4) float32 xyxy pixels
    labels: np.ndarray  # (N,) int64, 1-based
    scores: np.ndarray  # (N,) float32 object scores (1 for given boxes in PredCls)
    pair_offsets: np.ndarray  # (I + 1,) int64
    pairs: np.ndarray  # (M, 2) int64, global rows into boxes
    rel_scores: np.ndarray  # (M, P) float32, P = predicates + 1, column 0 = no relation
    meta: dict = field(default_factory=dict)  # dataset, split, task, head, run, vocabulary fingerprint
    pair_labels: np.ndarray | None = None  # (M, 2) int64 1-based: labels of each row's subject / object

    def row_labels(self) -> np.ndarray:
        """(M, 2) the subject and object label each pair row is scored with."""
        if self.pair_labels is not None:
            return self.pair_labels
        return self.labels[self.pairs] if len(self.pairs) else np.zeros((0, 2), np.int64)

    @property
    def num_images(self) -> int:
        return int(len(self.image_ids))

    def image_of_pair(self) -> np.ndarray:
        return owner_of_rows(self.pair_offsets)

    def triplet_scores(self) -> np.ndarray:
        """Graph-constrained score per pair: best non-background predicate x subject x object score."""
        best = self.rel_scores[:, 1:].max(axis=1) if self.rel_scores.shape[1] > 1 else np.zeros(len(self.pairs))
        return best * self.scores[self.pairs[:, 0]] * self.scores[self.pairs[:, 1]]

    def ranked(self) -> "Predictions":
        """Pairs of each image sorted by triplet score, highest first (stable for ties)."""
        image = self.image_of_pair()
        order = np.lexsort((-self.triplet_scores(), image))
        return Predictions(self.image_ids, self.box_offsets, self.boxes, self.labels, self.scores,
                           self.pair_offsets, self.pairs[order], self.rel_scores[order], dict(self.meta),
                           None if self.pair_labels is None else self.pair_labels[order])


def write_predictions(path: Path, predictions: Predictions) -> None:
    """Write atomically; pairs are ranked first."""
    ranked = predictions.ranked()
    with atomic.atomic_path(Path(path)) as tmp:
        with atomic.h5_in_memory(tmp) as h5:
            for name in _ARRAYS:
                h5.create_dataset(name, data=getattr(ranked, name), track_times=False)
            if ranked.pair_labels is not None:
                h5.create_dataset("pair_labels", data=ranked.pair_labels.astype(np.int64), track_times=False)
            h5.attrs["meta"] = json.dumps(ranked.meta)


def read_predictions(path: Path) -> Predictions:
    path = Path(path)
    if not path.exists():
        raise SgtoolError(f"No predictions file at {path}.", f"Train a head with `sgtool train`, or check {flag('run')} / {flag('split')}.")
    try:
        with h5py.File(path, "r") as h5:
            missing = [name for name in _ARRAYS if name not in h5]
            if missing:
                raise SgtoolError(f"{path} lacks {', '.join(missing)}: it is not an sgtool predictions file.",
                                  "Predictions are written by `sgtool train` and `sgtool predict`.")
            arrays = {name: _stored_array(h5, name, path) for name in (*_ARRAYS, "pair_labels") if name in h5}
            meta = _stored_meta(h5, path)
    except OSError as exc:
        raise SgtoolError(f"{path} cannot be read as HDF5 ({exc}).", "The file may be truncated; predict again.") from exc
    predictions = Predictions(**arrays, meta=meta)
    _validate(predictions, path)
    return predictions


_FLOATS = ("boxes", "scores", "rel_scores")
_MATRICES = ("boxes", "pairs", "rel_scores", "pair_labels")


def _stored_array(h5: h5py.File, name: str, path: Path) -> np.ndarray:
    """One stored array, refused in one sentence unless it is numeric (integers, or numbers for the float
    arrays) with the rank a predictions file gives it: written by hand or by another tool, it may be anything."""
    node = h5[name]
    value = np.asarray(node[()]) if isinstance(node, h5py.Dataset) else None
    kinds = "iuf" if name in _FLOATS else "iu"
    if value is None or value.dtype.kind not in kinds or value.ndim != (2 if name in _MATRICES else 1):
        shown = "a group" if value is None else f"{value.ndim}-d {value.dtype}"
        raise SgtoolError(f"{path} stores {name} as {shown}, not as the {'matrix' if name in _MATRICES else 'vector'} "
                          f"of {'numbers' if name in _FLOATS else 'integers'} a predictions file holds.",
                          "Re-create it with `sgtool train` or `sgtool predict`.")
    return value


def _stored_meta(h5: h5py.File, path: Path) -> dict:
    """The `meta` attribute: a JSON object (dataset, split, task, ...); anything else is one sentence."""
    raw = h5.attrs.get("meta", "{}")
    try:
        meta = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    except (ValueError, UnicodeDecodeError, RecursionError):
        meta = None
    if not isinstance(meta, dict):
        raise SgtoolError(f"{path} has a `meta` attribute that is not a JSON object.",
                          "Re-create it with `sgtool train` or `sgtool predict`.")
    return meta


def _validate(p: Predictions, path: Path) -> None:
    def bad(what: str) -> SgtoolError:
        return SgtoolError(f"{path} is inconsistent: {what}.", "Re-create it with `sgtool train` or `sgtool predict`.")

    for name, offsets, rows in (("box", p.box_offsets, len(p.boxes)), ("pair", p.pair_offsets, len(p.pairs))):
        if len(offsets) != p.num_images + 1 or offsets[0] != 0 or offsets[-1] != rows or np.any(np.diff(offsets) < 0):
            raise bad(f"{name}_offsets do not tile the {rows} rows")
    if not (len(p.labels) == len(p.scores) == len(p.boxes)) or p.boxes.shape[1:] != (4,):
        raise bad("boxes, labels and scores differ in length")
    if len(p.rel_scores) != len(p.pairs) or p.pairs.shape[1:] != (2,):
        raise bad("pairs and rel_scores differ in length")
    if p.pair_labels is not None and (p.pair_labels.shape != p.pairs.shape or
                                      (len(p.pair_labels) and p.pair_labels.min() < 1)):
        raise bad("pair_labels do not give a 1-based (subject, object) label per pair")
    for name in ("boxes", "scores", "rel_scores"):
        if not np.isfinite(getattr(p, name)).all():
            raise bad(f"some {name} are not finite (NaN or infinite)")
    image = p.image_of_pair()
    lo, hi = p.box_offsets[image][:, None], p.box_offsets[image + 1][:, None]
    if np.any((p.pairs < lo) | (p.pairs >= hi)):
        raise bad("some pairs point at boxes of another image")
