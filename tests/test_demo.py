"""The demo end to end on a tiny plan: every stage runs and leaves its files."""
from __future__ import annotations

import json
from pathlib import Path

from sgtool.engine import demo


def test_demo_runs_every_stage_and_summarises(cli, tmp_path, monkeypatch):
    tiny = demo.DemoPlan(images=40, dataset="demo-tiny", detector_minutes=0.05, epochs=1, relation_runs=demo._runs(1),
                         shapes=60, ae_minutes=0.02)
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
