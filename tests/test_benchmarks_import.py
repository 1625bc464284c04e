"""Every benchmark script still imports against today's package (they run outside the test suite, so a
moved function would otherwise break them silently); none runs its main on import."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))
# libraries the scripts import (`python benchmarks/x.py` puts benchmarks/ on sys.path), and their entry point
LIBRARIES = {"eval_loads": "make_load", "results_io": "write_result"}


def test_there_are_benchmarks():
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_a_benchmark_script_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its imports resolve; `if __name__ == "__main__"` keeps main from running
    entry = LIBRARIES.get(script.stem, "main")
    assert callable(getattr(module, entry, None)), script.name
