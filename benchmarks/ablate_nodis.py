"""NODIS ablation (the paper's Table 2) and integration-time sweep (its Fig. 3) on synthetic data.

Table 2: rows ode = none / pair / object / both (which neural ODE runs; a switched-off one is the
identity), columns SGGen (sgtool's SGDet), SGCls and PredCls R@20 / R@50 / R@100 on the test split,
`--seeds` seeds, mean and sample sd, Welch's test for the rows the paper compares; a fifth row
`both_noskip` is model 4 in the official code's form (detector_skip = false: the object logits are the
O-ODE's alone), compared with `both` and with the detector in SGCls object accuracy. Every run trains
the same epochs on the same images with the same batch size (the same optimiser steps) and keeps its
FINAL weights (val_every = epochs: only the last epoch is validated, so it is the kept one). A head is
trained once per (row, seed) in SGCls (its training never depends on the task: GT pairs, the frozen
detector's class distributions into the O-ODE, GT labels into the pair embeddings) and the same
weights are scored in PredCls and SGDet with `retask` (as `sgtool train --from RUN --task ...`).
Fig. 3: ode = both, t_end in `--t-end` (from 0.05), the same seeds: SGCls R@50 on the VALIDATION
images, the forward NFE of each ODE per val image and the wall-clock of each ODE's solves per val
image (one thread, after one warm-up pass); the t_end = 1.5 runs are Table 2's `both` runs.

The detector trains on an epoch budget (`--detector-epochs`), once per workspace (`--workspace DIR`
keeps it, the dataset and the cached ROI features for the next call); the heads use its frozen
backbone's ROI features and, in training, its class distributions of the GT boxes.

    nice -n 10 python benchmarks/ablate_nodis.py --workspace /tmp/nodis-ws      # writes benchmarks/results/
    # the same numbers from two processes: two `--queue` calls into one workspace (start the second once
    # WORKSPACE/claims exists, i.e. the detector and the caches are written), then `--collect` writes the JSON
    python benchmarks/ablate_nodis.py --images 60 --epochs 1 --seeds 2 --t-end 0.05 1.5 --no-write  # a quick look
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from results_io import summarise, welch, write_result
from sgtool.data.predictions import read_predictions
from sgtool.data.prepared import load_prepared, load_prepared_priors
from sgtool.data.synth import prepare_synth
from sgtool.detect import load_detector
from sgtool.engine.objects import detector_source
from sgtool.engine.train import load_trained_head, retask, train
from sgtool.engine.train_detector import train_detector
from sgtool.engine.visual import cache_dataset_features, dataset_source
from sgtool.eval.run_eval import evaluate_predictions
from sgtool.heads import ObjectPredictions
from sgtool.workspace import Workspace

ROWS = ("none", "pair", "object", "both")  # the paper's Table 2 order: models 1-4
NO_SKIP = "both_noskip"  # model 4 in the official form: detector_skip = false (docs/methods/nodis.md, deviation 10)
ROW_OPTIONS = {**{row: [f"ode={row}"] for row in ROWS}, NO_SKIP: ["ode=both", "detector_skip=false"]}
TASKS = ("sgdet", "sgcls", "predcls")
KS = (20, 50, 100)
T_TABLE = 1.5
DATASET = "nodis-synth"
DETECTOR = "nodis-detector"
COMPARED = [("object", "none"), ("both", "pair"), ("pair", "none"), ("both", "object"), ("both", "none"),
            ("both", NO_SKIP)]
SOURCES = ["sgtool/heads/nodis.py", "sgtool/heads/_relbatch.py", "sgtool/engine/train.py", "sgtool/engine/objects.py",
           "sgtool/eval", "sgtool/detect", "sgtool/features", "sgtool/data/synth.py"]
PAPER = {  # Cong et al., ECCV 2020 (Visual Genome): Table 2 [R@50, R@100] and Sect. 4.4 / Fig. 3
    "table2": {"none": {"sgdet": [27.1, 30.4], "sgcls": [35.3, 36.1], "predcls": [65.4, 67.4]},
               "pair": {"sgdet": [27.3, 30.6], "sgcls": [35.9, 36.6], "predcls": [65.9, 67.9]},
               "object": {"sgdet": [27.3, 30.7], "sgcls": [41.4, 42.5], "predcls": [65.4, 67.5]},
               "both": {"sgdet": [27.7, 31.0], "sgcls": [41.9, 42.9], "predcls": [66.0, 67.9]}},
    "fig3": {"t_end": [0.05, 3.0], "sgcls_R@50": "56.5 at t_end = 0.05 rising to 62.0 at 1.5, then falling",
             "nfe_object": [8.0, 26.2], "nfe_pair": [8.0, 24.0], "seconds_pair_per_image": [0.06, 0.21],
             "seconds_object_per_image": "< 1e-4", "images": "5,000 training images, one GTX 1080 Ti"},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=None, help="keep dataset, detector and features here")
    parser.add_argument("--detector-epochs", type=int, default=16)
    parser.add_argument("--images", type=int, default=300, help="synthetic images (70%% train, 10%% val, 20%% test)")
    parser.add_argument("--size", type=int, default=128, help="synthetic image side (pixels)")
    parser.add_argument("--epochs", type=int, default=3, help="head epochs, the same for every run")
    parser.add_argument("--batch-size", type=int, default=16, help="head batch size (images), the same for every run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--t-end", type=float, nargs="+", default=[0.05, 0.5, 1.5, 3.0])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--bg-ratio", type=float, default=2.0, help="unannotated pairs per annotated pair in training")
    parser.add_argument("--max-boxes", type=int, default=12, help="SGDet detections kept per image before pairing")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads while training")
    parser.add_argument("--only", nargs="+", default=None, metavar="ROW:SEED:T_END",
                        help="train just these runs into --workspace and write nothing (to share the work out)")
    parser.add_argument("--queue", action="store_true",
                        help="train the runs of the full job list, longest first, that no other --queue process "
                             "has claimed (claims: folders under WORKSPACE/claims) and write nothing")
    parser.add_argument("--worker", default=None, metavar="K/N",
                        help="train every N-th run of the full job list from the K-th (0-based) and write nothing")
    parser.add_argument("--no-write", action="store_true", help="print the JSON, do not write benchmarks/results/")
    parser.add_argument("--collect", action="store_true",
                        help="train nothing: score the runs of --workspace (a Fig. 3 point lists the seeds it holds)")
    parser.add_argument("--notes", default="", help="how the runs were made, for the result file")
    return parser.parse_args()


def prepared_workspace(ws: Workspace, args: argparse.Namespace) -> None:
    """The dataset, the detector run (trained once per workspace, on an epoch budget) and its pooled ROI
    feature caches (written once, before any worker trains)."""
    if not (ws.root / "data" / DATASET).is_dir():
        prepare_synth(ws, images=args.images, size=args.size, seed=0, name=DATASET, workers=1)
    if not (ws.run_dir(DETECTOR) / "metrics.json").is_file():
        train_detector(ws, dataset=DATASET, name=DETECTOR, epochs=args.detector_epochs, seed=0, device="cpu",
                       threads=args.threads)
    prepared = load_prepared(ws, DATASET)
    cache_dataset_features(ws, prepared, dataset_source(prepared, load_detector(ws, DETECTOR, prepared.vocab, "cpu")))


def run_name(row: str, seed: int, t_end: float) -> str:
    return f"nodis-{row}-t{t_end:g}-s{seed}"


def train_run(ws: Workspace, args: argparse.Namespace, row: str, seed: int, t_end: float) -> None:
    """Train one SGCls run of a row (final weights) and, at the table's t_end, score it in SGDet and PredCls too."""
    name = run_name(row, seed, t_end)
    if not (ws.run_dir(name) / "run.json").is_file():
        train(ws, head="nodis", dataset=DATASET, task="sgcls", name=name, epochs=args.epochs, t_end=t_end,
              overrides=[*ROW_OPTIONS[row], "features=visual", "front_end=lstm", f"hidden={args.hidden}", "embed=32",
                         "mask_size=16", "val_metric=R@50", f"val_every={args.epochs}", f"bg_ratio={args.bg_ratio:g}",
                         f"batch_size={args.batch_size}",
                         f"max_boxes={args.max_boxes}"],
              detector=DETECTOR, seed=seed, device="cpu", cache_features=True)
    for task in TASKS[::2] if t_end == T_TABLE else ():
        if not (ws.run_dir(f"{name}-{task}") / "run.json").is_file():
            retask(ws, name, task=task, name=f"{name}-{task}", device="cpu")


