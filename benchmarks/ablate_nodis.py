"""NODIS ablation (the paper's Table 2) and integration-time sweep (its Fig. 3) on synthetic data; prints JSON.

Table 2: rows ode = none / object / pair / both (which neural ODE runs; a switched-off one is the
identity), columns SGCls and PredCls R@20 / R@50 / R@100 on the test split, `--seeds` seeds, mean and
sample sd. Every run trains the same epochs on the same images with the same batch size, so every
row takes the same number of optimiser steps; the best epoch is chosen on val R@50 in SGCls. The
head is trained once per (row, seed) in SGCls (its training input never depends on the task: GT
pairs, corrupted GT class distributions into the O-ODE, GT labels into the pair embeddings) and
the same weights are scored in PredCls with `retask` (as `sgtool train --from RUN --task predcls`).
Fig. 3: ode = both, seed 0, t_end in `--t-end`: SGCls R@50, the O-ODE's and the P-ODE's forward
NFE per test image (the paper counts them on 5,000 training images).

SGCls needs a detector: one is trained with a time budget (`--detector-minutes`) once per workspace
(`--workspace DIR` keeps it, with the dataset and the cached ROI features, for the next call) or an
existing one is reused with `--detector RUN`. The heads use its frozen backbone's ROI features.

    nice -n 10 python benchmarks/ablate_nodis.py --workspace /tmp/nodis-ws      # sized for ~25 min on 2 idle cores
    python benchmarks/ablate_nodis.py --images 120 --epochs 1 --seeds 1 --t-end 0.5 1.5   # a quick look
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sgtool.data.predictions import read_predictions
from sgtool.data.prepared import load_prepared, load_prepared_priors
from sgtool.data.synth import prepare_synth
from sgtool.detect import load_detector
from sgtool.engine.train_detector import train_detector
from sgtool.engine.objects import detector_source
from sgtool.engine.train import retask, train
from sgtool.eval.run_eval import evaluate_predictions
from sgtool.workspace import Workspace

ROWS = ("none", "object", "pair", "both")
KS = (20, 50, 100)
DATASET = "nodis-synth"
DETECTOR = "nodis-detector"
PAPER = {  # Cong et al., ECCV 2020, Table 2 (R@50 / R@100) and Sect. 4.4 / Fig. 3
    "table2": {"none": {"sgcls": [35.3, 36.1], "predcls": [65.4, 67.4]},
               "pair": {"sgcls": [35.9, 36.6], "predcls": [65.9, 67.9]},
               "object": {"sgcls": [41.4, 42.5], "predcls": [65.4, 67.5]},
               "both": {"sgcls": [41.9, 42.9], "predcls": [66.0, 67.9]}},
    "fig3": "SGCls R@50 rises from 56.5 to 62.0 until t_end = 1.5, then falls; NFE 8.0 -> 26.2 (O-ODE), 8.0 -> 24.0 (P-ODE)",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=None, help="keep dataset, detector and features here")
    parser.add_argument("--detector", default=None, help="reuse this detector run of the workspace")
    parser.add_argument("--detector-minutes", type=float, default=6.0)
    parser.add_argument("--images", type=int, default=300, help="synthetic images (70%% train)")
    parser.add_argument("--size", type=int, default=128, help="synthetic image side (pixels)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--t-end", type=float, nargs="+", default=[0.25, 0.5, 1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--only", nargs="+", default=None, metavar="ODE:SEED:T_END",
                        help="train just these runs into --workspace and print nothing (to share the work out)")
    parser.add_argument("--collect", action="store_true",
                        help="train nothing: report the complete runs of --workspace (rows list the seeds they hold)")
    return parser.parse_args()


def prepared_workspace(ws: Workspace, args: argparse.Namespace) -> str:
    """The dataset and a detector run (trained once per workspace unless --detector names one)."""
    if not (ws.root / "data" / DATASET).is_dir():
        prepare_synth(ws, images=args.images, size=args.size, seed=0, name=DATASET, workers=1)
    if args.detector:
        return args.detector
    if not (ws.run_dir(DETECTOR) / "metrics.json").is_file():  # a finished detector run
        train_detector(ws, dataset=DATASET, name=DETECTOR, time_budget=args.detector_minutes, epochs=100, seed=0,
                       device="cpu", threads=args.threads)
    return DETECTOR


def detector_object_accuracy(ws: Workspace, detector: str) -> float:
    """SGCls object accuracy of the detector's own box classifier on the test split (argmax of its classes)."""
    prepared = load_prepared(ws, DATASET)
    test = prepared.graphs.split_subset("test")
    source = detector_source(load_detector(ws, detector, prepared.vocab, "cpu"), prepared, "sgcls")
    return round(100 * float(np.mean(source(test).labels == test.labels)), 2)


def detector_minutes(ws: Workspace, detector: str) -> float | None:
    """The time budget the detector run was trained with."""
    import yaml

    budget = (yaml.safe_load((ws.run_dir(detector) / "config.yaml").read_text()).get("options") or {}).get("time_budget")
    return None if budget is None else round(float(budget) / 60, 2)


