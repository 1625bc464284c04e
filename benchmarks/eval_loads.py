"""Evaluation loads for benchmarks/bench_eval.py (and the evaluator's tests at small sizes).

* synthetic: PredCls, every image 25 boxes of 150 uniform classes, 0-20 GT relations, uniform scores.
* real-like: PredCls shaped like a real VG-format test split — heavy-tailed boxes per image (a few
  images with 130-250 boxes), one class holding ~40 % of the boxes, GT relations ~1.4 per box with
  several predicates per pair and exact duplicates, boxes clustered so that same-class boxes overlap,
  softmax-like scores where background wins most pairs.
* sgdet-like: 80 detections per image — a jittered copy of each GT box (local box j copies GT
  box j) and more jittered same-class copies —, object scores, every ordered pair a candidate.
"""
from __future__ import annotations

import numpy as np

from sgtool.data.graphs import RelationSet, SceneGraphs, offsets_from_counts, ordered_pairs
from sgtool.data.predictions import Predictions

LOADS = ("synthetic", "real-like", "sgdet-like")


def _split(box_offsets, boxes, labels, rel_counts, pairs, predicates, size=(800, 600)) -> SceneGraphs:
    images = len(box_offsets) - 1
    rels = RelationSet(pairs.astype(np.int64), predicates.astype(np.int64), offsets_from_counts(rel_counts))
    return SceneGraphs(np.arange(images), np.full(images, size[0]), np.full(images, size[1]),
                       np.full(images, 2, np.int8), box_offsets, boxes.astype(np.float32), labels.astype(np.int64), rels)


def _all_pairs_predictions(gt: SceneGraphs, box_offsets, boxes, labels, scores, rel_scores_of) -> Predictions:
    image, s, o = ordered_pairs(box_offsets)
    return Predictions(gt.image_ids, box_offsets, boxes.astype(np.float32), labels.astype(np.int64),
                       scores.astype(np.float32), offsets_from_counts(np.bincount(image, minlength=gt.num_images)),
                       np.stack([s, o], 1), rel_scores_of(len(s)))


def synthetic_split(images: int, boxes: int, predicates: int, classes: int, seed: int,
                    background: float = 0.0) -> tuple[SceneGraphs, Predictions]:
    """GT with 0-20 relations per image (duplicates allowed) and PredCls predictions on all ordered pairs."""
    rng = np.random.default_rng(seed)
    box_offsets = offsets_from_counts(np.full(images, boxes))
    xy = rng.uniform(0, 500, size=(images * boxes, 2))
    wh = rng.uniform(10, 300, size=(images * boxes, 2))
    xyxy = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    labels = rng.integers(1, classes + 1, size=images * boxes)
    n_rel = rng.integers(0, 21, size=images)
    rel_image = np.repeat(np.arange(images), n_rel)
    subj = rng.integers(0, boxes, size=len(rel_image))
    obj = (subj + rng.integers(1, boxes, size=len(rel_image))) % boxes
    pairs = np.stack([subj, obj], 1) + box_offsets[rel_image][:, None]
    weights = 1.0 / np.arange(1, predicates) ** 1.2
    preds = rng.choice(np.arange(1, predicates), size=len(rel_image), p=weights / weights.sum())
    gt = _split(box_offsets, xyxy, labels, n_rel, pairs, preds)
    gt.complete = gt.relations

    def rel_scores(n: int) -> np.ndarray:
        out = rng.random((n, predicates), dtype=np.float32)
        if background > 0:  # background wins most pairs, as with real softmax outputs
            out[:, 0] += background
        return out

    pred = _all_pairs_predictions(gt, box_offsets, xyxy, labels, np.ones(len(labels)), rel_scores)
    return gt, pred


