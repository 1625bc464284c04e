"""Every relation head in PredCls, SGCls and SGDet on one prepared dataset: one JSON object + a markdown table.

Each head is trained once (on ground-truth pairs, as every task trains it) with `sgtool train`;
its SGCls and SGDet numbers come from the same weights as `sgtool train --from RUN --task T` scores
them (the task's objects: the detector's classified GT boxes, the GT boxes alone for a head that
labels objects from boxes, the detections), each run scored by `sgtool eval` on the test split. Needs a workspace holding the dataset and a detector run, e.g. after
`sgtool -w WS demo`:

    nice python benchmarks/heads_table.py --workspace WS --dataset demo --epochs 3
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from sgtool.engine.train import retask, train
from sgtool.eval.run_eval import run_eval
from sgtool.heads import TrainableHead, get_head
from sgtool.workspace import Workspace

HEADS = ("freq", "tensor", "reldn", "nodis", "iwsl")
TASKS = ("predcls", "sgcls", "sgdet")
METRICS = ("R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100")


def head_rows(ws: Workspace, head: str, dataset: str, epochs: int, seed: int, detector: str | None,
              features: str) -> list[dict]:
    """Train in PredCls, score the same weights in SGCls / SGDet (`train --from`), `eval` each on test."""
    head_cls = get_head(head)
    options: dict = {"epochs": epochs} if issubclass(head_cls, TrainableHead) else {}
    if "features" in head_cls.Config.__dataclass_fields__:
        options["overrides"] = [f"features={features}"]
    started = time.time()
    trained = train(ws, head=head, dataset=dataset, task="predcls", seed=seed, device="cpu", detector=detector,
                    **options)
    seconds = round(time.time() - started, 1)
    rows = []
    for task in TASKS:
        run = trained.run if task == "predcls" else retask(ws, trained.run, task=task, detector=detector).run
        metrics = run_eval(ws, run=run, split="test").result.metrics
        rows.append({"head": head, "task": task, "run": run, "train_seconds": seconds,
                     **{m: metrics[m] for m in METRICS}})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| head | task | " + " | ".join(METRICS) + " |", "| --- " * (len(METRICS) + 2) + "|"]
    for row in sorted(rows, key=lambda r: (TASKS.index(r["task"]), HEADS.index(r["head"]))):
        lines.append(f"| {row['head']} | {row['task']} | " + " | ".join(f"{100 * row[m]:.1f}" for m in METRICS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--dataset", default=None, help="prepared dataset (default: the latest)")
    parser.add_argument("--detector", default=None, help="detector run (default: the latest)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--heads", default=",".join(HEADS))
    parser.add_argument("--features", default="spatial", help="spatial | visual | auto, for heads that take it")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ws = Workspace(args.workspace)
    dataset = args.dataset or ws.latest_dataset()
    rows = [row for head in args.heads.split(",")
            for row in head_rows(ws, head, dataset, args.epochs, args.seed, args.detector, args.features)]
    table = markdown(rows)
    print(json.dumps({"benchmark": "heads_table", "dataset": dataset, "epochs": args.epochs, "seed": args.seed,
                      "features": args.features,
                      "rows": rows, "table_md": table}, indent=2))
    print(table, file=sys.stderr)


if __name__ == "__main__":
    main()