def scores(ws: Workspace, run: str, task: str, split: str = "test") -> dict:
    """R@K of a run's predictions on a split, and what the head recorded (object accuracies, NFE)."""
    prepared = load_prepared(ws, DATASET)
    graphs = prepared.graphs.split_subset(split)
    predictions = read_predictions(ws.run_dir(run) / "predictions" / f"{split}.h5")
    metrics = evaluate_predictions(graphs, predictions, task, load_prepared_priors(ws, DATASET), prepared.vocab,
                                   ks=KS).metrics
    out = {f"R@{k}": 100 * float(metrics[f"R@{k}"]) for k in KS}
    head_meta = predictions.meta.get("head_meta") or {}
    for key in ("object_accuracy", "detector_object_accuracy"):
        if head_meta.get(key) is not None:
            out[key] = 100 * float(head_meta[key])
    out.update({key: float(head_meta[key]) for key in ("nfe_object", "nfe_pair") if key in head_meta})
    return out


def seconds_per_image(ws: Workspace, run: str, split: str = "val") -> dict:
    """Wall-clock of the O-ODE's and the P-ODE's solves per image of a split (SGCls objects, one thread;
    a warm-up pass over the split's first two images first)."""
    head, _, prepared = load_trained_head(ws, run)
    graphs = prepared.graphs.split_subset(split)
    objects = detector_source(load_detector(ws, DETECTOR, prepared.vocab, "cpu"), prepared, "sgcls")(graphs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        head.predict(head_images(objects, 2))  # warm-up
        head.model.solve_seconds = [0.0, 0.0]
        head.predict(objects)
    finally:
        torch.set_num_threads(threads)
    per_image = np.array(head.model.solve_seconds) / max(graphs.num_images, 1)
    return {"seconds_object": float(per_image[0]), "seconds_pair": float(per_image[1])}


def optimiser_steps(ws: Workspace, run: str) -> int:
    """The optimiser steps a run took (its last epoch record's step count)."""
    records = [json.loads(line) for line in (ws.run_dir(run) / "log.jsonl").read_text().splitlines()]
    return max(int(r.get("step", 0)) for r in records if r.get("event") == "epoch")


def head_images(objects: ObjectPredictions, count: int) -> ObjectPredictions:
    """The objects of the first `count` images."""
    rows = slice(0, int(objects.box_offsets[min(count, objects.num_images)]))
    return dataclasses.replace(objects, image_ids=objects.image_ids[:count], box_offsets=objects.box_offsets[:count + 1],
                               boxes=objects.boxes[rows], labels=objects.labels[rows], scores=objects.scores[rows],
                               class_scores=None if objects.class_scores is None else objects.class_scores[rows])


def table2(ws: Workspace, seeds: range) -> dict:
    """Per row and task: each score's values over the seeds with mean and sample sd."""
    out = {}
    for row in ROW_OPTIONS:
        runs = {task: [scores(ws, f"{run_name(row, s, T_TABLE)}{'' if task == 'sgcls' else '-' + task}", task)
                       for s in seeds] for task in TASKS}
        out[row] = {task: {key: summarise([r[key] for r in rs]) for key in rs[0]} for task, rs in runs.items()}
    return out


def verdicts(table: dict) -> dict:
    """Welch's test of R@50 and R@100 for the row pairs the paper's Table 2 compares, per task."""
    return {f"{a} vs {b}": {task: {key: welch(table[a][task][key]["values"], table[b][task][key]["values"])
                                   for key in ("R@50", "R@100")} for task in TASKS} for a, b in COMPARED}


def object_verdicts(table: dict) -> dict:
    """Welch's test of SGCls object accuracy: each row against the detector's own, O-ODE rows against the rest,
    and the detector skip against the official form."""
    accuracy = {row: table[row]["sgcls"]["object_accuracy"]["values"] for row in ROW_OPTIONS}
    detector = table["none"]["sgcls"]["detector_object_accuracy"]["values"]
    out = {f"{row} vs detector": welch(accuracy[row], detector) for row in ROW_OPTIONS}
    out.update({f"{a} vs {b}": welch(accuracy[a], accuracy[b])
                for a, b in (("object", "none"), ("both", "pair"), ("both", NO_SKIP))})
    return out


def sweep_verdicts(points: list[dict]) -> dict:
    """Welch's test of val SGCls R@50 between neighbouring t_end points of Fig. 3."""
    return {f"t_end {b['t_end']:g} vs {a['t_end']:g}": welch(b["R@50"]["values"], a["R@50"]["values"])
            for a, b in zip(points, points[1:])}


def fig3(ws: Workspace, t_ends: list[float], seeds: range) -> list[dict]:
    """Per t_end: val SGCls R@50, NFE and solve seconds per val image of each ODE, over the seeds."""
    points = []
    for t_end in t_ends:
        done = [s for s in seeds if complete(ws, run_name("both", s, t_end))]  # a run cut off is left out, and said
        runs = [{**scores(ws, run_name("both", s, t_end), "sgcls", "val"),
                 **seconds_per_image(ws, run_name("both", s, t_end))} for s in done]
        keys = ("R@50", "object_accuracy", "nfe_object", "nfe_pair", "seconds_object", "seconds_pair")
        points.append({"t_end": t_end, "seeds": done, **{key: summarise([r[key] for r in runs]) for key in keys}})
    return points


def train_share(ws: Workspace, args: argparse.Namespace, jobs: list[tuple[str, int, float]]) -> None:
    """Train this process's share of the jobs: --only's, every N-th (--worker K/N), or (--queue) each job
    not yet claimed by another process, claimed just before it trains, in a rough longest-first order
    (an ODE's cost grows with t_end; the order never changes a number)."""
    if args.queue:
        (ws.root / "claims").mkdir(exist_ok=True)
        cost = {"none": 0.2, "object": 1.0, "pair": 2.5, "both": 3.0, NO_SKIP: 3.0}
        for row, seed, t_end in sorted(jobs, key=lambda job: -cost[job[0]] * (1 + job[2])):
            if claimed(ws, run_name(row, seed, t_end)):
                train_run(ws, args, row, seed, t_end)
        return
    first, step = (int(n) for n in args.worker.split("/")) if args.worker else (0, 1)
    chosen = [job.split(":") for job in args.only] if args.only else jobs[first::step]
    for row, seed, t_end in chosen:
        train_run(ws, args, row, int(seed), float(t_end))


def claimed(ws: Workspace, run: str) -> bool:
    """Whether this process claims the run: the first to create its folder under WORKSPACE/claims."""
    try:
        (ws.root / "claims" / run).mkdir()
    except FileExistsError:
        return False
    return True


def complete(ws: Workspace, run: str) -> bool:
    path = ws.run_dir(run) / "run.json"
    return path.is_file() and json.loads(path.read_text()).get("status") == "complete"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(args.workspace or Path(tmp) / "ws")
        prepared_workspace(ws, args)
        seeds = range(args.seeds)
        t_ends = sorted(set(args.t_end) | {T_TABLE})
        jobs = [(row, s, T_TABLE) for s in seeds for row in ROW_OPTIONS]
        jobs += [("both", s, t) for s in seeds for t in t_ends if t != T_TABLE]
        if args.only or args.worker or args.queue:
            train_share(ws, args, jobs)
            return
        for row, seed, t_end in jobs if not args.collect else ():
            train_run(ws, args, row, seed, t_end)
        steps = sorted({optimiser_steps(ws, run_name(row, s, t)) for row, s, t in jobs
                        if complete(ws, run_name(row, s, t))})  # one value: the same in every run
        table = table2(ws, seeds)
        sweep = fig3(ws, t_ends, seeds)
        numbers = {"table2": table, "welch": verdicts(table), "welch_object_accuracy": object_verdicts(table),
                   "fig3": sweep, "welch_fig3": sweep_verdicts(sweep),
                   "detector": json.loads((ws.run_dir(DETECTOR) / "metrics.json").read_text()).get("metrics"),
                   "seconds_total": round(time.perf_counter() - started, 1)}
    budgets = {"head_epochs": args.epochs, "head_steps_per_run": steps,
               "detector_epochs": args.detector_epochs, "batch_size": args.batch_size, "images": args.images, "size": args.size,
               "hidden": args.hidden, "bg_ratio": args.bg_ratio, "sgdet_max_boxes": args.max_boxes, "front_end": "lstm",
               "checkpoint": "final weights (val_every = epochs)", "table_split": "test", "fig3_split": "val",
               "t_end_table": T_TABLE, "solver": "dopri5, atol = rtol = 0.01", "threads": args.threads}
    if args.no_write:
        print(json.dumps({"budgets": budgets, "numbers": numbers}, indent=2))
        return
    path = write_result("ablate_nodis", budgets=budgets, seeds=list(seeds), numbers=numbers, sources=SOURCES,
                        paper=PAPER, notes=args.notes or "Table 2 rows x SGDet (the paper's SGGen) / SGCls / PredCls "
                                                         "and Fig. 3 on sgtool's synthetic data; R@K in %; sd: sample sd over seeds.")
    print(path)


if __name__ == "__main__":
    main()