def _clustered_boxes(rng, counts: np.ndarray, size=(800, 600)) -> np.ndarray:
    """Boxes around a few centres per image, so that boxes overlap as in real scenes."""
    n = int(counts.sum())
    image = np.repeat(np.arange(len(counts)), counts)
    centres = rng.uniform([0, 0], size, size=(len(counts), 4, 2))
    centre = centres[image, rng.integers(0, 4, n)]
    wh = np.exp(rng.normal(np.log(60), 0.8, size=(n, 2))).clip(2, 700)
    xy = (centre + rng.normal(0, 40, size=(n, 2)) - wh / 2).clip(0, None)
    return np.concatenate([xy, np.minimum(xy + wh, size)], 1)


def _zipf_labels(rng, n: int, classes: int, dominant: float) -> np.ndarray:
    """Class 1 holds `dominant` of the boxes, the others a Zipf tail."""
    weights = 1.0 / np.arange(1, classes) ** 1.1
    tail = rng.choice(np.arange(2, classes + 1), size=n, p=weights / weights.sum())
    return np.where(rng.random(n) < dominant, 1, tail)


def _relations(rng, counts: np.ndarray, box_offsets: np.ndarray, predicates: int, per_box: float,
               max_rels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GT relations: ~per_box per box, ~30 % of pairs with 2-3 predicates, ~10 % exact duplicates."""
    base = np.minimum(rng.poisson(counts * per_box * 0.6), max_rels // 2) * (counts > 1)
    image = np.repeat(np.arange(len(counts)), base)
    subj = rng.integers(0, counts[image])
    obj = (subj + rng.integers(1, np.maximum(counts[image], 2))) % counts[image]
    weights = 1.0 / np.arange(1, predicates) ** 1.3
    pick = lambda k: rng.choice(np.arange(1, predicates), size=k, p=weights / weights.sum())  # noqa: E731
    extra = rng.random(len(image)) < 0.3  # several predicates on one pair
    dup = rng.random(len(image)) < 0.1  # an exact duplicate
    rows = [(image, subj, obj, pick(len(image))),
            (image[extra], subj[extra], obj[extra], pick(int(extra.sum()))),
            (image[extra], subj[extra], obj[extra], pick(int(extra.sum())))]
    rows.append((image[dup], subj[dup], obj[dup], rows[0][3][dup]))
    image, subj, obj, pred = (np.concatenate(col) for col in zip(*rows))
    order = np.argsort(image, kind="stable")
    image, subj, obj, pred = image[order], subj[order], obj[order], pred[order]
    pairs = np.stack([subj, obj], 1) + box_offsets[image][:, None]
    return np.bincount(image, minlength=len(counts)), pairs, pred


def _gt_pair_rows(gt: SceneGraphs, pred: Predictions) -> np.ndarray:
    """Row in an all-ordered-pairs prediction of each GT relation's (subject, object) (same boxes)."""
    image = np.repeat(np.arange(gt.num_images), gt.relations.counts())
    local = gt.relations.pairs - gt.box_offsets[image][:, None]
    n = np.diff(pred.box_offsets)[image]  # local box j of GT is local box j of the predictions
    return pred.pair_offsets[image] + local[:, 0] * (n - 1) + local[:, 1] - (local[:, 1] > local[:, 0])


def _informed(rng, gt: SceneGraphs, pred: Predictions, strength: float = 4.0) -> None:
    """Raise, on each GT pair, the logit of its GT predicate (for about 70 % of GT relations), so
    that hits are as common as with a trained head; scores stay softmax-normalised."""
    rows = _gt_pair_rows(gt, pred)
    told = rng.random(len(rows)) < 0.7
    logits = np.log(pred.rel_scores[rows[told]])
    logits[np.arange(int(told.sum())), gt.relations.predicates[told]] += strength * rng.random(int(told.sum()))
    logits = np.exp(logits - logits.max(axis=1, keepdims=True))
    pred.rel_scores[rows[told]] = logits / logits.sum(axis=1, keepdims=True)


def _softmax_like(rng, n: int, predicates: int, background: float = 4.0) -> np.ndarray:
    logits = rng.normal(0, 1.5, size=(n, predicates)).astype(np.float32)
    logits[:, 0] += background
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def real_like_split(images: int, predicates: int = 53, classes: int = 30, seed: int = 0,
                    max_boxes: int = 250) -> tuple[SceneGraphs, Predictions]:
    """PredCls on a real-like split (mean ~1,150 ordered pairs per image, up to max_boxes boxes)."""
    rng = np.random.default_rng(seed)
    counts = np.exp(rng.normal(np.log(16), 0.75, images)).astype(np.int64).clip(1, max_boxes)
    heavy = rng.random(images) < 0.007  # a few crowded images (134-255 boxes in the real split)
    counts[heavy] = rng.integers(130, max_boxes + 1, int(heavy.sum()))
    if images:
        counts[rng.integers(images)] = max_boxes
    box_offsets = offsets_from_counts(counts)
    boxes = _clustered_boxes(rng, counts)
    labels = _zipf_labels(rng, int(counts.sum()), classes, dominant=0.4)
    rel_counts, pairs, preds = _relations(rng, counts, box_offsets, predicates, per_box=2.0, max_rels=850)
    gt = _split(box_offsets, boxes, labels, rel_counts, pairs, preds)
    pred = _all_pairs_predictions(gt, box_offsets, boxes, labels, np.ones(len(labels)),
                                  lambda n: _softmax_like(rng, n, predicates))
    _informed(rng, gt, pred)
    return gt, pred


def sgdet_like_split(images: int, predicates: int = 51, classes: int = 150, seed: int = 0,
                     detections: int = 80) -> tuple[SceneGraphs, Predictions]:
    """SGDet: `detections` boxes per image, jittered same-class copies of the GT boxes among them."""
    rng = np.random.default_rng(seed)
    counts = np.exp(rng.normal(np.log(12), 0.5, images)).astype(np.int64).clip(2, 40)
    box_offsets = offsets_from_counts(counts)
    boxes = _clustered_boxes(rng, counts)
    labels = _zipf_labels(rng, int(counts.sum()), classes, dominant=0.15)
    rel_counts, pairs, preds = _relations(rng, counts, box_offsets, predicates, per_box=0.6, max_rels=100)
    gt = _split(box_offsets, boxes, labels, rel_counts, pairs, preds)
    det_offsets = offsets_from_counts(np.full(images, detections))
    image = np.repeat(np.arange(images), detections)
    local = np.arange(len(image)) - det_offsets[image]
    source = box_offsets[image] + np.where(local < counts[image], local, rng.integers(0, counts[image]))
    wh = boxes[source, 2:] - boxes[source, :2]
    det = boxes[source] + rng.normal(0, 0.08, size=(len(source), 4)) * np.concatenate([wh, wh], 1)
    det = np.concatenate([np.minimum(det[:, :2], det[:, 2:]), np.maximum(det[:, :2], det[:, 2:])], 1).clip(0, 800)
    det_labels = np.where(rng.random(len(source)) < 0.8, labels[source], _zipf_labels(rng, len(source), classes, 0.15))
    scores = rng.uniform(0.05, 1.0, len(source))
    pred = _all_pairs_predictions(gt, det_offsets, det, det_labels, scores, lambda n: _softmax_like(rng, n, predicates))
    _informed(rng, gt, pred)
    return gt, pred


def make_load(load: str, images: int, seed: int = 0, **options) -> tuple[SceneGraphs, Predictions]:
    if load == "synthetic":
        return synthetic_split(images, options.get("boxes", 25), options.get("predicates", 51),
                               options.get("classes", 150), seed, options.get("background", 0.0))
    if load == "real-like":
        return real_like_split(images, seed=seed)
    if load == "sgdet-like":
        return sgdet_like_split(images, seed=seed)
    raise ValueError(f"unknown load {load!r}; known: {', '.join(LOADS)}")
