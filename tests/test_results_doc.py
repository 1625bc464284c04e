"""docs/results.md is what benchmarks/render_results.py renders from benchmarks/results/*.json, and the
renderer marks a result stale when the sources it exercised change."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

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


def test_every_docs_page_with_a_results_block_is_the_rendered_one():
    for page, text in render_results.rendered_pages().items():
        assert page.read_text(encoding="utf-8") == text, f"{page.name}: run python benchmarks/render_results.py"


def _docs_tree(tmp_path, monkeypatch, page_text: str):
    root = _fake_repo(tmp_path, monkeypatch)
    (root / "docs" / "methods").mkdir(parents=True)
    page = root / "docs" / "methods" / "toy.md"
    page.write_text(page_text)
    return root, page


def test_a_block_with_a_path_is_filled_with_that_table_its_freshness_and_a_link(tmp_path, monkeypatch):
    root, page = _docs_tree(tmp_path, monkeypatch, "# Toy\n\nbefore\n<!-- results: toy rows -->\nold text\n"
                                                   "<!-- /results -->\nafter\n")
    pages = render_results.rendered_pages(root / "results", root / "docs")
    text = pages[page]
    assert text.startswith("# Toy\n\nbefore\n<!-- results: toy rows -->\n") and text.endswith("<!-- /results -->\nafter\n")
    assert "old text" not in text
    assert "| L0 | 52.00 ± 2.00 (n=3) | 3 |" in text
    assert "L0 vs L0+L1" not in text  # only the sub-dict at the path
    assert "current: the sources it exercised are unchanged" in text
    assert "](../results.md#toy)" in text
    assert pages[root / "docs" / "results.md"] == render_results.render(root / "results")
    assert render_results.fill_page(text, page, root / "results", root / "docs") == text  # idempotent


def test_a_whole_result_block_carries_the_paper_and_turns_stale_with_its_sources(tmp_path, monkeypatch):
    root, page = _docs_tree(tmp_path, monkeypatch, "<!-- results: toy -->\n<!-- /results -->\n"
                                                   "<!-- results: toy paper: R@50 -->\n<!-- /results -->\n")
    (root / "pkg" / "head.py").write_text("alpha = 2\n")
    text = render_results.rendered_pages(root / "results", root / "docs")[page]
    assert "resolved (p=" in text and "| R@50 | 61.72 | 62.65 |" in text
    assert "| L0 | 61.72 |" in text  # the paper's sub-dict alone
    assert text.count("**stale**") == 2


def test_a_block_naming_a_missing_result_or_key_is_a_clear_error(tmp_path, monkeypatch):
    root, page = _docs_tree(tmp_path, monkeypatch, "<!-- results: nosuch -->\n<!-- /results -->\n")
    with pytest.raises(render_results.IncludeError, match=r"methods/toy.md: no result named 'nosuch'.*known results: toy"):
        render_results.rendered_pages(root / "results", root / "docs")
    page.write_text("<!-- results: toy rows/L9 -->\n<!-- /results -->\n")
    with pytest.raises(render_results.IncludeError, match=r"no key 'L9' under rows; keys there: L0, L0\+L1"):
        render_results.rendered_pages(root / "results", root / "docs")
    page.write_text("<!-- results: toy -->\nno end\n")
    with pytest.raises(render_results.IncludeError, match="needs its own"):
        render_results.rendered_pages(root / "results", root / "docs")


def test_check_reports_a_page_out_of_date_and_rendering_fixes_it(tmp_path, monkeypatch, capsys):
    root, page = _docs_tree(tmp_path, monkeypatch, "<!-- results: toy rows -->\n<!-- /results -->\n")
    monkeypatch.setattr(render_results, "DOCS", root / "docs")
    assert render_results.main(["--check"]) == 1
    assert "docs/methods/toy.md is out of date" in capsys.readouterr().out
    assert render_results.main([]) == 0 and render_results.main(["--check"]) == 0
    page.write_text("<!-- results: ../secret -->\n<!-- /results -->\n")
    assert render_results.main([]) == 2 and "no result named '../secret'" in capsys.readouterr().err


def test_the_ae_page_tables_are_the_ones_ablate_ae_renders_from_its_results():
    import ablate_ae  # its own renderer: the paper's numbers beside ours per row, which the generic one lacks
    page = (render_results.DOCS / "methods" / "ae.md").read_text(encoding="utf-8")
    for name, render in (("ablate_ae", ablate_ae.markdown), ("ablate_ae_heat", ablate_ae.heat_markdown)):
        record = json.loads((results_io.RESULTS / f"{name}.json").read_text())
        assert render(record) in page, "run: python benchmarks/ablate_ae.py --render-docs"


def test_rows_lists_become_tables_and_summaries_carry_their_median_and_stored_verdicts():
    summary = {**results_io.summarise([1.0, 2.0, 6.0]), "median": 2.0, "iqr": [1.5, 4.0],
               "vs_L0": results_io.welch([1.0, 2.0, 6.0], [1.0, 1.5, 0.5])}
    text = "\n".join(render_results.render_numbers({"fig": [{"t": 0.5, "R@50": 3.0}, {"t": 1.5, "R@50": 4.0}],
                                                    "row": {"R@50": summary}}))
    assert "| t | R@50 |\n| --- | --- |\n| 0.500 | 3.00 |\n| 1.50 | 4.00 |" in text
    assert "| R@50 | 3.00 ± 2.65 (n=3, median 2.00 [IQR 1.50, 4.00]); vs_L0: not resolved (p=" in text


def test_a_marker_inside_a_line_of_prose_is_not_a_block(tmp_path, monkeypatch):
    prose = "Write `<!-- results: NAME -->` and `<!-- /results -->` on lines of their own.\n"
    root, page = _docs_tree(tmp_path, monkeypatch, prose)
    assert page not in render_results.rendered_pages(root / "results", root / "docs")


def test_a_freshness_block_carries_only_the_mark_and_the_link(tmp_path, monkeypatch):
    root, page = _docs_tree(tmp_path, monkeypatch, "<!-- results: toy freshness: -->\n<!-- /results -->\n")
    text = render_results.rendered_pages(root / "results", root / "docs")[page]
    assert "current: the sources it exercised are unchanged" in text and "](../results.md#toy)" in text
    assert "|" not in text


def test_the_ae_tables_precision_without_self_loops_is_the_metric_with_them_removed():
    """The renderer's P / (1 - self-loop share) equals precision scored on the same graphs without their
    self-loop edges: a self-loop is never a hit."""
    import ablate_ae
    import numpy as np

    from sgtool.eval.point_graph import PointGraphs, triplet_scores

    gt = PointGraphs(np.array([0, 3]), np.array([[10.0, 10], [40, 10], [10, 40]]), np.array([[0, 1], [1, 2]]))
    slots = np.array([[10.0, 11], [41, 10], [11, 40], [40, 11]])  # slot 3 sits on node 1 beside slot 1
    edges = np.array([[0, 1], [1, 3], [0, 2], [2, 3]])  # a hit, a self-loop (slots 1, 3), a wrong edge, a hit
    with_loops = triplet_scores(PointGraphs(np.array([0, 4]), slots, edges), gt)
    without = triplet_scores(PointGraphs(np.array([0, 4]), slots, edges[[0, 2, 3]]), gt)
    assert with_loops["self_loops"] == 1 and with_loops["hits"] == without["hits"] == 2
    assert with_loops["precision"] == 2 / 4 and without["precision"] == 2 / 3
    nearest = {"precision": results_io.summarise([100 * with_loops["precision"], 40.0]),
               "self_loops_per_predicted": results_io.summarise(
                   [100 * with_loops["self_loops"] / with_loops["predicted"], 0.0])}
    values = ablate_ae.precision_without_self_loops(nearest)["values"]
    assert values == pytest.approx([100 * without["precision"], 40.0])
    assert ablate_ae.precision_without_self_loops(
        {"precision": results_io.summarise([0.0]), "self_loops_per_predicted": results_io.summarise([100.0])}
    )["values"] == [0.0]
