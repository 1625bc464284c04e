"""IWSL sample-count ablation as the paper's Table 4: s varied in the inference step only.

One iwsl model per training seed (the same optimiser steps for all: --epochs of a fixed synthetic dataset,
the last checkpoint, the same rule for every column). Each model is then predicted, on the test split, in
SGDet (the detector's --sgdet-boxes highest-scoring boxes per image) and SGCls (ground-truth boxes), with these inference steps:

    s=1 / s=10 / s=30 / s=50   the mirror ascent on the Monte Carlo bound with s fixed Gumbel draws per node
                               (Eq. 15, estimator=sampled), as the paper's Table 4 varies it
    exact                      the ascent on the bound's expectation in closed form (estimator=exact, the
                               head's default; its maximiser is the same for every s)
    no descent                 pi stays at its random start (emd_iters = 0), the control

each over --pred-seeds prediction seeds (Gumbel noise and pi_0). Reported per row and column (mR@20/50/100
and R@50): mean and sample sd over the training seeds of each model's mean over prediction seeds, the mean
sd over prediction seeds, and Welch's verdict of each row against s=50 and against no descent (n = training
seeds). The paper's numbers (VG150 SGDet, a ResNeXt-101 detector) stand beside ours; ours are a small
synthetic dataset and a tiny detector, so only the order of the rows can be compared.

    nice -n 10 python benchmarks/ablate_iwsl.py                        # makes its workspace
    nice -n 10 python benchmarks/ablate_iwsl.py --workspace ws --detector d1
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from results_io import summarise, welch, write_result
from sgtool.data.prepared import load_prepared, load_prepared_priors
from sgtool.data.synth import prepare_synth
from sgtool.engine.objects import object_source
from sgtool.engine.train import load_trained_head, train
from sgtool.engine.train_detector import train_detector
from sgtool.eval.run_eval import evaluate_predictions
from sgtool.heads._pairs import cap_boxes
from sgtool.workspace import Workspace

METRICS = ("mR@20", "mR@50", "mR@100", "R@50")
TASKS = ("sgdet", "sgcls")
PAPER_TABLE_4 = {"note": "SGDet on Visual Genome (VG150), s in the inference step; the paper gives no s = 1 row",
                 "s=10": {"mR@20": 9.9, "mR@50": 13.1, "mR@100": 15.5},
                 "s=30": {"mR@20": 10.7, "mR@50": 13.5, "mR@100": 15.6},
                 "s=50": {"mR@20": 10.6, "mR@50": 13.7, "mR@100": 15.9}}
SOURCES = ["sgtool/heads/iwsl.py", "sgtool/heads/_relbatch.py", "sgtool/eval", "sgtool/engine/train.py",
           "sgtool/engine/objects.py"]


def rows(samples: list[int]) -> list[tuple[str, dict]]:
    """(label, inference settings) of each row: the sampled ascent per s, the exact ascent, no descent."""
    out = [(f"s={s}", {"estimator": "sampled", "samples": s}) for s in samples]
    return out + [("exact", {"estimator": "exact"}), ("no descent", {"estimator": "exact", "emd_iters": 0})]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 10, 30, 50])
    parser.add_argument("--images", type=int, default=300, help="synthetic images (70%% train)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--detector-epochs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=8, help="epochs of every iwsl model (fixed steps)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds")
    parser.add_argument("--pred-seeds", type=int, default=3, help="prediction seeds per model and row")
    parser.add_argument("--sampled-iters", type=int, default=30, help="emd_iters of the sampled rows (CPU time)")
    parser.add_argument("--sgdet-boxes", type=int, default=12, help="SGDet: the detector's top boxes per image")
    parser.add_argument("--workspace", type=Path, default=None, help="reuse this workspace (dataset 'synth')")
    parser.add_argument("--detector", default=None, help="reuse this detector run of the workspace")
    parser.add_argument("--only-seed", type=int, default=None,
                        help="train and score this training seed only; its runs go to --runs-out (no result file)")
    parser.add_argument("--runs-out", type=Path, default=None, help="with --only-seed: write its runs here (JSON)")
    parser.add_argument("--collect", type=Path, nargs="+", default=None,
                        help="summarise these --runs-out files into the result instead of running")
    return parser.parse_args(argv)


def setup(ws: Workspace, args: argparse.Namespace) -> dict:
    """The dataset and the detector (made once per workspace, on an epoch budget)."""
    info = {}
    if not (ws.root / "data" / "synth").is_dir():
        prepare_synth(ws, images=args.images, size=args.size, seed=0, workers=1)
    if args.detector is None:
        det = train_detector(ws, dataset="synth", epochs=args.detector_epochs, seed=0, device="cpu", threads=1)
        args.detector, info["detector_test"] = det.run, det.metrics
    graphs = load_prepared(ws, "synth").graphs
    info["split_images"] = {split: graphs.split_subset(split).num_images for split in ("train", "val", "test")}
    info["detector"] = args.detector
    return info


def train_model(ws: Workspace, seed: int, args: argparse.Namespace) -> str:
    overrides = [f"hidden={args.hidden}", "features=visual", "val_every=1000"]
    return train(ws, head="iwsl", task="predcls", epochs=args.epochs, overrides=overrides, seed=seed,
                 detector=args.detector, device="cpu", cache_features=True).run


def score_model(ws: Workspace, run: str, seed: int, args: argparse.Namespace, objects: dict) -> list[dict]:
    """Every row x prediction seed x task of one trained model."""
    head, _, prepared = load_trained_head(ws, run)
    test, priors = prepared.graphs.split_subset("test"), load_prepared_priors(ws, "synth")
    default_iters, out = head.config.emd_iters, []
    for label, settings in rows(args.samples):
        head.config.emd_iters = args.sampled_iters if settings["estimator"] == "sampled" else default_iters
        for key, value in settings.items():
            setattr(head.config, key, value)
        for pred_seed in range(args.pred_seeds):
            head.predict_seed = pred_seed
            record = {"row": label, "seed": seed, "pred_seed": pred_seed, "run": run, "steps": head.step}
            for task in TASKS:
                started = time.time()
                predictions = head.predict(objects[task])
                metrics = evaluate_predictions(test, predictions, task, priors, prepared.vocab).metrics
                record[task] = {m: float(metrics[m]) for m in METRICS}
                record[task].update(converged=predictions.meta["converged_share"],
                                    emd_iters=predictions.meta["emd_iters_mean"],
                                    seconds=round(time.time() - started, 2))
            out.append(record)
            print(f"seed {seed} {label} pred {pred_seed}: " + ", ".join(
                f"{t} R@50 {record[t]['R@50']:.4f} ({record[t]['seconds']} s)" for t in TASKS), file=sys.stderr, flush=True)
    return out


def per_model(runs: list[dict], label: str, task: str, metric: str) -> tuple[list[float], list[float]]:
    """Each training seed's mean over prediction seeds, and its sd over prediction seeds."""
    means, sds = [], []
    for seed in sorted({r["seed"] for r in runs}):
        values = [r[task][metric] for r in runs if r["row"] == label and r["seed"] == seed]
        means.append(statistics.fmean(values))
        sds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    return means, sds


