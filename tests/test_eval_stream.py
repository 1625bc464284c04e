"""The streaming evaluator gives exactly the numbers of `evaluate` on the whole split."""
from __future__ import annotations

import numpy as np
import pytest

from sgtool.data.graphs import RelationSet, SceneGraphs, offsets_from_counts, ordered_pairs
from sgtool.data.predictions import Predictions
from sgtool.eval import evaluate
from sgtool.eval.stream import evaluate_chunks

P = 8  # predicates with background


def split(images: int = 120, boxes: int = 6, seed: int = 0) -> tuple[SceneGraphs, Predictions]:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, boxes + 1, images)  # ragged, some images with one box (no pair)
    offsets = offsets_from_counts(counts)
    xy = rng.uniform(0, 200, (offsets[-1], 2))
    xyxy = np.concatenate([xy, xy + rng.uniform(5, 80, (offsets[-1], 2))], 1).astype(np.float32)
    labels = rng.integers(1, 5, offsets[-1])
    image, s, o = ordered_pairs(offsets)
    pick = rng.random(len(s)) < 0.3
    rel_counts = np.bincount(image[pick], minlength=images)
    rels = RelationSet(np.stack([s[pick], o[pick]], 1), rng.integers(1, P, int(pick.sum())), offsets_from_counts(rel_counts))
    gt = SceneGraphs(np.arange(images), np.full(images, 300), np.full(images, 300), np.full(images, 2, np.int8),
                     offsets, xyxy, labels, rels, complete=rels)
    jitter = xyxy + rng.normal(0, 4, xyxy.shape).astype(np.float32)
    pred = Predictions(gt.image_ids, offsets, jitter, labels, rng.random(len(labels)).astype(np.float32),
                       offsets_from_counts(np.bincount(image, minlength=images)), np.stack([s, o], 1),
                       rng.random((len(s), P), dtype=np.float32))
    return gt, pred


def chunks(pred: Predictions, size: int):
    for i in range(0, pred.num_images, size):
        b0, b1 = pred.box_offsets[i], pred.box_offsets[min(i + size, pred.num_images)]
        p0, p1 = pred.pair_offsets[i], pred.pair_offsets[min(i + size, pred.num_images)]
        yield Predictions(pred.image_ids[i:i + size], pred.box_offsets[i:i + size + 1] - b0, pred.boxes[b0:b1],
                          pred.labels[b0:b1], pred.scores[b0:b1], pred.pair_offsets[i:i + size + 1] - p0,
                          pred.pairs[p0:p1] - b0, pred.rel_scores[p0:p1])


@pytest.mark.parametrize("task, size", [("sgdet", 7), ("predcls", 50), ("sgcls", 1000)])
def test_chunked_evaluation_equals_whole_split_evaluation(task, size):
    gt, pred = split()
    options = dict(task=task, num_predicates=P, ks=(5, 20), predicate_groups=np.arange(P) % 3,
                   seen_triplets=np.array([[1, 1, 2], [2, 3, 1]]))
    whole = evaluate(gt, pred, **options)
    streamed = evaluate_chunks(gt, chunks(pred, size), **options)
    assert whole.metrics.keys() == streamed.metrics.keys()
    for name, value in whole.metrics.items():
        assert np.array_equal(value, streamed.metrics[name], equal_nan=True), name
    assert 0 < whole.metrics["R@20"] < 1 and np.isfinite(whole.metrics["complete-P@5"])
    assert np.array_equal(whole.hits.gt_rank, streamed.hits.gt_rank)
    assert streamed.counts == whole.counts


def test_chunks_that_do_not_cover_the_split_are_refused():
    from sgtool.errors import SgtoolError

    gt, pred = split()
    with pytest.raises(SgtoolError, match="cover 100 images but the split has 120"):
        evaluate_chunks(gt, list(chunks(pred, 50))[:2], task="sgdet", num_predicates=P)


def test_chunked_evaluation_leaves_out_the_same_empty_images():
    from dataclasses import replace

    gt, pred = split(seed=4)
    emptied = np.flatnonzero(gt.relations.counts() > 0)[::9]  # these images lose every candidate pair
    drop = np.isin(pred.image_of_pair(), emptied)
    counts = np.diff(pred.pair_offsets)
    counts[emptied] = 0
    pred = replace(pred, pair_offsets=offsets_from_counts(counts), pairs=pred.pairs[~drop], rel_scores=pred.rel_scores[~drop])
    options = dict(task="sgcls", num_predicates=P, ks=(5, 20), empty_images="skip")
    whole = evaluate(gt, pred, **options)
    streamed = evaluate_chunks(gt, chunks(pred, 13), **options)
    for name, value in whole.metrics.items():
        assert np.array_equal(value, streamed.metrics[name], equal_nan=True), name
    assert streamed.counts == whole.counts and whole.counts["images_left_out"] == len(emptied)
    zero = evaluate(gt, pred, **{**options, "empty_images": "zero"})
    assert zero.metrics["R@20"] < whole.metrics["R@20"]
