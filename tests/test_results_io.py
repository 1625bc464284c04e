"""benchmarks/results_io.py: sample statistics, Welch's verdict, the source hash and the file it writes."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import results_io  # noqa: E402


def test_summarise_uses_the_sample_sd():
    out = results_io.summarise([1.0, 2.0, 3.0, 4.0])
    assert out["mean"] == 2.5
    assert out["sd"] == pytest.approx(1.2909944487358056)  # sqrt(5/3), n - 1 in the denominator
    assert results_io.summarise([7.0])["sd"] == 0.0


def test_welch_resolves_separated_groups_and_not_overlapping_ones():
    far = results_io.welch([10.0, 10.5, 9.8, 10.2], [5.0, 5.3, 4.9, 5.1])
    assert far["resolved"] and far["p"] < 1e-4 and far["diff"] == pytest.approx(5.05)
    near = results_io.welch([1.0, 3.0, 2.0], [1.5, 2.5, 2.2])
    assert not near["resolved"] and near["p"] > 0.5
    assert not results_io.welch([1.0], [2.0, 3.0])["resolved"]  # one value a side resolves nothing


def test_source_hash_follows_the_content(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(results_io, "REPO", tmp_path)
    before = results_io.source_hash(["pkg"])
    assert before == results_io.source_hash(["pkg/a.py", "pkg"])
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert results_io.source_hash(["pkg"]) != before
    with pytest.raises(FileNotFoundError):
        results_io.source_hash(["missing"])


def test_write_result_records_what_a_reader_needs(tmp_path, monkeypatch):
    monkeypatch.setattr(results_io, "RESULTS", tmp_path)
    path = results_io.write_result("toy_bench", budgets={"steps": 5}, seeds=[0, 1], numbers={"r50": 1.5},
                                   sources=["sgtool/eval"], argv=["benchmarks/toy.py", "--json"])
    record = json.loads(path.read_text())
    assert path == tmp_path / "toy_bench.json"
    assert record["command"] == "python benchmarks/toy.py --json"
    assert record["budgets"] == {"steps": 5} and record["seeds"] == [0, 1] and record["numbers"] == {"r50": 1.5}
    assert record["source_hash"] == results_io.source_hash(["sgtool/eval"])
    assert {"commit", "date", "machine"} <= record.keys()
    with pytest.raises(ValueError):
        results_io.write_result("../escape", budgets={}, seeds=[], numbers={}, sources=[])
