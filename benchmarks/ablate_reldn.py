"""RelDN's Tables 1-2 in the paper's setting: SGDet on the synthetic confusion scenes, one row per loss set.

Task: scene-graph detection. One synthetic dataset (`prepare_synth(confusion=...)`) in which a share of
the images are instance-confusion scenes (a subject, k same-looking candidates at one distance, a line
to one) and a share proximal-ambiguity scenes (two same-class pairs on a square, the pairing a coin
flip); the confusion sets are the test images of each kind (`synth_confusion.scene_kinds`). A detector
is trained once on an EPOCH budget (`train_detector(..., epochs=N)`, no time budget); every row trains
the paper's model (`features=visual`: subject / object ROI features of that detector, the union box on
a trained copy of its backbone, spatial and semantic modules) in `task=sgdet` for the same epochs of
the same images (so the same optimiser steps, recorded from each run's log), and is scored after its
last epoch (one checkpoint rule for every row). Rows: the paper's Table 1 (L0, L0+L1, L0+L2, L0+L3,
L0+L1+L2, L0+L1+L2+L3; Table 2 is its first and last row).

Per set, row and seed: R@50 of the metric engine (SGDet), the detection AP of each link predicate
(the paper's APrel per class), partner accuracy (and its chance level) and crossed-pair / wrong-partner
false positives on the GT pairs seen through the detections (`sgtool.eval.confusion`). The script
computes mean and sample sd, median and IQR, and Welch's test of every row against L0 and against
L0+L1+L2+L3, and writes
benchmarks/results/ablate_reldn.json (`results_io`).

    nice -n 10 python benchmarks/ablate_reldn.py                         # the documented run
    nice -n 10 python benchmarks/ablate_reldn.py --images 80 --seeds 0,1 --table2-seeds "" --detector-epochs 1 --epochs 1 --rows L0,L0+L1+L2+L3   # smoke
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from results_io import summarise, welch, write_result
from sgtool.data.predictions import read_predictions
from sgtool.data.prepared import load_prepared, load_prepared_priors
from sgtool.data.recipes import load_recipe
from sgtool.data.synth import prepare_synth
from sgtool.data.synth_confusion import scene_kinds
from sgtool.engine.train import train
from sgtool.engine.train_detector import train_detector
from sgtool.eval.confusion import select_predictions, sgdet_confusion_metrics
from sgtool.eval.run_eval import evaluate_predictions
from sgtool.workspace import Workspace

TABLE2 = ("L0", "L0+L1+L2+L3")  # the paper's Table 2 rows (also Table 1's first and last)
ROWS = {"L0": "L0", "L0+L1": "L0,L1", "L0+L2": "L0,L2", "L0+L3": "L0,L3", "L0+L1+L2": "L0,L1,L2",
        "L0+L1+L2+L3": "L0,L1,L2,L3"}
LINKS = ("holds", "points at")
MEASURES = ("R@50", "AP holds", "AP points at", "partner_accuracy", "partner_chance", "wrong_partner_fp",
            "detected_boxes")
SOURCES = ["sgtool/heads/reldn.py", "sgtool/losses/contrastive.py", "sgtool/features", "sgtool/eval",
           "sgtool/data/synth.py", "sgtool/data/synth_confusion.py", "sgtool/engine/train.py",
           "sgtool/engine/train_detector.py", "sgtool/engine/visual.py", "sgtool/detect"]
# the paper (OpenImages mini val, Table 1; its 100 hand-picked confusion images, Table 2): row -> measure -> %
PAPER = {
    "Table 1": {"L0": {"R@50": 74.67, "AP holds": 41.84, "AP plays": 36.04, "AP interacts with": 40.43},
                "L0+L1": {"R@50": 75.06, "AP holds": 42.93, "AP plays": 37.55, "AP interacts with": 43.30},
                "L0+L2": {"R@50": 74.64, "AP holds": 42.24, "AP plays": 37.17, "AP interacts with": 40.47},
                "L0+L3": {"R@50": 74.88, "AP holds": 42.38, "AP plays": 38.03, "AP interacts with": 43.53},
                "L0+L1+L2": {"R@50": 75.03, "AP holds": 42.82, "AP plays": 38.58, "AP interacts with": 43.66},
                "L0+L1+L2+L3": {"R@50": 74.94, "AP holds": 43.09, "AP plays": 41.04, "AP interacts with": 44.16}},
    "Table 2": {"L0": {"R@50": 61.72, "AP holds": 26.34, "AP plays": 42.51, "AP interacts with": 21.33},
                "L0+L1+L2+L3": {"R@50": 62.65, "AP holds": 30.39, "AP plays": 42.73, "AP interacts with": 22.40}},
}


def evaluate_sets(ws: Workspace, run: str, prepared, priors: dict, sets: dict[str, np.ndarray]) -> dict:
    """Per confusion set: the SGDet confusion measures and R@50 of the run's test predictions."""
    gt_all = prepared.graphs.split_subset("test")
    pred_all = read_predictions(ws.run_dir(run) / "predictions" / "test.h5")
    links = [prepared.vocab.predicates.index(p) + 1 for p in LINKS]
    out = {}
    for name, image_ids in sets.items():
        gt = gt_all.select(np.isin(gt_all.image_ids, image_ids))
        pred = select_predictions(pred_all, np.flatnonzero(np.isin(pred_all.image_ids, image_ids)))
        metrics = sgdet_confusion_metrics(gt, pred, links)
        for e, p in zip(links, LINKS):
            metrics[f"AP {p}"] = metrics.pop(f"AP-{e}")
        metrics["R@50"] = float(evaluate_predictions(gt, pred, "sgdet", priors, prepared.vocab, ks=(50,)).metrics["R@50"])
        out[name] = {k: 100 * float(metrics[k]) for k in MEASURES}
    return out


