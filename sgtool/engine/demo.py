"""`sgtool demo`: every trainable kind on embedded synthetic data, through the registry, then a summary.

prepare synth -> train-detector -> train freq / tensor / reldn / nodis / iwsl (PredCls) -> the same
weights scored in SGCls and SGDet (`train --from`) -> eval each run on the test split -> prepare
shapes -> train + eval the ae auto-encoder -> draw one predicted graph -> write a view of every relation run.

Every budget is optimiser steps or epochs of the fixed synthetic data, never the clock, so the same seed
prints the same numbers on any machine (the seconds column aside).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sgtool import ui
from sgtool.data.synth import prepare_synth
from sgtool.data.shapes import prepare_shapes
from sgtool.engine.train_detector import train_detector
from sgtool.engine.kinds import TrainRequest, get_kind
from sgtool.ui import Reporter
from sgtool.viz.draw import draw_graph
from sgtool.viz.view import build_view
from sgtool.workspace import Workspace

HEADLINE = ("R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100")
AE_METRICS = ("precision", "recall", "f1")


@dataclass
class DemoPlan:
    images: int
    dataset: str
    detector_epochs: int  # of the plan's training images, 8 per step
    epochs: int  # for the heads that train
    relation_runs: tuple[tuple[str, str, dict], ...]  # (head, task, train options); sgcls / sgdet reuse predcls
    shapes: int = 400  # Simple Shape drawings for the auto-encoder
    ae_steps: int = 150  # its optimiser steps, 16 drawings each


HEADS = ("freq", "tensor", "reldn", "nodis", "iwsl")  # every relation head; the detector and ae run beside them
NO_SGDET = ("nodis", "iwsl")  # they pair every detection (no max_boxes cap): SGDet would take most of the demo


def _runs(epochs: int) -> tuple[tuple[str, str, dict], ...]:
    visual = {"epochs": epochs}  # features=auto -> the demo detector's ROI features, cached once
    options = {"freq": {}, "tensor": {"rank": 5, **visual}, "reldn": visual, "nodis": visual,
               "iwsl": {"samples": 10, **visual}}
    trained = tuple((head, "predcls", options[head]) for head in HEADS)
    return trained + tuple((head, task, {}) for task in ("sgcls", "sgdet") for head in HEADS  # reuse predcls
                           if task != "sgdet" or head not in NO_SGDET)


PLANS = {  # sized from one-thread CPU seconds per step, as docs/demo.md shows
    False: DemoPlan(images=2000, dataset="demo", detector_epochs=7, epochs=5, relation_runs=_runs(5),
                    shapes=2000, ae_steps=500),
    True: DemoPlan(images=300, dataset="demo-quick", detector_epochs=10, epochs=1, relation_runs=_runs(1),
                   ae_steps=150),
}


@dataclass
class DemoLog:
    steps: list[dict] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    auto_encoder: dict = field(default_factory=dict)

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
        result = train_detector(ws, dataset=plan.dataset, epochs=plan.detector_epochs, batch_size=8, seed=seed,
                                device=device, threads=1, reporter=reporter)
        return {"result": f"tiny Faster R-CNN, {plan.detector_epochs} epochs: test mAP@.5 {100 * result.metrics['mAP@.5']:.1f}",
                "path": str(result.path)}

    predcls_runs: dict[str, str] = {}  # head -> its PredCls run, whose weights SGCls / SGDet reuse

    def relation_run(head: str, task: str, options: dict) -> Callable[[], dict]:
        def stage() -> dict:
            kind = get_kind(head)
            request = TrainRequest(kind=head, dataset=plan.dataset, task=task, options=options, seed=seed, device=device,
                                   cache_features="features" in kind.config.__dataclass_fields__,
                                   reporter=reporter)
            if task == "predcls":
                trained = kind.train(ws, request)
                predcls_runs[head] = trained.run
            else:
                trained = kind.retask(ws, predcls_runs[head], TrainRequest(task=task, device=device, reporter=reporter))
            outcome = kind.evaluate(ws, trained.run, "test", (), {"dump_graphs": 3 if not graphs else 0,
                                                                  "reporter": reporter})
            if not graphs:
                graphs.extend(sorted((outcome.report_dir / "graphs").glob("*.pred.json")))
            metrics = {name: outcome.result.metrics[name] for name in HEADLINE if name in outcome.result.metrics}
            log.results.append({"head": head, "task": task, "run": trained.run, **metrics})
            return {"result": "test " + ", ".join(f"{n} {100 * v:.1f}" for n, v in metrics.items() if "50" in n),
                    "path": str(outcome.report_dir / "report.md")}

        return stage

    def autoencoder() -> dict:
        shapes = prepare_shapes(ws, images=plan.shapes, seed=seed, name=f"{plan.dataset}-shapes", workers=1,
                                force=True, reporter=reporter)
        kind = get_kind("ae")
        request = TrainRequest(kind="ae", dataset=shapes.name, overrides=[f"steps={plan.ae_steps}"],
                               options={"batch_size": 16}, seed=seed, device=device, reporter=reporter)
        trained = kind.train(ws, request)
        outcome = kind.evaluate(ws, trained.run, "test", (), {"reporter": reporter})
        scores = {name: outcome.summary[name]["mean"] for name in AE_METRICS}
        log.auto_encoder = {"run": trained.run, **scores}
        return {"result": f"{plan.shapes} drawings, {plan.ae_steps} steps: test triplet "
                          + ", ".join(f"{n} {100 * v:.1f}" for n, v in scores.items()),
                "path": str(outcome.report_dir / "report.md")}

    def draw() -> dict:
        drawing = draw_graph(graphs[0], top=10)
        return {"result": f"{drawing.objects} objects, {drawing.relations} relations", "path": str(drawing.path)}

    log.run("prepare synthetic data", reporter, prepare)
    log.run("train the detector", reporter, detector)
    for head, task, options in plan.relation_runs:
        verb = "train + eval" if task == "predcls" else "reuse + eval"  # reuse: the PredCls weights
        log.run(f"{verb} {head} ({task})", reporter, relation_run(head, task, options))
    log.run("train + eval ae (Simple Shape)", reporter, autoencoder)
    log.run("draw a predicted graph", reporter, draw)
    view = build_view(ws, runs=[r["run"] for r in log.results], reporter=reporter)  # every relation run side by side
    summary = {"workspace": str(ws.root), "steps": log.steps, "results": log.results, "auto_encoder": log.auto_encoder,
               "view": view.index.resolve().as_uri()}
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
    ae = summary["auto_encoder"]
    ui.print_table("ae auto-encoder, test triplets (%)", AE_METRICS, [tuple(f"{100 * ae[n]:.1f}" for n in AE_METRICS)])
    for step in summary["steps"]:
        ui.out.print(f"{step['step']}: {step['path']}", highlight=False, soft_wrap=True)
    ui.out.print(f"Open the view of every run: {summary['view']}", highlight=False, soft_wrap=True)
