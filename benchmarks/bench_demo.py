"""What `sgtool demo` costs and prints: each stage's step budget, CPU seconds and result, as one JSON object.

Runs the demo's plan (`--plan quick`, the default, or `--plan full`) in-process in a temporary workspace with
one torch thread, and records per stage the user + system CPU seconds of this process and its children
(`sgtool.engine.demo.cpu_seconds`), the wall seconds, and the line the demo prints; then every relation run's
test recalls and the auto-encoder's test triplet scores. CPU seconds barely move with the machine's load, so
they are the number to size the plans by: with one thread the stages run one after another on one core, so
on an idle machine the wall time is about the CPU time (`sgtool demo` itself lets torch choose its threads
for the heads; only the one-thread figure is measured). Writes benchmarks/results/bench_demo_<plan>.json.

    nice -n 10 python benchmarks/bench_demo.py --plan quick
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile

import torch

from results_io import write_result
from sgtool.engine import demo
from sgtool.ui import Reporter
from sgtool.workspace import Workspace

TARGET_MINUTES = {"quick": 2.0, "full": 10.0}  # on 2 idle cores (issue 29)


def stage_budgets(plan: demo.DemoPlan, train_images: int) -> dict[str, str]:
    """Each stage's budget in the words of the plan: optimiser steps or epochs of the fixed data."""
    detector_steps = plan.detector_epochs * math.ceil(train_images / 8)
    budgets = {"prepare synthetic data": f"{plan.images} images",
               "train the detector": f"{plan.detector_epochs} epochs = {detector_steps} steps of 8 images",
               "train + eval ae (Simple Shape)": f"{plan.ae_steps} steps of {plan.ae_batch} drawings",
               "draw a predicted graph": "—"}
    for head, task, options in plan.relation_runs:
        verb = "train + eval" if task == "predcls" else "reuse + eval"
        epochs = options.get("epochs")
        budgets[f"{verb} {head} ({task})"] = f"{epochs} epoch{'s' * (epochs != 1)}" if epochs else "no training"
    return budgets


def tabulate(summary: dict, budgets: dict[str, str]) -> dict:
    stages = {s["step"]: {"budget": budgets.get(s["step"], "—"), "cpu_seconds": s["cpu_seconds"],
                          "wall_seconds": s["seconds"], "result": s.get("result", "")} for s in summary["steps"]}
    relations = {f"{r['head']} {r['task']}": {n: round(100 * r[n], 1) for n in demo.HEADLINE if n in r}
                 for r in summary["results"]}
    ae = summary["auto_encoder"]
    return {"stages": stages, "relation runs, test (%)": relations,
            "ae, test triplets (%)": {n: round(100 * ae[n], 1) for n in demo.AE_METRICS}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", choices=("quick", "full"), default="quick")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    plan = demo.PLANS[args.plan == "quick"]
    with tempfile.TemporaryDirectory(prefix="sgtool-bench-demo-") as tmp:
        summary = demo.run_demo(Workspace(tmp), quick=args.plan == "quick", seed=args.seed, device="cpu",
                                reporter=Reporter(quiet=True), as_json=True)
        manifest = (Workspace(tmp).data_dir(plan.dataset) / "manifest.json").read_text()
    train_images = json.loads(manifest)["counts"]["train"]["images"]
    numbers = tabulate(summary, stage_budgets(plan, train_images))
    cpu = sum(s["cpu_seconds"] for s in summary["steps"])
    numbers["total"] = {"cpu_seconds": round(cpu, 1), "idle_2_core_minutes_estimate": round(cpu / 60, 2),
                        "target_minutes": TARGET_MINUTES[args.plan]}
    write_result(f"bench_demo_{args.plan}", budgets={"plan": args.plan, "images": plan.images,
                                                      "detector_epochs": plan.detector_epochs,
                                                      "head_epochs": plan.epochs, "shapes": plan.shapes,
                                                      "ae_steps": plan.ae_steps, "ae_batch": plan.ae_batch,
                                                      "ae_set": list(plan.ae_set)},
                 seeds=[args.seed], numbers=numbers, sources=["sgtool"],
                 notes="CPU seconds: user + system of one torch thread, this process and its children; the idle "
                       "2-core estimate is their sum in minutes (the stages run one after another on one core).")


if __name__ == "__main__":
    main()
