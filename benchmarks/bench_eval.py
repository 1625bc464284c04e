"""Speed and memory of the metric engine on one load, the full metric set at K = 20/50/100.

Prints one JSON object: images/s (wall; and per CPU second, steadier on a shared machine), the
machine's load average, peak RSS during evaluation (the process: predictions included), the setting.
    python benchmarks/bench_eval.py [--load synthetic|real-like|sgdet-like] [--images N] [--compare-legacy]
Loads (benchmarks/eval_loads.py): synthetic = 25 boxes x 600 pairs PredCls images; real-like =
heavy-tailed boxes per image up to 250, one dominant class, duplicate GT relations, several
predicates per pair; sgdet-like = 80 detections with overlapping same-class boxes.
--compare-legacy also runs the evaluator as it was before issue 20 (tests/legacy_eval.py) and
reports whether every metric the legacy one computes is identical, and which metrics were added since
(the VRD protocol's phrase recall).

    nice -n 10 python benchmarks/bench_eval.py --versus [--images 300] [--community-src DIR] [--sgbench-src DIR]
--versus: dense real-like PredCls (every image >= 60k candidate pairs), streamed chunk by chunk through
`SceneGraphEvaluator` (peak RSS <= 1 GiB), timed in one run against (a) the community benchmark's own
per-image evaluator loop, imported from its fetched sources (--community-src: a folder holding its
`maskrcnn_benchmark` package, e.g. a scratch copy of Scene-Graph-Benchmark.pytorch) and (b) a minimal path:
numpy argmax / argsort into ranked triplet lists, then the `sgbench` package's R@K / mR@K (--sgbench-src:
where `import sgbench` resolves, if not installed). Prints each ratio; writes
benchmarks/results/bench_eval_versus.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_loads import LOADS, make_load  # noqa: E402

from sgtool.eval import evaluate  # noqa: E402

DEFAULT_IMAGES = {"synthetic": 10_000, "real-like": 754, "sgdet-like": 1_000}  # real-like: the size of the split in issue 20


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux: /proc/self/clear_refs, 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(evaluator, gt, pred, task: str, num_predicates: int, groups, seen, workers):
    return evaluator(gt, pred, task=task, num_predicates=num_predicates, ks=(20, 50, 100),
                     predicate_groups=groups, seen_triplets=seen, workers=workers)


def same(new: dict, old: dict) -> bool:
    """Every metric the legacy evaluator reports is identical in the new one (NaN equals NaN)."""
    return old.keys() <= new.keys() and all(
        x == y or (math.isnan(x) and math.isnan(y)) for x, y in ((new[k], old[k]) for k in old))


def main() -> None:
    if "--versus" in sys.argv:
        from eval_versus import versus_main

        versus_main([arg for arg in sys.argv[1:] if arg != "--versus"])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", choices=LOADS, default="synthetic")
    parser.add_argument("--images", type=int, default=None, help="default: 10,000 / 754 / 1,000 by load")
    parser.add_argument("--boxes", type=int, default=25, help="synthetic load: boxes per image")
    parser.add_argument("--predicates", type=int, default=51, help="synthetic load: including background")
    parser.add_argument("--classes", type=int, default=150, help="synthetic load")
    parser.add_argument("--workers", type=int, default=None, help="threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--background", type=float, default=0.0,
                        help="synthetic load: add this to the background column (1.0: background wins every pair)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs; the best is reported")
    parser.add_argument("--compare-legacy", action="store_true", help="also run tests/legacy_eval.py and compare")
    args = parser.parse_args()
    images = args.images or DEFAULT_IMAGES[args.load]
    gt, pred = make_load(args.load, images, args.seed, boxes=args.boxes, predicates=args.predicates,
                         classes=args.classes, background=args.background)
    num_predicates = pred.rel_scores.shape[1]
    task = "sgdet" if args.load == "sgdet-like" else "predcls"
    rels = gt.relations
    seen = np.stack([gt.labels[rels.pairs[:, 0]], rels.predicates, gt.labels[rels.pairs[:, 1]]], 1)[::2]
    groups = np.array([-1] + [i * 3 // (num_predicates - 1) for i in range(num_predicates - 1)])
    base = rss_mib()
    walls, cpus, peaks = [], [], []
    for _ in range(max(args.repeat, 1)):
        resettable = reset_peak_rss()
        start, cpu = time.perf_counter(), time.process_time()
        result = run(evaluate, gt, pred, task, num_predicates, groups, seen, args.workers)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
        peaks.append(peak_rss_mib() if resettable else float("nan"))
    wall = min(walls)
    pairs = np.diff(pred.pair_offsets)
    out = {
        "benchmark": f"eval_{args.load}_full_metric_set", "load": args.load, "task": task, "images": images,
        "boxes_per_image_mean": round(float(gt.box_counts().mean()), 1), "boxes_per_image_max": int(gt.box_counts().max()),
        "pairs_per_image_mean": round(float(pairs.mean()), 1), "pairs_per_image_max": int(pairs.max()),
        "gt_relations": len(rels), "predicates": num_predicates, "metrics": len(result.metrics), "workers": args.workers,
        "cpu_count": os.cpu_count(), "wall_s": round(wall, 3), "wall_s_all": [round(w, 3) for w in walls],
        "images_per_s": round(images / wall, 1), "cpu_s": round(min(cpus), 3),
        "images_per_cpu_s": round(images / min(cpus), 1), "load_average_1min": round(os.getloadavg()[0], 2),
        "rss_before_mib": round(base, 1),
        "peak_rss_mib": round(max(peaks), 1), "R@100": round(result.metrics["R@100"], 4),
        "mR@100": round(result.metrics["mR@100"], 4),
    }
    if args.compare_legacy:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import legacy_eval

        resettable = reset_peak_rss()
        start = time.perf_counter()
        old = run(legacy_eval.evaluate, gt, pred, task, num_predicates, groups, seen, args.workers)
        out["legacy_wall_s"] = round(time.perf_counter() - start, 3)
        out["legacy_peak_rss_mib"] = round(peak_rss_mib(), 1) if resettable else None
        out["legacy_images_per_s"] = round(images / out["legacy_wall_s"], 1)
        out["identical_to_legacy"] = same(result.metrics, old.metrics)
        out["metrics_added_since_legacy"] = sorted(result.metrics.keys() - old.metrics.keys())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