def scores(ws: Workspace, run: str, task: str) -> dict:
    prepared = load_prepared(ws, DATASET)
    test = prepared.graphs.split_subset("test")
    predictions = read_predictions(ws.run_dir(run) / "predictions" / "test.h5")
    metrics = evaluate_predictions(test, predictions, task, load_prepared_priors(ws, DATASET), prepared.vocab,
                                   ks=KS).metrics
    out = {f"R@{k}": round(100 * float(metrics[f"R@{k}"]), 2) for k in KS}
    head_meta = predictions.meta.get("head_meta") or {}  # what the head recorded while predicting
    for key in ("object_accuracy", "nfe_object", "nfe_pair"):
        if head_meta.get(key) is not None:
            out[key] = round((100 if key == "object_accuracy" else 1) * float(head_meta[key]), 2)
    return out


def complete(ws: Workspace, name: str) -> bool:
    path = ws.run_dir(name) / "run.json"
    return path.is_file() and json.loads(path.read_text()).get("status") == "complete"


def one_run(ws: Workspace, detector: str, args: argparse.Namespace, ode: str, seed: int, t_end: float,
            first: bool) -> dict | None:
    """Train (unless done) and score one run; --collect: score it only if it is complete, else None."""
    name = f"nodis-{ode}-t{t_end:g}-s{seed}"
    predcls = t_end == 1.5  # Fig. 3 needs SGCls only
    if args.collect:
        if not complete(ws, name) or (predcls and not complete(ws, name + "-predcls")):
            return None
    elif not (ws.run_dir(name) / "run.json").is_file():
        train(ws, head="nodis", dataset=DATASET, task="sgcls", name=name, epochs=args.epochs, t_end=t_end,
              overrides=[f"ode={ode}", "features=visual", f"hidden={args.hidden}", "embed=32", "mask_size=16",
                         "val_metric=R@50"], detector=detector, seed=seed, device="cpu", cache_features=first)
    if predcls and not (ws.run_dir(name + "-predcls") / "run.json").is_file():
        retask(ws, name, task="predcls", name=name + "-predcls", device="cpu")
    epochs = [json.loads(line) for line in (ws.run_dir(name) / "log.jsonl").read_text().splitlines()]
    return {"ode": ode, "seed": seed, "t_end": t_end, "sgcls": scores(ws, name, "sgcls"),
            "predcls": scores(ws, name + "-predcls", "predcls") if predcls else None,
            "train_seconds": round(sum(r.get("seconds", 0) for r in epochs if r.get("event") == "epoch"), 1)}


def mean_sd(values: list[float]) -> list[float]:
    return [round(statistics.mean(values), 2), round(statistics.stdev(values), 2) if len(values) > 1 else 0.0]


def table2(runs: list[dict]) -> dict:
    """Per row and task: [mean, sd] of each score over the seeds, and the seeds it holds."""
    out = {}
    for ode in ROWS:
        mine = [r for r in runs if r["ode"] == ode]
        if mine:
            out[ode] = {task: {key: mean_sd([r[task][key] for r in mine]) for key in mine[0][task]}
                        for task in ("sgcls", "predcls")}
            out[ode]["seeds"] = [r["seed"] for r in mine]
    return out


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(args.workspace or Path(tmp) / "ws")
        detector = prepared_workspace(ws, args)
        detector_seconds = round(time.perf_counter() - started, 1)
        if args.only:
            for job in args.only:
                ode, seed, t_end = job.split(":")
                one_run(ws, detector, args, ode, int(seed), float(t_end), first=False)
            return
        runs = [one_run(ws, detector, args, ode, seed, 1.5, first=(ode, seed) == (ROWS[0], 0))
                for seed in range(args.seeds) for ode in ROWS]
        runs = [r for r in runs if r is not None]
        sweep = [next((r for r in runs if r["ode"] == "both" and r["seed"] == 0 and t == 1.5), None)
                 or one_run(ws, detector, args, "both", 0, t, first=False) for t in args.t_end]
        sweep = [r for r in sweep if r is not None]
        detector_metrics = json.loads((ws.run_dir(detector) / "metrics.json").read_text()) \
            if (ws.run_dir(detector) / "metrics.json").is_file() else None
        detector_accuracy = detector_object_accuracy(ws, detector)
    print(json.dumps({
        "benchmark": "ablate_nodis", "dataset": "synth", "images": args.images, "size": args.size,
        "epochs": args.epochs, "seeds": args.seeds, "hidden": args.hidden, "front_end": "fc", "features": "visual",
        "solver": "dopri5, atol = rtol = 0.01", "split": "test", "threads": args.threads,
        "detector": {"run": detector, "minutes": detector_minutes(ws, detector), "sgcls_object_accuracy": detector_accuracy,
                     "test_mAP@.5": (detector_metrics or {}).get("metrics", {}).get("mAP@.5")},
        "collected_only": args.collect,
        "seconds": {"detector_and_data": detector_seconds, "total": round(time.perf_counter() - started, 1)},
        "table2": table2(runs), "fig3": [{"t_end": r["t_end"], "sgcls_R@50": r["sgcls"]["R@50"],
                                          "nfe_object": r["sgcls"].get("nfe_object"),
                                          "nfe_pair": r["sgcls"].get("nfe_pair")} for r in sweep],
        "runs": runs, "paper": PAPER}, indent=2))


if __name__ == "__main__":
    main()
