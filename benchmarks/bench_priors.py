"""Priors speed: 100,000 images x 20 relations (VG-like box counts), printed as JSON. Target: <= 5 s.

Also writes benchmarks/results/bench_priors.json.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
from results_io import write_result

from sgtool.data.graphs import RelationSet, SceneGraphs, offsets_from_counts
from sgtool.priors import GroupRule, compute_priors

TARGET_SECONDS = 5


def synthetic_graphs(images: int, relations: int, classes: int, predicates: int, seed: int = 0) -> SceneGraphs:
    rng = np.random.default_rng(seed)
    box_counts = rng.integers(5, 26, size=images)
    box_offsets = offsets_from_counts(box_counts)
    n = int(box_offsets[-1])
    xy = rng.uniform(0, 600, size=(n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 300, size=(n, 2))], axis=1).astype(np.float32)
    rel_offsets = offsets_from_counts(np.full(images, relations))
    image = np.repeat(np.arange(images), relations)
    subj = rng.integers(0, box_counts[image])
    obj = (subj + rng.integers(1, box_counts[image])) % box_counts[image]
    pairs = np.stack([subj, obj], axis=1) + box_offsets[image][:, None]
    rels = RelationSet(pairs, rng.integers(1, predicates, size=len(image)), rel_offsets)
    return SceneGraphs(np.arange(images), np.full(images, 1024), np.full(images, 768), np.zeros(images, np.int8),
                       box_offsets, boxes, rng.integers(1, classes, size=n), rels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--relations", type=int, default=20)
    args = parser.parse_args()
    graphs = synthetic_graphs(args.images, args.relations, classes=151, predicates=51)
    start = time.perf_counter()
    compute_priors(graphs, 151, 51, GroupRule(method="thresholds"))
    seconds = time.perf_counter() - start
    out = {"benchmark": "priors", "images": args.images, "relations": int(len(graphs.relations)),
           "boxes": int(len(graphs.labels)), "seconds": round(seconds, 2), "target_seconds": TARGET_SECONDS}
    print(json.dumps(out))
    write_result("bench_priors", budgets={"images": args.images, "relations_per_image": args.relations}, seeds=[0],
                 numbers={"compute_priors": {k: out[k] for k in ("images", "boxes", "relations", "seconds")},
                          "target": {"seconds_at_most": TARGET_SECONDS, "met": out["seconds"] <= TARGET_SECONDS}},
                 sources=["sgtool/priors.py", "sgtool/geometry.py"],
                 notes="compute_priors with the thresholds group rule on a synthetic split of 5-25 boxes per image "
                       "(151 object and 51 predicate columns).")


if __name__ == "__main__":
    main()
