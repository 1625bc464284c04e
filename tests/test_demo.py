"""The demo end to end on a tiny plan of the quick plan's code path: every stage runs and leaves its files,
and a second demo with the same seed prints the same numbers."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from sgtool.cli import main
from sgtool.engine import demo

# every head in PredCls, SGCls and SGDet as the quick plan runs them, at 64 px and a few steps
TINY = demo.DemoPlan(images=24, dataset="demo-tiny", detector_epochs=1, epochs=1, size=64,
                     relation_runs=demo._runs(1, max_boxes=8, nodis_hidden=16), shapes=60, ae_steps=4,
                     ae_set=("width=8",))


def tiny_demo(root: Path) -> dict:
    """What `sgtool -w ROOT --seed 3 demo --quick --json` prints, run in-process on the tiny plan."""
    previous, demo.PLANS[True] = demo.PLANS[True], TINY
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            main(["-w", str(root), "--seed", "3", "demo", "--quick", "--json"])
    except SystemExit as exc:
        assert not exc.code, printed.getvalue()[-2000:]
    finally:
        demo.PLANS[True] = previous
    return json.loads(printed.getvalue())


@pytest.fixture(scope="module")
def first(tmp_path_factory) -> dict:
    """One tiny demo, shared by both tests."""
    return tiny_demo(tmp_path_factory.mktemp("demo") / "a")


@pytest.mark.slow
def test_demo_runs_every_stage_and_summarises(first):
    summary = first
    steps = [s["step"] for s in summary["steps"]]
    assert steps[:2] == ["prepare synthetic data", "train the detector"] and steps[-1] == "draw a predicted graph"
    assert {(r["head"], r["task"]) for r in summary["results"]} == {
        (h, t) for h in ("freq", "tensor", "reldn", "nodis", "iwsl") for t in ("predcls", "sgcls", "sgdet")
        if t != "sgdet" or h in ("freq", "tensor", "reldn")}
    assert "train + eval ae (Simple Shape)" in steps and 0.0 <= summary["auto_encoder"]["f1"] <= 1.0
    assert (Path(summary["workspace"]) / "reports" / summary["auto_encoder"]["run"] / "report.json").exists()
    for row in summary["results"]:
        assert 0.0 <= row["R@50"] <= 1.0 and 0.0 <= row["mR@50"] <= 1.0
        assert (Path(summary["workspace"]) / "reports" / row["run"] / "report.json").exists()
    assert all(s["cpu_seconds"] >= 0 for s in summary["steps"])
    assert Path(summary["steps"][-1]["path"]).stat().st_size > 1000  # the drawing
    assert json.loads((Path(summary["workspace"]) / "views" / "test" / "sgtool-view.json").read_text())["runs"] == [
        row["run"] for row in summary["results"]] and summary["view"].endswith("/views/test/index.html")


@pytest.mark.slow
def test_two_demos_with_the_same_seed_print_the_same_numbers(first, tmp_path):
    """The detector and the ae on step budgets, every head and task: the same seed, the same table."""
    second = tiny_demo(tmp_path / "b")
    assert first["results"] == second["results"] and first["auto_encoder"] == second["auto_encoder"]
    assert [s["result"] for s in first["steps"]] == [s["result"] for s in second["steps"]]  # the detector's mAP too
    assert "1 epochs" in first["steps"][1]["result"] and "4 steps" in first["steps"][-2]["result"]
