"""Detector accuracy and speed: tiny Faster R-CNN on the synthetic data, printed as one JSON object.

Prepares the synthetic dataset (default 2,000 images, 128 px) in a temporary workspace, trains the
`tiny` detector for a time budget (default 15 minutes) or an epoch cap, and reports COCO mAP@.5 and
mAP@[.5:.95] on the test split, training and inference images per second.
Target: mAP@.5 >= 0.90 within 15 minutes of training on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from sgtool.data.synth import prepare_synth
from sgtool.engine.train_detector import train_detector
from sgtool.ui import Reporter
from sgtool.workspace import Workspace

TARGET_MAP50, TARGET_MINUTES = 0.90, 15.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="synthetic images to prepare")
    parser.add_argument("--minutes", type=float, default=TARGET_MINUTES, help="training time budget")
    parser.add_argument("--epochs", type=int, default=60, help="epoch cap (the budget usually ends training first)")
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
    print(json.dumps({
        "benchmark": "detector", "arch": "tiny", "device": args.device, "threads": torch.get_num_threads(),
        "images": args.images, "train_images": prepared.manifest["counts"]["train"]["images"],
        "test_images": m["images"], "batch_size": args.batch_size, "epochs_run": len(log),
        "train_seconds": round(train_seconds, 1), "wall_seconds_train_and_eval": round(wall, 1),
        "mAP@.5": round(m["mAP@.5"], 4), "mAP": round(m["mAP"], 4), "mAP@.75": round(m["mAP@.75"], 4),
        "train_images_per_s": m["train_images_per_s"], "inference_images_per_s": m["inference_images_per_s"],
        "target": {"mAP@.5": TARGET_MAP50, "minutes": TARGET_MINUTES},
        "target_met": bool(m["mAP@.5"] >= TARGET_MAP50 and train_seconds <= TARGET_MINUTES * 60 + 1),
    }))


if __name__ == "__main__":
    main()
