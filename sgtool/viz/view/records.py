"""What the site's JavaScript reads: the gallery index (one small columnar file for the whole split)
and the image shards (every image's boxes, ground truth and each run's top-K graph, SHARD_SIZE
images per file, loaded only when an image page needs them).

Per image and run: hits = GT relations recalled in the top K (`Hits.gt_rank < K`), misses = GT
relations not recalled, false positives = top-K predictions that hit no GT relation
(`Hits.pred_hit`), recall = hits / GT relations — the evaluator's own per-image numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sgtool.data.graphs import SceneGraphs, offsets_from_counts, owner_of_rows
from sgtool.viz.view.runs import ViewData, ViewRun

SHARD_SIZE = 100  # images per shard file


@dataclass
class RunMarks:
    """One run's per-image marks at the view's K."""

    gt_hit: np.ndarray  # (GT relations,) bool: recalled in the top K
    hits: np.ndarray  # (I,) GT relations recalled
    misses: np.ndarray  # (I,) GT relations not recalled
    fps: np.ndarray  # (I,) top-K predictions hitting no GT relation
    recall: np.ndarray  # (I,) hits / GT relations, NaN without GT
    top_rows: np.ndarray  # global pair rows of every image's top K, image by image, best first
    top_offsets: np.ndarray  # (I + 1,)
    top_hit: np.ndarray  # (rows,) bool: the prediction hits a GT relation
    top_image: np.ndarray  # (rows,) the image of each row


def run_marks(gt: SceneGraphs, run: ViewRun, k: int) -> RunMarks:
    hits, n = run.result.hits, gt.num_images
    gt_hit = hits.gt_rank < k
    total = gt.relations.counts()
    recalled = np.bincount(owner_of_rows(gt.relations.offsets), weights=gt_hit, minlength=n).astype(np.int64)
    rows = np.flatnonzero(hits.pred_rank < k)
    image = run.predictions.image_of_pair()[rows]
    order = np.lexsort((hits.pred_rank[rows], image))
    rows, image = rows[order], image[order]
    top_hit = hits.pred_hit[rows]
    fps = np.bincount(image, weights=~top_hit, minlength=n).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(total > 0, recalled / np.maximum(total, 1), np.nan)
    return RunMarks(gt_hit, recalled, total - recalled, fps, recall, rows,
                    offsets_from_counts(np.bincount(image, minlength=n)), top_hit, image)


def _nullable(values: np.ndarray, digits: int = 4) -> list:
    return [None if math.isnan(v) else round(v, digits) for v in values.tolist()]


def gallery_index(data: ViewData, marks: list[RunMarks]) -> dict:
    """Every image's id, GT predicates and each run's counts: what sorting and filtering need."""
    gt = data.gt
    return {
        "count": gt.num_images, "shardSize": SHARD_SIZE, "ids": gt.image_ids.tolist(),
        "relOffsets": gt.relations.offsets.tolist(), "relPred": gt.relations.predicates.tolist(),
        "runs": [{"recall": _nullable(m.recall), "hits": m.hits.tolist(), "misses": m.misses.tolist(),
                  "fps": m.fps.tolist(), "relHit": "".join("1" if h else "0" for h in m.gt_hit.tolist())}
                 for m in marks],
    }


def _split(values: list, offsets: np.ndarray, lo: int, hi: int) -> list[list]:
    """values = rows offsets[lo]:offsets[hi] as a list; one list per image lo..hi-1."""
    base = int(offsets[lo])
    return [values[int(offsets[i]) - base:int(offsets[i + 1]) - base] for i in range(lo, hi)]


def _rows(offsets: np.ndarray, lo: int, hi: int) -> slice:
    return slice(int(offsets[lo]), int(offsets[hi]))


def _gt_part(gt: SceneGraphs, lo: int, hi: int) -> list[dict]:
    rows, rel_rows = _rows(gt.box_offsets, lo, hi), _rows(gt.relations.offsets, lo, hi)
    boxes = _split(np.round(gt.boxes[rows], 1).tolist(), gt.box_offsets, lo, hi)
    labels = _split(gt.labels[rows].tolist(), gt.box_offsets, lo, hi)
    image = np.repeat(np.arange(lo, hi), gt.relations.counts()[lo:hi])
    local = gt.relations.pairs[rel_rows] - gt.box_offsets[image][:, None]
    triples = np.concatenate([local, gt.relations.predicates[rel_rows, None]], axis=1).tolist()
    rels = _split(triples, gt.relations.offsets, lo, hi)
    return [{"boxes": b, "labels": l, "rels": r} for b, l, r in zip(boxes, labels, rels)]


def _run_part(run: ViewRun, mark: RunMarks, lo: int, hi: int) -> list[dict]:
    """Each image's boxes (only where the task detects its own), labels and top-K [s, o, p, score, hit]."""
    pred, hits = run.predictions, run.result.hits
    rows = _rows(pred.box_offsets, lo, hi)
    boxes = _split(np.round(pred.boxes[rows], 1).tolist(), pred.box_offsets, lo, hi)
    labels = _split(pred.labels[rows].tolist(), pred.box_offsets, lo, hi)
    chosen = _rows(mark.top_offsets, lo, hi)
    top = mark.top_rows[chosen]
    local = pred.pairs[top] - pred.box_offsets[mark.top_image[chosen]][:, None]
    columns = [local[:, 0].tolist(), local[:, 1].tolist(), hits.pred_predicate[top].tolist(),
               np.round(hits.pred_score[top], 5).tolist(), mark.top_hit[chosen].astype(int).tolist()]
    tops = _split([list(row) for row in zip(*columns)], mark.top_offsets, lo, hi)
    own_boxes = run.task == "sgdet"
    return [{"boxes": b if own_boxes else None, "labels": l, "top": t} for b, l, t in zip(boxes, labels, tops)]


def shard_payload(data: ViewData, marks: list[RunMarks], shard: int, pictures: list[str | None]) -> list[dict]:
    """The images of one shard: index, id, size, picture, GT graph and each run's top-K graph."""
    gt = data.gt
    lo, hi = shard * SHARD_SIZE, min((shard + 1) * SHARD_SIZE, gt.num_images)
    parts = [_run_part(run, mark, lo, hi) for run, mark in zip(data.runs, marks)]
    return [{"i": i, "id": int(gt.image_ids[i]), "w": int(gt.widths[i]), "h": int(gt.heights[i]),
             "image": pictures[i], "gt": graph, "runs": [part[i - lo] for part in parts]}
            for i, graph in zip(range(lo, hi), _gt_part(gt, lo, hi))]
