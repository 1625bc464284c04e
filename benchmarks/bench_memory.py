"""Memory at scale: streaming evaluation of 100k images' predictions, and VG-sized priors.

Prints one JSON object. Each part runs in its own forked process, which reports its own peak RSS.
    python benchmarks/bench_memory.py [--images 100000] [--boxes 20] [--predicates 51] [--chunk 2000]
                                      [--prior-images 108000] [--parts eval,priors]

eval:   PredCls predictions on every ordered pair of `--boxes` boxes per image, `--predicates` columns
        (background included), generated `--chunk` images at a time and fed to
        `sgtool.eval.stream.evaluate_chunks` (the ground truth of the split is held whole).
priors: `sgtool.priors.compute_priors` on a synthetic training split the size of VG150's
        (~11.5 boxes, ~6 relations per image, 150 classes, 51 predicates).

Also writes benchmarks/results/bench_memory.json. Target (eval): streaming never holds the split's
predictions whole, i.e. the peak RSS stays below their total size (prediction_bytes_total_gib).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
from results_io import write_result

from sgtool.data.graphs import RelationSet, SceneGraphs, offsets_from_counts, ordered_pairs
from sgtool.data.predictions import Predictions

GIB = 1 << 30
DEFAULT_IMAGES = 100_000


def peak_rss_gib() -> float:
    """This process's peak resident set size (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (GIB if sys.platform == "darwin" else GIB / 1024), 3)


def ground_truth(images: int, boxes: np.ndarray, classes: int, predicates: int, rels_per_image: float,
                 seed: int) -> SceneGraphs:
    """Random boxes and labels; Poisson-many relations per image between distinct boxes."""
    rng = np.random.default_rng(seed)
    offsets = offsets_from_counts(boxes)
    n = int(offsets[-1])
    xy = rng.uniform(0, 500, (n, 2)).astype(np.float32)
    xyxy = np.concatenate([xy, xy + rng.uniform(10, 300, (n, 2)).astype(np.float32)], 1)
    labels = rng.integers(1, classes + 1, n)
    counts = np.where(boxes > 1, rng.poisson(rels_per_image, images), 0)
    image = np.repeat(np.arange(images), counts)
    subj = rng.integers(0, boxes[image])
    obj = (subj + rng.integers(1, np.maximum(boxes[image], 2))) % boxes[image]
    pairs = np.stack([subj, obj], 1) + offsets[image][:, None]
    rels = RelationSet(pairs, rng.integers(1, predicates, len(image)), offsets_from_counts(counts))
    return SceneGraphs(np.arange(images), np.full(images, 800), np.full(images, 600), np.zeros(images, np.int8),
                       offsets, xyxy, labels, rels, complete=None)


def prediction_chunks(gt: SceneGraphs, predicates: int, chunk: int, seed: int) -> Iterator[Predictions]:
    """PredCls predictions (GT boxes, every ordered pair, random scores), chunk images at a time."""
    for start in range(0, gt.num_images, chunk):
        part = gt.select(np.arange(start, min(start + chunk, gt.num_images)))
        rng = np.random.default_rng([seed, start])
        image, s, o = ordered_pairs(part.box_offsets)
        yield Predictions(part.image_ids, part.box_offsets, part.boxes, part.labels,
                          np.ones(len(part.labels), np.float32),
                          offsets_from_counts(np.bincount(image, minlength=part.num_images)), np.stack([s, o], 1),
                          rng.random((len(s), predicates), dtype=np.float32))


def bench_eval(args: argparse.Namespace) -> dict:
    from sgtool.eval.stream import evaluate_chunks

    gt = ground_truth(args.images, np.full(args.images, args.boxes), 150, args.predicates, 6.0, args.seed)
    started = time.perf_counter()
    result = evaluate_chunks(gt, prediction_chunks(gt, args.predicates, args.chunk, args.seed), task="predcls",
                             num_predicates=args.predicates)
    seconds = time.perf_counter() - started
    pairs = args.images * args.boxes * (args.boxes - 1)
    return {"images": args.images, "boxes_per_image": args.boxes, "pairs": pairs, "predicates": args.predicates,
            "chunk_images": args.chunk, "prediction_bytes_total_gib": round(pairs * args.predicates * 4 / GIB, 2),
            "seconds": round(seconds, 1), "images_per_s": round(args.images / seconds, 1),
            "R@100": round(result.metrics["R@100"], 4), "mR@100": round(result.metrics["mR@100"], 4),
            "peak_rss_gib": peak_rss_gib()}


