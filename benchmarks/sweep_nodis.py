"""NODIS: integration time t_end against recall, NFE and speed, on small synthetic data; prints one JSON object.

For each t_end a nodis head is trained (PredCls, pixel-free) through the `train` stage on a synthetic
dataset rendered into a temporary workspace; the test split is then predicted with the trained head
(timed) and evaluated: R@K / mR@K, the forward NFE per image (O-ODE + P-ODE) and milliseconds per image.

    nice python benchmarks/sweep_nodis.py                 # a few minutes on one CPU core
    python benchmarks/sweep_nodis.py --t-end 0.05 1.5 --epochs 1 --images 60   # quicker
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from sgtool.data.prepared import load_prepared_priors
from sgtool.data.synth import prepare_synth
from sgtool.engine.train import load_trained_head, train
from sgtool.eval.run_eval import evaluate_predictions
from sgtool.heads import gt_objects
from sgtool.workspace import Workspace

METRICS = ("R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t-end", type=float, nargs="+", default=[0.05, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--images", type=int, default=150, help="synthetic images (70%% train)")
    parser.add_argument("--size", type=int, default=64, help="synthetic image side (pixels)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--front-end", default="fc")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def one_setting(ws: Workspace, t_end: float, args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    result = train(ws, head="nodis", epochs=args.epochs, t_end=t_end, front_end=args.front_end,
                   overrides=[f"hidden={args.hidden}", "mask_size=16"], seed=args.seed, device="cpu",
                   name=f"nodis-t{t_end:g}")
    train_s = time.perf_counter() - started
    head, _, prepared = load_trained_head(ws, result.run)
    test = prepared.graphs.split_subset("test")
    started = time.perf_counter()
    predictions = head.predict(gt_objects(test))
    predict_s = time.perf_counter() - started
    metrics = evaluate_predictions(test, predictions, "predcls", load_prepared_priors(ws, prepared.name),
                                   prepared.vocab).metrics
    return {"t_end": t_end, **{m: round(float(metrics[m]), 4) for m in METRICS if m in metrics},
            "nfe_per_image": head.predict_stats["nfe_per_image"],
            "ms_per_image": round(1000 * predict_s / max(test.num_images, 1), 2),
            "train_seconds": round(train_s, 1)}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        prepare_synth(ws, images=args.images, size=args.size, seed=args.seed, workers=1)
        rows = [one_setting(ws, t, args) for t in args.t_end]
    print(json.dumps({"benchmark": "sweep_nodis", "task": "predcls", "dataset": "synth", "images": args.images,
                      "epochs": args.epochs, "front_end": args.front_end, "hidden": args.hidden,
                      "solver": "dopri5, atol = rtol = 0.01", "split": "test", "threads": args.threads,
                      "results": rows}, indent=2))


if __name__ == "__main__":
    main()
