"""`sgtool demo`: every trainable kind on embedded synthetic data, through the registry, then a summary.

prepare synth -> train-detector -> train freq / tensor / reldn / nodis / iwsl (PredCls) -> the same
weights scored in SGCls and SGDet (`train --from`) -> eval each run on the test split -> prepare
shapes -> train + eval the ae auto-encoder -> draw one predicted graph -> write a view of every relation run.

Every budget is optimiser steps or epochs of the fixed synthetic data, never the clock, so the same seed
prints the same numbers on any machine (the seconds column aside).
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

try:
    import resource
except ImportError:  # not on Windows
    resource = None

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
    size: int = 128  # side of the synthetic images, pixels
    shapes: int = 400  # Simple Shape drawings for the auto-encoder
    ae_steps: int = 150  # its optimiser steps
    ae_batch: int = 16  # drawings a step
    ae_set: tuple[str, ...] = ()  # further `--set key=value` of the auto-encoder (lr, width)


HEADS = ("freq", "tensor", "reldn", "nodis", "iwsl")  # every relation head; the detector and ae run beside them
NO_SGDET = ("nodis", "iwsl")  # the slowest heads to score in SGDet: they would take most of the demo


def _runs(epochs: int, max_boxes: int = 80, nodis_hidden: int = 128,
          nodis_epochs: int | None = None) -> tuple[tuple[str, str, dict], ...]:
    """PredCls training of every head, then its weights scored in SGCls and SGDet. `max_boxes`: the detections
    tensor and reldn pair per SGDet image (their scoring cost grows with its square); nodis, whose ODEs make it
    the costliest head to train, may take fewer epochs and a narrower state."""
    visual = {"epochs": epochs}  # features=auto -> the demo detector's ROI features, cached once
    options = {"freq": {}, "tensor": {"rank": 5, "max_boxes": max_boxes, **visual},
               "reldn": {"max_boxes": max_boxes, **visual},
               "nodis": {"hidden": nodis_hidden, "epochs": nodis_epochs or epochs}, "iwsl": {"samples": 10, **visual}}
    trained = tuple((head, "predcls", options[head]) for head in HEADS)
    return trained + tuple((head, task, {}) for task in ("sgcls", "sgdet") for head in HEADS  # reuse predcls
                           if task != "sgdet" or head not in NO_SGDET)


PLANS = {  # sized from CPU seconds per stage (benchmarks/bench_demo.py; docs/demo.md)
    False: DemoPlan(images=1000, dataset="demo", detector_epochs=6, epochs=3,
                    relation_runs=_runs(3, max_boxes=20, nodis_hidden=32, nodis_epochs=1), shapes=2000, ae_steps=300,
                    ae_set=("lr=0.003", "width=16")),
    True: DemoPlan(images=240, dataset="demo-quick", detector_epochs=6, epochs=1,
                   relation_runs=_runs(1, max_boxes=12, nodis_hidden=32), shapes=400, ae_steps=150,
                   ae_set=("lr=0.003", "width=16")),
}


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) and its finished children: the cost load barely moves."""
    if resource is None:  # Windows: this process alone
        return time.process_time()
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class DemoLog:
    steps: list[dict] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    auto_encoder: dict = field(default_factory=dict)

    def run(self, name: str, reporter: Reporter, stage: Callable[[], dict]) -> dict:
        reporter.info(f"[bold]demo:[/] {name}")
        start, start_cpu = time.perf_counter(), cpu_seconds()
        outcome = stage()
        self.steps.append({"step": name, "seconds": round(time.perf_counter() - start, 1),
                           "cpu_seconds": round(cpu_seconds() - start_cpu, 1), **outcome})
        return outcome


