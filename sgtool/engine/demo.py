"""`sgtool demo`: every stage that exists, on the embedded synthetic data, then a summary."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sgtool import ui
from sgtool.data.synth import prepare_synth
from sgtool.engine.train import train
from sgtool.eval.run_eval import run_eval
from sgtool.viz.draw import draw_graph
from sgtool.ui import Reporter
from sgtool.workspace import Workspace


@dataclass
class DemoPlan:
    images: int
    dataset: str


HEADLINE = ("R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100")
PLANS = {False: DemoPlan(images=2000, dataset="demo"), True: DemoPlan(images=300, dataset="demo-quick")}


@dataclass
class DemoLog:
    steps: list[dict] = field(default_factory=list)

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

    def prepare() -> dict:
        prepared = prepare_synth(ws, images=plan.images, seed=seed, name=plan.dataset, force=True, reporter=reporter)
        counts = prepared.manifest["counts"]
        return {"result": f"{plan.images} images, " + ", ".join(f"{s} {c['relations']} relations" for s, c in counts.items()),
                "path": str(prepared.path)}

    def train_freq() -> dict:
        result = train(ws, head="freq", dataset=plan.dataset, task="predcls", seed=seed, device=device, reporter=reporter)
        state["run"] = result.run
        return {"result": f"run {result.run}", "path": str(result.path)}

    def evaluate() -> dict:
        outcome = run_eval(ws, run=state["run"], split="test", dump_graphs=3, reporter=reporter)
        metrics = outcome.result.metrics
        state["graphs"] = sorted((outcome.report_dir / "graphs").glob("*.pred.json"))
        figures = ", ".join(f"{name} {100 * metrics[name]:.1f}" for name in HEADLINE if name in metrics)
        return {"result": f"freq PredCls test: {figures}", "path": str(outcome.report_dir / "report.md"),
                "metrics": {name: metrics[name] for name in HEADLINE if name in metrics}}

    def draw() -> dict:
        drawing = draw_graph(state["graphs"][0], top=10)
        return {"result": f"{drawing.objects} objects, {drawing.relations} relations", "path": str(drawing.path)}

    state: dict = {}
    log.run("prepare synthetic data", reporter, prepare)
    log.run("train the freq head", reporter, train_freq)
    log.run("evaluate (PredCls)", reporter, evaluate)
    log.run("draw a predicted graph", reporter, draw)
    summary = {"workspace": str(ws.root), "steps": log.steps}
    if as_json:
        ui.print_json(summary)
    else:
        ui.print_table("sgtool demo", ("step", "seconds", "result"),
                       ((s["step"], s["seconds"], s.get("result", "")) for s in log.steps))
        for step in log.steps:
            ui.out.print(f"{step['step']}: {step['path']}", highlight=False, soft_wrap=True)
    return summary
