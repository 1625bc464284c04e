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
