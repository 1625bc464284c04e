"""Detector accuracy and speed: tiny Faster R-CNN on the synthetic data, printed as one JSON object.

Prepares the synthetic dataset (default 2,000 images, 128 px) in a temporary workspace, trains the
`tiny` detector for a number of epochs (default 7, as `sgtool demo`; 8 images per step), and reports COCO
mAP@.5 and mAP@[.5:.95] on the test split, training and inference images per second. `--minutes M` adds
a wall-clock cap (opt-in: its numbers then depend on the machine). Writes benchmarks/results/bench_detector.json.
Target: mAP@.5 >= 0.90 at the default budget.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from results_io import write_result
from sgtool.data.synth import prepare_synth
from sgtool.engine.train_detector import train_detector
from sgtool.ui import Reporter
from sgtool.workspace import Workspace

TARGET_MAP50, EPOCHS = 0.90, 7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="synthetic images to prepare")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="training epochs (the budget)")
    parser.add_argument("--minutes", type=float, default=None, help="opt-in wall-clock cap on training")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest on a busy 2-core machine: OpenMP threads spin)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workspace", type=Path, default=None, help="keep the workspace here (default: a temp dir)")
    parser.add_argument("--progress", action="store_true", help="show progress bars on stderr")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sgtool-bench-det-") as tmp:
        ws = Workspace(args.workspace or tmp)
        reporter = Reporter(quiet=not args.progress)
        prepared = prepare_synth(ws, images=args.images, seed=args.seed, name="bench-synth", reporter=reporter)
        started = time.perf_counter()
        result = train_detector(ws, dataset=prepared.name, arch="tiny", epochs=args.epochs, batch_size=args.batch_size,
                                time_budget=args.minutes, seed=args.seed, device=args.device, threads=args.threads,
                                reporter=reporter)
        wall = time.perf_counter() - started
        log = [json.loads(line) for line in (result.path / "log.jsonl").read_text().splitlines()]
    m = result.metrics
    train_seconds = sum(r["seconds"] for r in log)
    numbers = {
        "benchmark": "detector", "arch": "tiny", "device": args.device, "threads": torch.get_num_threads(),
        "images": args.images, "train_images": prepared.manifest["counts"]["train"]["images"],
        "test_images": m["images"], "batch_size": args.batch_size, "epochs_run": len(log),
        "train_seconds": round(train_seconds, 1), "wall_seconds_train_and_eval": round(wall, 1),
        "mAP@.5": round(m["mAP@.5"], 4), "mAP": round(m["mAP"], 4), "mAP@.75": round(m["mAP@.75"], 4),
        "train_images_per_s": m["train_images_per_s"], "inference_images_per_s": m["inference_images_per_s"],
        "steps": log[-1]["step"] if log else 0, "target": {"mAP@.5": TARGET_MAP50, "epochs": EPOCHS},
        "target_met": bool(m["mAP@.5"] >= TARGET_MAP50 and args.epochs <= EPOCHS and args.minutes is None),
    }
    write_result("bench_detector", budgets={"epochs": args.epochs, "batch_size": args.batch_size,
                                            "minutes": args.minutes, "images": args.images},
                 seeds=[args.seed], numbers=numbers, sources=["sgtool/detect", "sgtool/engine/train_detector.py",
                                                              "sgtool/engine/loop.py", "sgtool/data/synth.py"])
    print(json.dumps(numbers))


if __name__ == "__main__":
    main()
