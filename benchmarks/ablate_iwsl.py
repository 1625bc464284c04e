"""IWSL sample-count ablation (the paper's Table 4): s = 1 (the ELBO), 10, 30, 50, and an emd_iters=0 control.

Each row trains the iwsl head with s importance samples (the same s in training and at inference, as the
paper's Alg. 1 uses s in both steps) for the same number of optimiser steps, on the same synthetic
dataset, with 3 seeds; the weights of the best validation epoch (PredCls val mR@50, validated every
second epoch and after the last; PredCls keeps validation free of detector runs) are then scored on the
test split in PredCls (ground-truth labels observed) and in SGCls (labels inferred by the head from the
detector's ROI features on ground-truth boxes). The control row is s = 50 with the mirror descent switched
off (pi stays at its random start), in training and at test time. Reported per row: mean and sd over seeds
of mR@20/50/100 and R@50 for both tasks, the test-time bound gain L_s(pi*) - L_s(pi_0) per image, the
training bound gain and share of batches where pi moved (last epoch), and seconds. One JSON object on
stdout; a markdown table on stderr.

The rows need ROI features, so a tiny detector is trained once per workspace for --detector-minutes (or
--workspace DIR --detector RUN reuses one); its pooled features are cached once.

    nice -n 10 python benchmarks/ablate_iwsl.py                        # about 20 min on 2 cores
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

from sgtool.data.prepared import load_prepared, load_prepared_priors
from sgtool.data.synth import prepare_synth
from sgtool.engine.train_detector import train_detector
from sgtool.engine.loop import read_log
from sgtool.engine.objects import object_source
from sgtool.engine.train import load_trained_head, train
from sgtool.eval.run_eval import evaluate_predictions
from sgtool.heads import gt_objects
from sgtool.workspace import Workspace

METRICS = ("mR@20", "mR@50", "mR@100", "R@50")
TASKS = ("predcls", "sgcls")
PAPER_TABLE_4 = {"note": "SGDet on Visual Genome (VG150), s in the inference step; the paper gives no s = 1 row",
                 "10": {"mR@20": 9.9, "mR@50": 13.1, "mR@100": 15.5},
                 "30": {"mR@20": 10.7, "mR@50": 13.5, "mR@100": 15.6},
                 "50": {"mR@20": 10.6, "mR@50": 13.7, "mR@100": 15.9}}


def rows(samples: list[int]) -> list[tuple[str, dict]]:
    """(label, head settings) of each row: every s, then the control."""
    out = [(f"s={s}", {"samples": s}) for s in samples]
    return out + [(f"s={max(samples)} emd_iters=0", {"samples": max(samples), "emd_iters": 0})]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 10, 30, 50])
    parser.add_argument("--images", type=int, default=1000, help="synthetic images (70%% train)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--detector-minutes", type=float, default=3.0)
    parser.add_argument("--workspace", type=Path, default=None, help="reuse this workspace (dataset 'synth')")
    parser.add_argument("--detector", default=None, help="reuse this detector run of the workspace")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: on a shared machine more threads spin and run slower)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return parser.parse_args(argv)


def setup(ws: Workspace, args: argparse.Namespace) -> dict:
    """The dataset and the detector (made once per workspace); what it cost."""
    started, info = time.time(), {}
    if not (ws.root / "data" / "synth").is_dir():
        prepare_synth(ws, images=args.images, size=args.size, seed=0, workers=1)
    if args.detector is None:
        det = train_detector(ws, name=None, time_budget=args.detector_minutes, seed=0, device="cpu",
                             threads=args.threads)
        args.detector = det.run
        info["detector_test"] = det.metrics
    graphs = load_prepared(ws, "synth").graphs
    info["split_images"] = {split: graphs.split_subset(split).num_images for split in ("train", "val", "test")}
    info.update(detector=args.detector, setup_seconds=round(time.time() - started, 1))
    return info


def test_objects(ws: Workspace, detector: str) -> dict:
    """The test split's objects per task, the detector run once (SGCls: its classifier on the GT boxes)."""
    prepared = load_prepared(ws, "synth")
    test = prepared.graphs.split_subset("test")
    source, _ = object_source(ws, prepared, "sgcls", detector, "cpu")
    return {"predcls": gt_objects(test), "sgcls": source(test)}


