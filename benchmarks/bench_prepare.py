"""Synthetic data preparation speed: render N images (default 10,000 at 128 px) and print JSON.

Also writes benchmarks/results/bench_prepare.json. Target: 10,000 images in <= 120 s (at another --images
the time is scaled linearly to 10,000 images before it is compared).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from results_io import write_result

from sgtool.data.synth import prepare_synth
from sgtool.workspace import Workspace

TARGET_SECONDS_FOR_10K = 120
DEFAULT_IMAGES = 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0, help="0 = one per CPU core")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        prepared = prepare_synth(Workspace(folder), images=args.images, size=args.size, seed=0, workers=args.workers)
        seconds = time.perf_counter() - start
    out = {
        "benchmark": "prepare_synth", "images": args.images, "size": args.size, "cpu_cores": os.cpu_count(),
        "seconds": round(seconds, 2), "images_per_second": round(args.images / seconds, 1),
        "relations": sum(c["relations"] for c in prepared.manifest["counts"].values()),
        "target_seconds_for_10k": TARGET_SECONDS_FOR_10K,
    }
    print(json.dumps(out))
    record(out, args.workers)


def record(out: dict, workers: int) -> None:
    """benchmarks/results/bench_prepare.json, the target checked on the time scaled to 10,000 images."""
    per_10k = out["seconds"] * 10_000 / out["images"]
    write_result("bench_prepare", budgets={"images": out["images"], "size_px": out["size"], "workers": workers},
                 seeds=[0],
                 numbers={"prepare_synth": {k: out[k] for k in ("images", "relations", "seconds", "images_per_second")},
                          "target": {"seconds_for_10k_images": round(per_10k, 2),
                                     "seconds_for_10k_at_most": TARGET_SECONDS_FOR_10K,
                                     "scaled_from_images": out["images"], "met": per_10k <= TARGET_SECONDS_FOR_10K}},
                 sources=["sgtool/data/synth.py", "sgtool/data/synth_scene.py", "sgtool/data/synth_multimodal.py",
                          "sgtool/data/synth_confusion.py", "sgtool/data/workers.py", "sgtool/data/prepared.py",
                          "data_recipes/synth.yaml"],
                 notes="workers 0 = one per CPU core; on a shared machine the wall time includes waiting for cores."
                       + ("" if out["images"] == DEFAULT_IMAGES else
                          f" Run at {out['images']:,} images, below the default {DEFAULT_IMAGES:,}, to finish in a "
                          "few minutes on a shared 2-core machine; the target is checked on the time scaled "
                          "linearly to 10,000 images."))


if __name__ == "__main__":
    main()