def optimiser_steps(ws: Workspace, run: str) -> int:
    """The last optimiser step the run's log records."""
    records = [json.loads(line) for line in (ws.run_dir(run) / "log.jsonl").read_text().splitlines() if line.strip()]
    return max(int(r.get("step", 0)) for r in records)


def prepare(ws: Workspace, args: argparse.Namespace) -> tuple:
    """The dataset, its confusion sets (test image ids per kind) and the detector (trained once, epochs)."""
    confusion = {"instance_fraction": args.instance_fraction, "proximal_fraction": args.proximal_fraction}
    if not (ws.root / "data" / "synth").is_dir():
        prepare_synth(ws, images=args.images, seed=args.data_seed, workers=1, confusion=confusion)
    prepared, priors = load_prepared(ws, "synth"), load_prepared_priors(ws, "synth")
    kinds = scene_kinds({**load_recipe("synth")["confusion"], **confusion}, args.data_seed, args.images)
    test_ids = prepared.graphs.split_subset("test").image_ids
    sets = {kind: test_ids[kinds[test_ids - 1] == kind] for kind in ("instance", "proximal")}
    if (ws.run_dir("detector") / "metrics.json").is_file():
        detector = json.loads((ws.run_dir("detector") / "metrics.json").read_text())
    else:
        detector = train_detector(ws, dataset="synth", name="detector", epochs=args.detector_epochs,
                                  seed=args.data_seed, device="cpu", threads=1).metrics
    return prepared, priors, sets, {"epochs": args.detector_epochs, "test": detector}


def schedule(args: argparse.Namespace) -> list[tuple[int, list[str]]]:
    """(seed, rows) rounds: every row at --seeds, the Table 2 rows (L0, L0+L1+L2+L3) also at --table2-seeds."""
    table2 = [r for r in args.rows if r in TABLE2]
    seeds = sorted(set(args.seeds) | set(args.table2_seeds))
    return [(seed, list(args.rows) if seed in args.seeds else table2) for seed in seeds]


def run_round(ws: Workspace, args: argparse.Namespace, seed: int, rows: list[str], evaluate) -> dict:
    """One seed of the given rows (a finished run of an earlier call is kept): row -> (measures per set, steps)."""
    common = [f"val_every={args.epochs}", f"batch_size={args.batch_size}", "features=visual", "val_metric=R@50"]
    out = {}
    for row in rows:
        name = f"{row.replace('+', '-')}-s{seed}"
        if not (ws.run_dir(name) / "metrics.json").is_file():
            train(ws, head="reldn", name=name, task="sgdet", detector="detector", losses=ROWS[row],
                  epochs=args.epochs, seed=seed, device="cpu", overrides=common,
                  cache_features=not any((ws.root / "runs").glob("L0*")))
        out[row] = (evaluate(name), optimiser_steps(ws, name))
    return out


def statistics_of(per_seed: dict) -> dict:
    """Per row, set and measure: mean / sample sd (results_io), median, IQR; Welch of every row against L0 and
    against L0+L1+L2+L3."""
    out: dict = {}
    for row, sets in per_seed.items():
        out[row] = {}
        for kind, measures in sets.items():
            out[row][kind] = {}
            for m, values in measures.items():
                stats = summarise(values)
                if values:
                    q1, med, q3 = np.percentile(values, [25, 50, 75])
                    stats.update(median=float(med), iqr=[float(q1), float(q3)])
                for other in TABLE2:  # every row against L0 and against all four losses
                    if row != other and other in per_seed:
                        stats[f"vs_{other}"] = welch(values, per_seed[other][kind][m])
                out[row][kind][m] = stats
    return out