@dataclass
class DemoStages:
    """The demo's stages on one workspace and plan; each returns its row of the summary table."""

    ws: Workspace
    plan: DemoPlan
    seed: int
    device: str
    reporter: Reporter
    log: DemoLog = field(default_factory=DemoLog)
    graphs: list[Path] = field(default_factory=list)  # predicted graphs of the first relation run, to draw
    predcls_runs: dict[str, str] = field(default_factory=dict)  # head -> its PredCls run, reused by SGCls / SGDet

    def prepare(self) -> dict:
        plan = self.plan
        prepared = prepare_synth(self.ws, images=plan.images, size=plan.size, seed=self.seed, name=plan.dataset, force=True,
                                 reporter=self.reporter)
        counts = prepared.manifest["counts"]
        return {"result": f"{plan.images} images; " + ", ".join(f"{s} {c['relations']} relations"
                                                                for s, c in counts.items()),
                "path": str(prepared.path)}

    def detector(self) -> dict:
        epochs = self.plan.detector_epochs
        result = train_detector(self.ws, dataset=self.plan.dataset, epochs=epochs, batch_size=8, seed=self.seed,
                                device=self.device, threads=1, reporter=self.reporter)
        return {"result": f"tiny Faster R-CNN, {epochs} epochs: test mAP@.5 {100 * result.metrics['mAP@.5']:.1f}",
                "path": str(result.path)}

    def relation(self, head: str, task: str, options: dict) -> dict:
        kind = get_kind(head)
        if task == "predcls":
            request = TrainRequest(kind=head, dataset=self.plan.dataset, task=task, options=options, seed=self.seed,
                                   device=self.device, reporter=self.reporter,
                                   cache_features="features" in kind.config.__dataclass_fields__)
            trained = kind.train(self.ws, request)
            self.predcls_runs[head] = trained.run
        else:
            trained = kind.retask(self.ws, self.predcls_runs[head],
                                  TrainRequest(task=task, device=self.device, reporter=self.reporter))
        outcome = kind.evaluate(self.ws, trained.run, "test", (), {"dump_graphs": 0 if self.graphs else 3,
                                                                   "reporter": self.reporter})
        if not self.graphs:
            self.graphs.extend(sorted((outcome.report_dir / "graphs").glob("*.pred.json")))
        metrics = {name: outcome.result.metrics[name] for name in HEADLINE if name in outcome.result.metrics}
        self.log.results.append({"head": head, "task": task, "run": trained.run, **metrics})
        return {"result": "test " + ", ".join(f"{n} {100 * v:.1f}" for n, v in metrics.items() if "50" in n),
                "path": str(outcome.report_dir / "report.md")}

    def autoencoder(self) -> dict:
        plan = self.plan
        shapes = prepare_shapes(self.ws, images=plan.shapes, seed=self.seed, name=f"{plan.dataset}-shapes",
                                workers=1, force=True, reporter=self.reporter)
        kind = get_kind("ae")
        request = TrainRequest(kind="ae", dataset=shapes.name, overrides=[f"steps={plan.ae_steps}", *plan.ae_set],
                               options={"batch_size": plan.ae_batch}, seed=self.seed, device=self.device,
                               reporter=self.reporter)
        trained = kind.train(self.ws, request)
        outcome = kind.evaluate(self.ws, trained.run, "test", (), {"reporter": self.reporter})
        scores = {name: outcome.summary[name]["mean"] for name in AE_METRICS}
        self.log.auto_encoder = {"run": trained.run, **scores}
        return {"result": f"{plan.shapes} drawings, {plan.ae_steps} steps: test triplet "
                          + ", ".join(f"{n} {100 * v:.1f}" for n, v in scores.items()),
                "path": str(outcome.report_dir / "report.md")}

    def draw(self) -> dict:
        drawing = draw_graph(self.graphs[0], top=10)
        return {"result": f"{drawing.objects} objects, {drawing.relations} relations", "path": str(drawing.path)}

    def run_all(self) -> None:
        log, reporter = self.log, self.reporter
        log.run("prepare synthetic data", reporter, self.prepare)
        log.run("train the detector", reporter, self.detector)
        for head, task, options in self.plan.relation_runs:
            verb = "train + eval" if task == "predcls" else "reuse + eval"  # reuse: the PredCls weights
            log.run(f"{verb} {head} ({task})", reporter, functools.partial(self.relation, head, task, options))
        log.run("train + eval ae (Simple Shape)", reporter, self.autoencoder)
        log.run("draw a predicted graph", reporter, self.draw)


def run_demo(ws: Workspace, quick: bool = False, seed: int = 0, device: str = "auto",
             reporter: Reporter = ui.SILENT, as_json: bool = False) -> dict:
    ws.check_writable()
    stages = DemoStages(ws, PLANS[quick], seed, device, reporter)
    stages.run_all()
    log = stages.log
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
