"""Row-wise IoU, sgtool/geometry.py (numpy) against torchvision.ops.box_iou, printed as one JSON object.

torchvision's IoU is pairwise: the IoU of a[k] with b[k] is the diagonal of an N x N matrix, so it is
timed on a smaller N (--pairwise-rows) and the numpy version on the same rows and on --rows rows.
Best of --repeat runs, seconds. Also writes benchmarks/results/bench_geometry.json. Target: the numpy
IoU agrees with torchvision's to 1e-9 (it is the exact IoU, not the legacy +1 form).

    python benchmarks/bench_geometry.py [--rows 2000000] [--pairwise-rows 4000] [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torchvision.ops import box_iou

from results_io import write_result

from sgtool.geometry import rowwise_iou

AGREEMENT = 1e-9


def boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 600, size=(n, 2))
    return np.concatenate([xy, xy + rng.uniform(1, 300, size=(n, 2))], axis=1)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--pairwise-rows", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    a, b = boxes(rng, args.rows), boxes(rng, args.rows)
    small_a, small_b = a[:args.pairwise_rows], b[:args.pairwise_rows]
    ta, tb = torch.from_numpy(small_a), torch.from_numpy(small_b)
    ours = rowwise_iou(small_a, small_b, legacy=False)
    theirs = box_iou(ta, tb).diagonal().numpy()
    out = {
        "benchmark": "rowwise_iou", "rows": args.rows, "pairwise_rows": args.pairwise_rows, "torch_threads": 1,
        "numpy_s": round(best(lambda: rowwise_iou(a, b, legacy=False), args.repeat), 4),
        "numpy_small_s": round(best(lambda: rowwise_iou(small_a, small_b, legacy=False), args.repeat), 5),
        "torchvision_small_s": round(best(lambda: box_iou(ta, tb).diagonal(), args.repeat), 5),
        "max_abs_difference": float(np.abs(ours - theirs).max()),
    }
    print(json.dumps(out))
    record(out, args.repeat)


def record(out: dict, repeat: int) -> None:
    """benchmarks/results/bench_geometry.json: one row per (implementation, rows)."""
    timings = {"numpy rowwise_iou": {"rows": out["rows"], "best_seconds": out["numpy_s"]},
               "numpy rowwise_iou (small)": {"rows": out["pairwise_rows"], "best_seconds": out["numpy_small_s"]},
               "torchvision box_iou diagonal (small)": {"rows": out["pairwise_rows"],
                                                        "best_seconds": out["torchvision_small_s"]}}
    write_result("bench_geometry", budgets={"rows": out["rows"], "pairwise_rows": out["pairwise_rows"],
                                            "repeat": repeat}, seeds=[0],
                 numbers={"timings": timings,
                          "agreement": {"max_abs_difference": out["max_abs_difference"], "tolerance": AGREEMENT,
                                        "met": out["max_abs_difference"] <= AGREEMENT}},
                 sources=["sgtool/geometry.py"],
                 notes="Random boxes; seconds are the best of `repeat` runs with one torch thread.")


if __name__ == "__main__":
    main()
