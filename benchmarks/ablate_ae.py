"""The ae auto-encoder's ablations as its paper (Lu & Dubbelman) runs them: every row of Tables 1-3.

Rows: the full model (max-nodes 4, Eq. 5 auxiliary loss, MS-SSIM on the refined image), the paper's
supervised baseline and our stronger one (Table 1); max-nodes 5 / 6 / 8 (Table 2); without the
auxiliary loss, SSIM instead of MS-SSIM, the loss on the coarse image with MS-SSIM and with SSIM
(Table 3). Every row trains the same number of optimiser steps, for the same seeds (a seed that ends
on the blank-drawing plateau is restarted with the next unused seed, at most `plateau_restarts`
times per row, and the count is reported), and is scored on the test split: precision / recall / F1,
mean ± sd over the seeds (population sd), beside the paper's numbers. Prints ONE JSON object (also
written to --out), then a markdown table.

Budgets (per seed):
  small: 400 steps of batch 32 on <= 4,000 training images, lr x 4 of the paper's (2e-3 / 1.2e-3:
         the CPU scaling, few steps of a quarter batch), 3 seeds, 2 plateau restarts per row;
         sized for about an hour with --jobs 2 on 2 idle CPU cores (not yet run in full: README).
  paper: the paper's batch 128, lr 5e-4 (baseline 3e-4), 30 epochs of 40,000 training images
         (9,360 steps, lr / 10 for the last third), 10 seeds; needs a 50,000-image dataset.

    python benchmarks/ablate_ae.py -w WS --dataset shapes --budget small --jobs 2 --out ablate.json
    python benchmarks/ablate_ae.py -w WS --budget small --rows full,k5 --seeds 1 --steps 50   # a smoke
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROWS = {  # name: (AEConfig settings, the paper's F1 ± sd, where the paper reports it)
    "full": ({}, (67.9, 5.4), "Tables 1-3: ours, max-nodes 4, L_aux, MS-SSIM on the refined image"),
    "supervised-paper": ({"supervised": True, "baseline": "paper"}, (61.3, 5.9), "Table 1: baseline"),
    "supervised-strong": ({"supervised": True, "baseline": "strong"}, None, "ours: KL + L1 coordinates + CE"),
    "k5": ({"max_nodes": 5}, (54.6, 6.9), "Table 2"),
    "k6": ({"max_nodes": 6}, (49.9, 5.9), "Table 2"),
    "k8": ({"max_nodes": 8}, (41.7, 2.8), "Table 2"),
    "no-aux": ({"aux_weight": 0.0}, (63.2, 8.2), "Table 3: without L_aux"),
    "ssim": ({"recon": "ssim"}, (50.3, 17.7), "Table 3: SSIM on the refined image"),
    "coarse-msssim": ({"loss_on": "coarse"}, (51.7, 7.1), "Table 3: MS-SSIM on the coarse image"),
    "coarse-ssim": ({"loss_on": "coarse", "recon": "ssim"}, (12.1, 9.7), "Table 3: SSIM on the coarse image"),
}
BUDGETS = {
    "small": {"steps": 400, "batch_size": 32, "train_images": 4000, "seeds": 3, "plateau_restarts": 2,
              "lr": {"ae": 2e-3, "supervised": 1.2e-3}},
    "paper": {"steps": 9360, "batch_size": 128, "train_images": 40000, "seeds": 10, "plateau_restarts": 3,
              "lr": {"ae": 5e-4, "supervised": 3e-4}},
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-w", "--workspace", required=True, help="workspace holding a prepared shapes dataset")
    p.add_argument("--dataset", default="shapes")
    p.add_argument("--budget", choices=tuple(BUDGETS), default="small")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    p.add_argument("--seeds", type=int, help="override the budget's number of seeds (a reduced run)")
    p.add_argument("--steps", type=int, help="override the budget's steps per seed (a reduced run)")
    p.add_argument("--plateau-restarts", type=int, help="override the budget's plateau restarts per row")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--jobs", type=int, default=1, help="rows trained at the same time, one torch thread each")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    return p.parse_args(argv)


def row_overrides(row: str, budget: dict, steps: int, seeds: int) -> list[str]:
    settings, _, _ = ROWS[row]
    lr = budget["lr"]["supervised" if settings.get("supervised") else "ae"]
    plain = {k: v for k, v in settings.items() if k != "supervised"}
    common = {"steps": steps, "seeds": seeds, "batch_size": budget["batch_size"], "lr": lr, "threads": 1,
              "train_images": budget["train_images"], "plateau_restarts": budget["plateau_restarts"],
              "log_every": 10_000}
    return [f"{k}={v}" for k, v in {**plain, **common}.items()]


def run_row(workspace: str, dataset: str, row: str, overrides: list[str], seed: int, tag: str) -> dict:
    """Train one row's seeds into one run and score its test split (runs in a worker process)."""
    from sgtool.autoencoder.evaluate import run_ae_eval
    from sgtool.autoencoder.train import train_autoencoder
    from sgtool.workspace import Workspace

    ws = Workspace(workspace)
    start = time.time()
    result = train_autoencoder(ws, dataset=dataset, name=f"ablate-{tag}-{row}", overrides=overrides, seed=seed,
                               supervised=ROWS[row][0].get("supervised", False))
    outcome = run_ae_eval(ws, run=result.run, split="test")
    log = [json.loads(line) for line in (result.path / "log.jsonl").read_text().splitlines()]
    steps = {r["seed"]: r["steps"] for r in log if r.get("event") == "trained"}
    return {"run": result.run, "seeds": result.seeds, "plateau_restarts": result.restarts,
            "plateau_seeds": result.plateau_seeds, "still_on_plateau": result.stuck_seeds,
            "steps_per_seed": [steps[s] for s in result.seeds],
            "per_seed": {str(s): m for s, m in outcome.per_seed.items()}, "summary": outcome.summary,
            "wall_seconds": round(time.time() - start, 1)}


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    budget = dict(BUDGETS[args.budget])
    if args.plateau_restarts is not None:
        budget["plateau_restarts"] = args.plateau_restarts
    steps, seeds = args.steps or budget["steps"], args.seeds or budget["seeds"]
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"unknown row {unknown[0]}; known: {', '.join(ROWS)}")
    tag, start = time.strftime("%H%M%S"), time.time()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {r: pool.submit(run_row, args.workspace, args.dataset, r, row_overrides(r, budget, steps, seeds),
                                  args.seed, tag) for r in rows}
        results = {r: {**f.result(), "settings": ROWS[r][0], "paper_f1": ROWS[r][1], "paper_row": ROWS[r][2]}
                   for r, f in futures.items()}
    payload = {"benchmark": "ablate_ae", "dataset": args.dataset, "budget": args.budget, "steps_per_seed": steps,
               "seeds": seeds, "first_seed": args.seed, "batch_size": budget["batch_size"],
               "train_images": budget["train_images"], "plateau_restarts": budget["plateau_restarts"],
               "jobs": args.jobs, "threads_per_job": 1,
               "wall_minutes": round((time.time() - start) / 60, 1), "results": results}
    text = json.dumps(payload, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    print()
    print(markdown(payload))
    return payload


def markdown(payload: dict) -> str:
    lines = ["| row | P (%) | R (%) | F1 (%) | paper F1 | seeds | restarts |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in payload["results"].items():
        s = r["summary"]
        cell = [f"{100 * s[k]['mean']:.1f} ± {100 * s[k]['std']:.1f}" for k in ("precision", "recall", "f1")]
        paper = f"{r['paper_f1'][0]} ± {r['paper_f1'][1]}" if r["paper_f1"] else "—"
        lines.append(f"| {name} | {' | '.join(cell)} | {paper} | {len(r['seeds'])} | {r['plateau_restarts']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