def bench_priors(args: argparse.Namespace) -> dict:
    from sgtool.priors import compute_priors

    rng = np.random.default_rng(args.seed)
    boxes = np.clip(rng.poisson(11.5, args.prior_images), 2, 62)
    train = ground_truth(args.prior_images, boxes, 150, 51, 6.0, args.seed)
    started = time.perf_counter()
    priors = compute_priors(train, 151, 51)
    seconds = time.perf_counter() - started
    return {"images": args.prior_images, "boxes": int(len(train.labels)), "relations": len(train.relations),
            "arrays": sorted(priors), "seconds": round(seconds, 2), "peak_rss_gib": peak_rss_gib()}


def in_child(part: Callable[[argparse.Namespace], dict], args: argparse.Namespace) -> dict:
    with multiprocessing.get_context("fork").Pool(1) as pool:
        return pool.apply(part, (args,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES)
    parser.add_argument("--boxes", type=int, default=20)
    parser.add_argument("--predicates", type=int, default=51, help="including background")
    parser.add_argument("--chunk", type=int, default=2000, help="images of predictions in memory at once")
    parser.add_argument("--prior-images", type=int, default=108_000)
    parser.add_argument("--parts", default="eval,priors")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    parts = {"eval": bench_eval, "priors": bench_priors}
    chosen = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in parts]
    if unknown:
        parser.error(f"unknown part {unknown[0]} (known: {', '.join(parts)})")
    out = {"benchmark": "memory", "baseline_rss_gib": peak_rss_gib()}
    out.update({name: in_child(parts[name], args) for name in chosen})
    print(json.dumps(out))
    record(out, args, chosen)


def smaller_note(images: int) -> str:
    if images == DEFAULT_IMAGES:
        return ""
    return (f" The eval part ran at {images:,} images, below the default {DEFAULT_IMAGES:,}, to finish in a few "
            "minutes on a shared 2-core machine.")


SOURCES = {"eval": ["sgtool/eval", "sgtool/data/predictions.py"],
           "priors": ["sgtool/priors.py", "sgtool/geometry.py"]}


def record(out: dict, args: argparse.Namespace, chosen: list[str]) -> None:
    """benchmarks/results/bench_memory.json: each part's numbers; eval's peak RSS against its predictions' size."""
    numbers = {name: {k: v for k, v in out[name].items() if k != "arrays"} for name in chosen}
    numbers["baseline_rss_gib"] = out["baseline_rss_gib"]
    if "eval" in chosen:
        run = out["eval"]
        numbers["target"] = {"eval_peak_rss_gib": run["peak_rss_gib"],
                             "below_prediction_bytes_total_gib": run["prediction_bytes_total_gib"],
                             "met": run["peak_rss_gib"] < run["prediction_bytes_total_gib"]}
    budgets = {"eval_images": args.images, "boxes_per_image": args.boxes, "predicates": args.predicates,
               "chunk_images": args.chunk, "prior_images": args.prior_images, "parts": chosen}
    write_result("bench_memory", budgets=budgets, seeds=[args.seed], numbers=numbers,
                 sources=sorted({s for name in chosen for s in SOURCES[name]} | {"sgtool/data/graphs.py"}),
                 notes="Synthetic VG-sized splits; each part runs in a forked child and reports that child's peak "
                       "RSS (which includes the parent's memory at the fork, baseline_rss_gib). The priors part "
                       "has no stated target; it records time and memory." + smaller_note(args.images))


if __name__ == "__main__":
    main()
