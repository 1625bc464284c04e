"""`sgtool demo`: every stage that exists, on the embedded synthetic data, then a summary."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sgtool import ui
from sgtool.data.synth import prepare_synth
from sgtool.ui import Reporter
from sgtool.workspace import Workspace


@dataclass
class DemoPlan:
    images: int
    dataset: str


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

    log.run("prepare synthetic data", reporter, prepare)
    summary = {"workspace": str(ws.root), "steps": log.steps}
    if as_json:
        ui.print_json(summary)
    else:
        ui.print_table("sgtool demo", ("step", "seconds", "result", "where"),
                       ((s["step"], s["seconds"], s.get("result", ""), s.get("path", "")) for s in log.steps))
    return summary
