"""The demo end to end on a tiny plan: every stage runs and leaves its files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgtool.engine import demo


@pytest.mark.slow
def test_demo_runs_every_stage_and_summarises(cli, tmp_path, monkeypatch):
    tiny = demo.DemoPlan(images=40, dataset="demo-tiny", detector_epochs=1, epochs=1, relation_runs=demo._runs(1),
                         shapes=60, ae_steps=4)
    monkeypatch.setitem(demo.PLANS, True, tiny)
    result = cli("-w", tmp_path / "ws", "demo", "--quick", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
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
    assert Path(summary["steps"][-1]["path"]).stat().st_size > 1000  # the drawing
    assert json.loads((Path(summary["workspace"]) / "views" / "test" / "sgtool-view.json").read_text())["runs"] == [
        row["run"] for row in summary["results"]] and summary["view"].endswith("/views/test/index.html")


@pytest.mark.slow
def test_two_demos_with_the_same_seed_print_the_same_numbers(cli, tmp_path, monkeypatch):
    """The quick plan's code path on a smaller plan: detector and ae on step budgets, one head in two tasks."""
    small = demo.DemoPlan(images=40, dataset="demo-small", detector_epochs=2, epochs=1,
                          relation_runs=(("tensor", "predcls", {"epochs": 1}), ("tensor", "sgcls", {})), shapes=60,
                          ae_steps=6)
    monkeypatch.setitem(demo.PLANS, True, small)
    runs = [cli("-w", tmp_path / name, "--seed", "3", "demo", "--quick", "--json") for name in ("a", "b")]
    assert [r.code for r in runs] == [0, 0], runs[-1].err
    a, b = (json.loads(r.out) for r in runs)
    assert a["results"] == b["results"] and a["auto_encoder"] == b["auto_encoder"]
    assert [s["result"] for s in a["steps"]] == [s["result"] for s in b["steps"]]  # the detector's mAP among them
    assert "2 epochs" in a["steps"][1]["result"] and "6 steps" in a["steps"][-2]["result"]