def markdown(numbers: dict) -> str:
    cols = ("R@50", "AP holds", "AP points at", "partner_accuracy", "wrong_partner_fp")
    lines = []
    for kind in ("instance", "proximal"):
        lines += [f"\n{kind} set, SGDet, mean ± sd (median) over the seeds (n); * = Welch p < 0.05 against L0:",
                  "| row | n | " + " | ".join(cols) + " |", "| --- | --- |" + " --- |" * len(cols)]
        for row, sets in numbers.items():
            cells = []
            for c in cols:
                s = sets[kind][c]
                mark = "*" if s.get("vs_L0", {}).get("resolved") else ""
                cells.append(f"{s['mean']:.1f} ± {s['sd']:.1f} ({s['median']:.1f}){mark}")
            lines.append(f"| {row} | {sets[kind]['R@50']['n']} | " + " | ".join(cells) + " |")
        lines.append(f"\nchance partner accuracy: {numbers['L0'][kind]['partner_chance']['mean']:.1f}" if "L0" in numbers
                     else "")
    return "\n".join(lines)


def record(args: argparse.Namespace, per_seed: dict, steps: dict, context: dict, seeds_done: list[int]) -> dict:
    """The statistics so far, written to benchmarks/results/ablate_reldn.json (after every seed round)."""
    numbers = {"rows": statistics_of(per_seed), "optimiser_steps": steps, **context,
               "seeds_per_row": {row: len(v) for row, v in steps.items()}}
    planned = sorted(set(args.seeds) | set(args.table2_seeds))
    notes = args.notes + ("" if seeds_done == planned else f" Partial: seeds {seeds_done} of {planned} finished.")
    budgets = {"detector_epochs": args.detector_epochs, "reldn_epochs": args.epochs,
               "reldn_optimiser_steps": sorted({s for v in steps.values() for s in v})}
    write_result("ablate_reldn", budgets=budgets, seeds=seeds_done, numbers=numbers, sources=SOURCES, paper=PAPER,
                 notes=notes.strip())
    return numbers


def run(args: argparse.Namespace, root: Path) -> dict:
    ws = Workspace(root)
    started = time.time()
    prepared, priors, sets, detector = prepare(ws, args)
    context = {"detector": detector, "set_images": {k: int(len(v)) for k, v in sets.items()}, "images": args.images,
               "data_seed": args.data_seed, "batch_size": args.batch_size,
               "confusion": {"instance_fraction": args.instance_fraction, "proximal_fraction": args.proximal_fraction}}
    per_seed: dict = {row: {kind: {m: [] for m in MEASURES} for kind in sets} for row in args.rows}
    steps: dict = {row: [] for row in args.rows}
    numbers, done = {}, []
    for seed, rows in schedule(args):  # a cut run keeps every finished round in the JSON
        for row, (values, n_steps) in run_round(ws, args, seed, rows,
                                                lambda run: evaluate_sets(ws, run, prepared, priors, sets)).items():
            for kind, measures in values.items():
                for m, v in measures.items():
                    per_seed[row][kind][m].append(v)
            steps[row].append(n_steps)
        done.append(seed)
        context["wall_seconds"] = round(time.time() - started, 1)
        numbers = record(args, {r: v for r, v in per_seed.items() if steps[r]}, {r: v for r, v in steps.items() if v},
                         context, done)
    return numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=400, help="synthetic images to render")
    parser.add_argument("--instance-fraction", type=float, default=0.45)
    parser.add_argument("--proximal-fraction", type=float, default=0.45)
    parser.add_argument("--detector-epochs", type=int, default=12, help="detector epochs (trained once)")
    parser.add_argument("--epochs", type=int, default=3, help="reldn epochs, every row")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=[0, 1, 2],
                        help="seeds of every row")
    parser.add_argument("--table2-seeds", type=lambda t: [int(x) for x in t.split(",") if x], default=list(range(10)),
                        help="seeds of the Table 2 rows (L0, L0+L1+L2+L3) besides --seeds")
    parser.add_argument("--rows", type=lambda t: t.split(","), default=list(ROWS))
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--workspace", type=Path, default=None,
                        help="keep the workspace here; a later call with it reuses its data, detector and finished runs")
    parser.add_argument("--notes", default="", help="a sentence stored with the result (e.g. why a size was cut)")
    args = parser.parse_args(argv)
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; rows: {', '.join(ROWS)}")
    torch.set_num_threads(args.threads)
    if args.workspace is not None:
        numbers = run(args, args.workspace)
    else:
        with tempfile.TemporaryDirectory(prefix="sgtool-ablate-reldn-") as tmp:
            numbers = run(args, Path(tmp))
    print(markdown(numbers["rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
