"""benchmarks/remeasure.py: every result file has a canonical command, and every planned script exists."""
from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_remeasure():
    spec = importlib.util.spec_from_file_location("remeasure", REPO / "benchmarks" / "remeasure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_result_file_has_a_planned_command():
    remeasure = load_remeasure()
    written = {p.stem for p in (REPO / "benchmarks" / "results").glob("*.json")}
    planned = remeasure.planned_names()
    assert sorted(written - planned) == [], "add the benchmark's canonical command to remeasure.PLAN"


def test_every_planned_script_exists_and_dry_run_lists_it(capsys):
    remeasure = load_remeasure()
    for script, _, _ in remeasure.PLAN:
        assert (REPO / "benchmarks" / script).is_file(), script
    assert remeasure.main(["--only", "bench_view", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "bench_view.py --images 10000" in out and out.count("remeasure:") == 1


def test_a_script_that_needs_a_dataset_gets_its_prepare_step_first(capsys, monkeypatch, tmp_path):
    remeasure = load_remeasure()
    monkeypatch.setitem(remeasure.PREPARE, "ablate_ae.py", (str(tmp_path / "missing"), ["-w", "WS", "prepare", "shapes"]))
    assert remeasure.main(["--only", "ablate_ae_heat", "--dry-run"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("remeasure:")]
    assert lines[0] == "remeasure: -m sgtool -w WS prepare shapes"
    assert "ablate_ae.py -w" in lines[1] and "--choose-heat" in lines[1] and len(lines) == 2