def run_row(ws: Workspace, label: str, settings: dict, seed: int, args: argparse.Namespace, objects: dict) -> dict:
    overrides = [f"{k}={v}" for k, v in settings.items()] + [f"hidden={args.hidden}", "features=visual",
                                                             "val_metric=mR@50", "val_every=2"]
    started = time.time()
    result = train(ws, head="iwsl", task="predcls", epochs=args.epochs, overrides=overrides, seed=seed,
                   detector=args.detector, device="cpu", cache_features=True)
    train_seconds = time.time() - started
    epochs = [r for r in read_log(result.path / "log.jsonl") if r.get("event") == "epoch"]
    head, _, prepared = load_trained_head(ws, result.run)
    test, priors = prepared.graphs.split_subset("test"), load_prepared_priors(ws, "synth")
    out = {"row": label, "seed": seed, "run": result.run, "steps": epochs[-1]["step"],
           "train_bound_gain": epochs[-1]["train"]["bound_gain"], "train_pi_moved": epochs[-1]["train"]["pi_moved"],
           "train_seconds": round(train_seconds, 1)}
    for task in TASKS:
        started = time.time()
        predictions = head.predict(objects[task])
        metrics = evaluate_predictions(test, predictions, task, priors, prepared.vocab).metrics
        out[task] = {m: float(metrics[m]) for m in METRICS}
        out[task]["bound_gain"] = head.predict_stats["bound_gain_per_image"]
        out[task]["predict_seconds"] = round(time.time() - started, 1)
    return out


def summarise(runs: list[dict]) -> dict:
    """mean and sd over seeds of every number of a row."""
    def stat(values: list[float]) -> dict:
        return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}

    out = {"steps": sorted({r["steps"] for r in runs}), "seeds": len(runs)}
    for key in ("train_bound_gain", "train_pi_moved", "train_seconds"):
        out[key] = stat([r[key] for r in runs])
    for task in TASKS:
        out[task] = {m: stat([r[task][m] for r in runs]) for m in (*METRICS, "bound_gain")}
    return out


def markdown(summary: dict[str, dict]) -> str:
    cols = [f"{t} {m}" for t in TASKS for m in METRICS]
    lines = ["| row | " + " | ".join(cols) + " | test gain SGCls | train gain | pi moved | steps |",
             "| --- |" + " --- |" * (len(cols) + 4)]
    for label, row in summary.items():
        cells = [f"{100 * row[t][m]['mean']:.1f} ± {100 * row[t][m]['sd']:.1f}" for t in TASKS for m in METRICS]
        cells += [f"{row['sgcls']['bound_gain']['mean']:.1f}", f"{row['train_bound_gain']['mean']:.1f}",
                  f"{row['train_pi_moved']['mean']:.2f}", "/".join(map(str, row["steps"]))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(args.workspace or Path(tmp) / "ws")
        info = setup(ws, args)
        objects = test_objects(ws, args.detector)
        runs = [run_row(ws, label, settings, seed, args, objects)
                for label, settings in rows(args.samples) for seed in range(args.seeds)]
    summary = {label: summarise([r for r in runs if r["row"] == label]) for label, _ in rows(args.samples)}
    report = {"benchmark": "ablate_iwsl", "dataset": "synth", "images": args.images, "size": args.size,
              "epochs": args.epochs, "hidden": args.hidden,
              "seeds": args.seeds, "threads": args.threads, "model_selection": "PredCls val mR@50", **info,
              "paper_table_4": PAPER_TABLE_4, "summary": summary, "runs": runs,
              "total_seconds": round(time.time() - started, 1)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(markdown(summary), file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
