"""Relation-head ablation on synthetic data (PredCls): one JSON object on stdout, a markdown table on stderr.

Prepares the synthetic dataset in a temporary workspace (or --workspace), trains every row of ROWS
with a fixed epoch budget (spatial, pixel-free variants), evaluates each run on the test split and
reports R@50/100, mR@50/100, ng-R@50 and free-k R@50 (kfree-R@50: every predicate of every pair
ranked, micro recall over the split, the VRD literature's "k free"), plus the claims checked:

    (a) tensor rank 5 beats tensor rank 1 on free-k R@50 (Hwang et al. 2018), checked with the label
        embeddings as inputs (the default spatial variant) and without them (geometry only)

A row is (label, keyword arguments of `sgtool.engine.train.train`): adding a head is one line.

    nice python benchmarks/ablate_heads.py --images 2000 --epochs 6
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from sgtool.data.synth import prepare_synth
from sgtool.engine.train import train
from sgtool.eval.run_eval import run_eval
from sgtool.workspace import Workspace

SPATIAL = ["features=spatial"]
NO_LABELS = [*SPATIAL, "class_embedding=0"]  # the network sees box geometry only, as the paper's sees pixels only
ROWS: list[tuple[str, dict]] = [
    ("freq", {"head": "freq"}),
    ("tensor R=1", {"head": "tensor", "rank": 1, "overrides": SPATIAL}),
    ("tensor R=5", {"head": "tensor", "rank": 5, "overrides": SPATIAL}),
    ("tensor R=1 no-labels", {"head": "tensor", "rank": 1, "overrides": NO_LABELS}),
    ("tensor R=5 no-labels", {"head": "tensor", "rank": 5, "overrides": NO_LABELS}),
]
METRICS = ("R@50", "R@100", "mR@50", "mR@100", "ng-R@50", "kfree-R@50")


def run_row(ws: Workspace, label: str, kwargs: dict, epochs: int, seed: int) -> dict:
    from sgtool.heads import TrainableHead, get_head

    options = dict(kwargs)
    if issubclass(get_head(options["head"]), TrainableHead):
        options.setdefault("epochs", epochs)
    started = time.time()
    trained = train(ws, task="predcls", seed=seed, device="cpu", **options)
    train_seconds = time.time() - started
    outcome = run_eval(ws, run=trained.run, split="test")
    metrics = outcome.result.metrics
    return {"label": label, "run": trained.run, "options": {k: v for k, v in options.items() if k != "overrides"},
            "overrides": options.get("overrides", []), "train_seconds": round(train_seconds, 1),
            "test": {name: metrics.get(name) for name in METRICS}, "val_mR@50": trained.metrics.get("mR@50")}


def claims(rows: list[dict]) -> dict:
    by_label = {row["label"]: row["test"] for row in rows}
    out = {}
    for suffix in ("", " no-labels"):
        one, five = f"tensor R=1{suffix}", f"tensor R=5{suffix}"
        if {one, five} <= set(by_label):
            r1, r5 = by_label[one]["kfree-R@50"], by_label[five]["kfree-R@50"]
            key = "a_rank5_beats_rank1_on_free_k_R@50" + suffix.replace(" ", "_")
            out[key] = {"rank1": r1, "rank5": r5, "holds": bool(r5 > r1)}
    return out


def markdown(rows: list[dict]) -> str:
    lines = ["| head | " + " | ".join(METRICS) + " | train s |", "| --- " * (len(METRICS) + 2) + "|"]
    for row in rows:
        cells = [f"{100 * row['test'][m]:.2f}" if row["test"][m] is not None else "-" for m in METRICS]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {row['train_seconds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="synthetic images to prepare")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of every trainable head (triplet phase)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--workspace", type=Path, default=None, help="keep the workspace here (default: a temp folder)")
    parser.add_argument("--only", action="append", default=None, help="run only this row label (repeatable)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="sgtool-ablate-") as tmp:
        ws = Workspace(args.workspace or Path(tmp) / "ws")
        prepared = prepare_synth(ws, images=args.images, seed=args.seed, workers=1)
        rows = [run_row(ws, label, kwargs, args.epochs, args.seed)
                for label, kwargs in ROWS if not args.only or label in args.only]
    table = markdown(rows)
    result = {"benchmark": "ablate_heads", "task": "predcls", "dataset": "synth", "images": args.images,
              "splits": prepared.graphs.counts_by_split(), "epochs": args.epochs, "seed": args.seed,
              "threads": args.threads, "rows": rows, "claims": claims(rows), "table_md": table}
    print(json.dumps(result, indent=2))
    print(table, file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