def table(runs: list[dict], labels: list[str]) -> dict:
    out = {}
    for label in labels:
        out[label] = {}
        for task in TASKS:
            cells = {}
            for metric in METRICS:
                means, sds = per_model(runs, label, task, metric)
                base50, control = per_model(runs, "s=50", task, metric)[0], per_model(runs, "no descent", task, metric)[0]
                cells[metric] = {**summarise(means), "prediction_seed_sd": statistics.fmean(sds),
                                 "vs_s50": welch(means, base50) if label != "s=50" and base50 else None,
                                 "vs_no_descent": welch(means, control) if label != "no descent" else None}
            cells["converged"] = statistics.fmean(r[task]["converged"] for r in runs if r["row"] == label)
            out[label][task] = cells
    return out


def markdown(summary: dict) -> str:
    cols = [f"{t} {m}" for t in TASKS for m in METRICS]
    lines = ["| row | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for label, row in summary.items():
        cells = [f"{100 * row[t][m]['mean']:.2f} ± {100 * row[t][m]['sd']:.2f}" for t in TASKS for m in METRICS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def measure(args: argparse.Namespace, seeds: list[int]) -> tuple[list[dict], dict]:
    """Train and score one model per seed; every run's numbers and the setup's facts."""
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(args.workspace or Path(tmp) / "ws")
        info = setup(ws, args)
        prepared = load_prepared(ws, "synth")
        test = prepared.graphs.split_subset("test")
        objects = {task: object_source(ws, prepared, task, args.detector, "cpu")[0](test) for task in TASKS}
        objects["sgdet"] = cap_boxes(objects["sgdet"], args.sgdet_boxes)
        runs = []
        for seed in seeds:
            runs += score_model(ws, train_model(ws, seed, args), seed, args, objects)
    return runs, info


def report(args: argparse.Namespace, runs: list[dict], info: dict, seconds: float) -> dict:
    labels = [label for label, _ in rows(args.samples)]
    summary = table(runs, labels)
    numbers = {"summary": summary, "runs": runs, "selection": "the last checkpoint of every model (all columns)",
               "welch_unit": "training seed (each model's mean over prediction seeds)", **info,
               "total_seconds": round(seconds, 1)}
    seeds = sorted({r["seed"] for r in runs})
    write_result("ablate_iwsl", budgets={"iwsl_epochs": args.epochs, "iwsl_train_steps": sorted({r["steps"] for r in runs}),
                                          "detector_epochs": args.detector_epochs, "images": args.images,
                                          "sampled_emd_iters": args.sampled_iters, "sgdet_boxes": args.sgdet_boxes,
                                          "prediction_seeds": args.pred_seeds},
                 seeds=seeds, numbers=numbers, sources=SOURCES, paper=PAPER_TABLE_4,
                 notes=f"{args.pred_seeds} prediction seeds per model and row")
    print(json.dumps(summary, indent=2))
    print(markdown(summary), file=sys.stderr)
    return numbers


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()
    if args.collect:
        parts = [json.loads(path.read_text(encoding="utf-8")) for path in args.collect]
        runs = [r for part in parts for r in part["runs"]]
        seconds = max(part["seconds"] for part in parts)
        return report(args, runs, {**parts[0]["info"], "parts": [str(p) for p in args.collect]}, seconds)
    seeds = [args.only_seed] if args.only_seed is not None else list(range(args.seeds))
    runs, info = measure(args, seeds)
    if args.only_seed is None:
        return report(args, runs, info, time.time() - started)
    part = {"runs": runs, "info": info, "seconds": time.time() - started}
    if args.runs_out:
        args.runs_out.write_text(json.dumps(part) + "\n", encoding="utf-8")
    return part


if __name__ == "__main__":
    main()
