"""IWSL: importance samples s = 10 / 30 / 50 against mR@20/50/100 on synthetic data; prints one JSON object.

One iwsl head is trained on a synthetic dataset rendered into a temporary workspace; the test split
is then predicted with each number of inference samples s (the bound L_s maximised by mirror descent
with s Gumbel-Softmax draws) and evaluated. SGDet needs a trained detector; this script runs PredCls
(ground-truth boxes and labels, no pixels) and says so in its output.

    nice python benchmarks/ablate_iwsl.py                # a few minutes on one CPU core
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
from sgtool.heads.iwsl import IwslConfig
from sgtool.workspace import Workspace

METRICS = ("R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[10, 30, 50])
    parser.add_argument("--images", type=int, default=150, help="synthetic images (70%% train)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="prediction seeds per s (mean and spread)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def evaluate_samples(ws: Workspace, run: str, samples: int, repeats: int) -> dict:
    head, _, prepared = load_trained_head(ws, run)
    head.config.samples = samples
    test = prepared.graphs.split_subset("test")
    priors = load_prepared_priors(ws, prepared.name)
    runs, seconds, bounds = [], 0.0, []
    for repeat in range(repeats):
        head.predict_seed = repeat
        started = time.perf_counter()
        predictions = head.predict(gt_objects(test))
        seconds += time.perf_counter() - started
        runs.append(evaluate_predictions(test, predictions, "predcls", priors, prepared.vocab).metrics)
        bounds.append(head.predict_stats["bound_per_image"])
    mean = {m: round(sum(float(r[m]) for r in runs) / repeats, 4) for m in METRICS if m in runs[0]}
    spread = {m: round(max(float(r[m]) for r in runs) - min(float(r[m]) for r in runs), 4)
              for m in METRICS if m in runs[0]}
    return {"samples": samples, **mean, "range_over_seeds": spread,
            "bound_per_image": round(sum(bounds) / repeats, 3),
            "ms_per_image": round(1000 * seconds / repeats / max(test.num_images, 1), 2)}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        prepare_synth(ws, images=args.images, size=args.size, seed=args.seed, workers=1)
        started = time.perf_counter()
        result = train(ws, head="iwsl", epochs=args.epochs, overrides=[f"hidden={args.hidden}"], seed=args.seed,
                       device="cpu", name="iwsl")
        train_s = time.perf_counter() - started
        rows = [evaluate_samples(ws, result.run, s, args.repeats) for s in args.samples]
    print(json.dumps({"benchmark": "ablate_iwsl", "task": "predcls",
                      "note": "PredCls (ground-truth boxes and labels): SGDet needs a trained detector, not run here",
                      "dataset": "synth", "images": args.images, "epochs": args.epochs, "hidden": args.hidden,
                      "train_samples": IwslConfig().train_samples, "train_seconds": round(train_s, 1), "split": "test",
                      "threads": args.threads, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
