"""Speed of the metric engine: synthetic PredCls images, the full metric set at K = 20/50/100.

Prints one JSON object: images/s, wall seconds, and the setting.
    python benchmarks/bench_eval.py [--images 10000] [--boxes 25] [--predicates 51] [--workers N]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from sgtool.data.graphs import RelationSet, SceneGraphs, offsets_from_counts, ordered_pairs
from sgtool.data.predictions import Predictions
from sgtool.eval import evaluate


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
    rels = RelationSet(pairs, preds, offsets_from_counts(n_rel))
    gt = SceneGraphs(np.arange(images), np.full(images, 800), np.full(images, 600), np.full(images, 2, np.int8),
                     box_offsets, xyxy, labels, rels, complete=rels)
    image, s, o = ordered_pairs(box_offsets)
    rel_scores = rng.random((len(s), predicates), dtype=np.float32)
    if background > 0:  # background wins most pairs, as with real softmax outputs
        rel_scores[:, 0] += background
    pred = Predictions(gt.image_ids, box_offsets, xyxy, labels, np.ones(len(labels), np.float32),
                       offsets_from_counts(np.bincount(image, minlength=images)), np.stack([s, o], 1), rel_scores)
    return gt, pred


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--boxes", type=int, default=25)
    parser.add_argument("--predicates", type=int, default=51, help="including background")
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--workers", type=int, default=None, help="threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--background", type=float, default=0.0,
                        help="add this to the background column (e.g. 1.0: background wins every pair)")
    args = parser.parse_args()
    gt, pred = synthetic_split(args.images, args.boxes, args.predicates, args.classes, args.seed, args.background)
    rels = gt.relations
    seen = np.stack([gt.labels[rels.pairs[:, 0]], rels.predicates, gt.labels[rels.pairs[:, 1]]], 1)[::2]
    groups = np.array([-1] + [i * 3 // (args.predicates - 1) for i in range(args.predicates - 1)])
    start = time.perf_counter()
    result = evaluate(gt, pred, task="predcls", num_predicates=args.predicates, ks=(20, 50, 100),
                      predicate_groups=groups, seen_triplets=seen, workers=args.workers)
    wall = time.perf_counter() - start
    print(json.dumps({
        "benchmark": "eval_predcls_full_metric_set",
        "images": args.images, "boxes_per_image": args.boxes, "pairs_per_image": args.boxes * (args.boxes - 1),
        "predicates": args.predicates, "background": args.background, "metrics": len(result.metrics), "workers": args.workers,
        "cpu_count": os.cpu_count(), "wall_s": round(wall, 3), "images_per_s": round(args.images / wall, 1),
        "R@100": round(result.metrics["R@100"], 4), "mR@100": round(result.metrics["mR@100"], 4),
    }))


if __name__ == "__main__":
    main()
