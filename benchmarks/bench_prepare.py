"""Synthetic data preparation speed: render N images (default 10,000 at 128 px) and print JSON."""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from sgtool.data.synth import prepare_synth
from sgtool.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0, help="0 = one per CPU core")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        prepared = prepare_synth(Workspace(folder), images=args.images, size=args.size, seed=0, workers=args.workers)
        seconds = time.perf_counter() - start
    print(json.dumps({
        "benchmark": "prepare_synth", "images": args.images, "size": args.size, "cpu_cores": os.cpu_count(),
        "seconds": round(seconds, 2), "images_per_second": round(args.images / seconds, 1),
        "relations": sum(c["relations"] for c in prepared.manifest["counts"].values()),
        "target_seconds_for_10k": 120,
    }))


if __name__ == "__main__":
    main()
