"""docs/results.md is what benchmarks/render_results.py renders from benchmarks/results/*.json, and the
renderer marks a result stale when the sources it exercised change."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import render_results  # noqa: E402
import results_io  # noqa: E402


def test_docs_results_page_is_the_rendered_one():
    rendered = render_results.render()
    assert render_results.DOC.read_text() == rendered, "run: python benchmarks/render_results.py"


def _fake_repo(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "head.py").write_text("alpha = 1\n")
    monkeypatch.setattr(results_io, "REPO", tmp_path)
    monkeypatch.setattr(results_io, "RESULTS", tmp_path / "results")
    numbers = {"rows": {"L0": {"R@50": results_io.summarise([50.0, 52.0, 54.0]), "seeds ok": 3},
                        "L0+L1": {"R@50": results_io.summarise([60.0, 61.0, 62.0]), "seeds ok": 3}},
               "L0 vs L0+L1": results_io.welch([50.0, 52.0, 54.0], [60.0, 61.0, 62.0])}
    results_io.write_result("toy", budgets={"steps": 100}, seeds=[0, 1, 2], numbers=numbers,
                            sources=["pkg"], paper={"R@50": {"L0": 61.72, "L0+L1": 62.65}}, argv=["toy.py"])
    return tmp_path


def test_a_result_renders_as_a_table_with_mean_sd_and_verdict(tmp_path, monkeypatch):
    root = _fake_repo(tmp_path, monkeypatch)
    text = render_results.render(root / "results")
    assert "| L0 | 52.00 ± 2.00 (n=3) | 3 |" in text
    assert "| L0+L1 | 61.00 ± 1.00 (n=3) | 3 |" in text
    assert "resolved (p=" in text and "not resolved" not in text
    assert "| R@50 | 61.72 | 62.65 |" in text  # the paper's numbers beside ours
    assert "current: the sources it exercised are unchanged" in text and "- **stale**" not in text


def test_a_result_is_marked_stale_once_its_sources_change(tmp_path, monkeypatch):
    root = _fake_repo(tmp_path, monkeypatch)
    (root / "pkg" / "head.py").write_text("alpha = 2\n")
    text = render_results.render(root / "results")
    assert "- **stale**" in text
    record = json.loads((root / "results" / "toy.json").read_text())
    assert record["source_hash"] != results_io.source_hash(["pkg"])
