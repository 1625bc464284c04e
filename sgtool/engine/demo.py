"""`sgtool demo`: every stage on the embedded synthetic data, then a summary.

prepare synth -> train-detector -> train freq / tensor / reldn (PredCls) -> the same weights
scored in SGCls and SGDet (`train --from`) -> eval each run on the test split -> draw one
predicted graph.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sgtool import ui
from sgtool.data.synth import prepare_synth
from sgtool.detect.train import train_detector
from sgtool.engine.train import retask, train
from sgtool.eval.run_eval import run_eval
from sgtool.ui import Reporter
from sgtool.viz.draw import draw_graph
from sgtool.workspace import Workspace

HEADLINE = ("R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100")


@dataclass
class DemoPlan:
    images: int
    dataset: str
    detector_minutes: float
    epochs: int  # for the heads that train
    relation_runs: tuple[tuple[str, str, dict], ...]  # (head, task, train options); sgcls / sgdet reuse predcls


def _runs(epochs: int) -> tuple[tuple[str, str, dict], ...]:
    visual = {"epochs": epochs, "cache_features": True}  # auto -> the demo detector's ROI features, computed once
    heads = (("freq", {}), ("tensor", {"rank": 5, **visual}), ("reldn", visual))
    trained = tuple((head, "predcls", options) for head, options in heads)
    return trained + tuple((head, task, {}) for task in ("sgcls", "sgdet") for head, _ in heads)  # reuse predcls


PLANS = {
    False: DemoPlan(images=2000, dataset="demo", detector_minutes=5.0, epochs=6, relation_runs=_runs(6)),
    True: DemoPlan(images=300, dataset="demo-quick", detector_minutes=1.0, epochs=1, relation_runs=_runs(1)),
}


@dataclass
class DemoLog:
    steps: list[dict] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)

    def run(self, name: str, reporter: Reporter, stage: Callable[[], dict]) -> dict:
        reporter.info(f"[bold]demo:[/] {name}")
        start = time.perf_counter()
        outcome = stage()
        self.steps.append({"step": name, "seconds": round(time.perf_counter() - start, 1), **outcome})
        return outcome


def run_demo(ws: Workspace, quick: bool = False, seed: int = 0, device: str = "auto",
             reporter: Reporter = ui.SILENT, as_json: bool = False) -> dict:
    plan = PLANS[quick]
    ws.check_writable()
    log = DemoLog()
    graphs: list = []

    def prepare() -> dict:
        prepared = prepare_synth(ws, images=plan.images, seed=seed, name=plan.dataset, force=True, reporter=reporter)
        counts = prepared.manifest["counts"]
        return {"result": f"{plan.images} images; " + ", ".join(f"{s} {c['relations']} relations" for s, c in counts.items()),
                "path": str(prepared.path)}

    def detector() -> dict:
        result = train_detector(ws, dataset=plan.dataset, time_budget=plan.detector_minutes, epochs=100, seed=seed,
                                device=device, threads=1, reporter=reporter)
        return {"result": f"tiny Faster R-CNN, {plan.detector_minutes:g} min: test mAP@.5 {100 * result.metrics['mAP@.5']:.1f}",
                "path": str(result.path)}

    predcls_runs: dict[str, str] = {}  # head -> its PredCls run, whose weights SGCls / SGDet reuse

    def relation_run(head: str, task: str, options: dict) -> Callable[[], dict]:
        def stage() -> dict:
            if task == "predcls":
                trained = train(ws, head=head, dataset=plan.dataset, task=task, seed=seed, device=device,
                                reporter=reporter, **options)
                predcls_runs[head] = trained.run
            else:
                trained = retask(ws, predcls_runs[head], task=task, device=device, reporter=reporter)
            outcome = run_eval(ws, run=trained.run, split="test", dump_graphs=3 if not graphs else 0, reporter=reporter)
            if not graphs:
                graphs.extend(sorted((outcome.report_dir / "graphs").glob("*.pred.json")))
            metrics = {name: outcome.result.metrics[name] for name in HEADLINE if name in outcome.result.metrics}
            log.results.append({"head": head, "task": task, "run": trained.run, **metrics})
            return {"result": "test " + ", ".join(f"{n} {100 * v:.1f}" for n, v in metrics.items() if "50" in n),
                    "path": str(outcome.report_dir / "report.md")}

        return stage

    def draw() -> dict:
        drawing = draw_graph(graphs[0], top=10)
        return {"result": f"{drawing.objects} objects, {drawing.relations} relations", "path": str(drawing.path)}

    log.run("prepare synthetic data", reporter, prepare)
    log.run("train the detector", reporter, detector)
    for head, task, options in plan.relation_runs:
        verb = "train + eval" if task == "predcls" else "reuse + eval"  # reuse: the PredCls weights
        log.run(f"{verb} {head} ({task})", reporter, relation_run(head, task, options))
    log.run("draw a predicted graph", reporter, draw)
    summary = {"workspace": str(ws.root), "steps": log.steps, "results": log.results}
    _show(summary, as_json)
    return summary


def _show(summary: dict, as_json: bool) -> None:
    if as_json:
        ui.print_json(summary)
        return
    ui.print_table("sgtool demo", ("step", "seconds", "result"),
                   ((s["step"], s["seconds"], s.get("result", "")) for s in summary["steps"]))
    ui.print_table("Test split (%)", ("head", "task", *HEADLINE),
                   ((r["head"], r["task"], *(f"{100 * r[n]:.1f}" for n in HEADLINE if n in r)) for r in summary["results"]))
    for step in summary["steps"]:
        ui.out.print(f"{step['step']}: {step['path']}", highlight=False, soft_wrap=True)
