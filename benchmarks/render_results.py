"""Render docs/results.md from benchmarks/results/*.json alone.

Every result becomes one section: what ran (command, commit, date, machine, step budgets, seeds), a
computed "stale" mark when the sgtool sources it exercised have changed since (their sha256 no longer
matches `source_hash`), then its numbers and the paper's numbers as tables. Summaries written by
`results_io.summarise` print as mean ± sd (n, and median [IQR] when stored), followed by any Welch verdict stored beside them; Welch
verdicts print as resolved / not resolved with p and the difference of means.
A dict whose values are dicts with the same keys becomes one table (rows x columns); anything else is
listed as path | value. Nothing here is typed by hand: tests/test_results_doc.py fails when
docs/results.md differs from what this script renders.

Any other page under docs/ takes measured numbers only through an include block, which this script
fills (everything between the two markers is replaced):

    <!-- results: NAME -->                 all of benchmarks/results/NAME.json: numbers and the paper's
    <!-- results: NAME key/sub key -->     only numbers["key"]["sub key"] (and the paper's at that path)
    <!-- results: NAME paper: key -->      only the paper's numbers (at that path, if one is given)
    <!-- results: NAME freshness: -->      only its stale / current line and the link (for a page whose
                                           tables a script of its own renders, e.g. ablate_ae.py)
    <!-- /results -->

The block gets the result's stale / current line, its tables and a link to its section here.

    python benchmarks/render_results.py            # writes docs/results.md and fills every block
    python benchmarks/render_results.py --check    # exit 1 when docs/results.md or a page is out of date
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_io  # noqa: E402

DOC = results_io.REPO / "docs" / "results.md"
DOCS = results_io.REPO / "docs"
# Markers count only at the start of a line, so a page may show the syntax in inline code.
BLOCK = re.compile(r"^(<!-- results: *(?P<spec>[^>]*?) *-->\n)(?P<body>.*?)^(<!-- /results -->)$", re.S | re.M)
OPENER = re.compile(r"^<!-- results:", re.M)
CLOSER = re.compile(r"^<!-- /results -->$", re.M)
INTRO = """# Results

Every number on this page comes from a JSON file in `benchmarks/results/`, written by the benchmark
script named in its section, and is rendered by `python benchmarks/render_results.py` (a test fails
when this page differs from what the script renders). Means and sample standard deviations (n − 1)
are computed by the scripts; "resolved" means Welch's t-test gives p < 0.05. A section marked
**stale** was measured on sgtool sources that have changed since: its numbers describe older code
and are due to be measured again. The method pages quote parts of these results through blocks the
same script fills, each with the same stale / current mark.
"""
SUMMARY_KEYS = {"n", "mean", "sd", "values"}
VERDICT_KEYS = {"p", "resolved"}


def fmt_number(value) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "—"}[value]
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value == 0:
            return "0"
        if abs(value) < 0.01:
            return f"{value:.2e}"
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return str(value)


def is_summary(value) -> bool:
    return isinstance(value, dict) and SUMMARY_KEYS <= value.keys()


def is_verdict(value) -> bool:
    return isinstance(value, dict) and VERDICT_KEYS <= value.keys()


def fmt_cell(value) -> str:
    if is_summary(value):
        if value["mean"] is None:
            return "—"
        tests = "".join(f"; {key}: {fmt_cell(v)}" for key, v in value.items() if is_verdict(v))
        spread = ""
        if value.get("median") is not None and isinstance(value.get("iqr"), list):
            spread = f", median {fmt_number(value['median'])} [IQR {', '.join(map(fmt_number, value['iqr']))}]"
        return f"{fmt_number(value['mean'])} ± {fmt_number(value['sd'])} (n={value['n']}{spread}){tests}"
    if is_verdict(value):
        p = "—" if value["p"] is None else fmt_number(value["p"])
        diff = "" if value.get("diff") is None else f", diff {'+' if value['diff'] > 0 else ''}{fmt_number(value['diff'])}"
        return f"{'resolved' if value['resolved'] else 'not resolved'} (p={p}{diff})"
    if isinstance(value, list):
        return ", ".join(fmt_cell(v) for v in value) if len(value) <= 12 else f"{len(value)} values"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {fmt_cell(v)}" for k, v in value.items())
    return fmt_number(value).replace("|", "\\|").replace("\n", " ")


def is_leaf(value) -> bool:
    if as_records(value) is not None:
        return False
    return not isinstance(value, dict) or is_summary(value) or is_verdict(value)


def as_records(value) -> list[str] | None:
    """The shared keys when `value` is a list of flat dicts with one set of keys (a table's rows), else None."""
    if not isinstance(value, list) or not value or not all(isinstance(r, dict) and r for r in value):
        return None
    columns = list(value[0].keys())
    if any(list(r.keys()) != columns or not all(is_leaf(c) for c in r.values()) for r in value):
        return None
    return columns


def as_matrix(value) -> list[str] | None:
    """The shared column keys when `value` is {row: {column: leaf}} with one set of columns, else None."""
    if not isinstance(value, dict) or not value or is_leaf(value):
        return None
    rows = list(value.values())
    if not all(isinstance(r, dict) and not is_leaf(r) and r for r in rows):
        return None
    columns = list(rows[0].keys())
    if any(list(r.keys()) != columns or not all(is_leaf(c) for c in r.values()) for r in rows):
        return None
    return columns


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def flatten(value, prefix: str = "") -> list[tuple[str, object]]:
    if is_leaf(value) or isinstance(value, list):
        return [(prefix or "value", value)]
    out: list[tuple[str, object]] = []
    for key, item in value.items():
        out += flatten(item, f"{prefix} / {key}" if prefix else str(key))
    return out


def render_numbers(value, depth: int = 4, prefix: str = "") -> list[str]:
    """Tables for one `numbers` (or `paper`) object: matrices as tables, nested groups as headings
    (or, with a `prefix`, as bold labels `prefix / key`: an included block adds no headings to its page)."""
    records = as_records(value)
    if records is not None:
        return table([str(c) for c in records], [[fmt_cell(r[c]) for c in records] for r in value]) + [""]
    columns = as_matrix(value)
    if columns is not None:
        return table([""] + [str(c) for c in columns],
                     [[str(name)] + [fmt_cell(cell) for cell in row.values()] for name, row in value.items()]) + [""]
    if is_leaf(value):
        return [fmt_cell(value), ""]
    leaves = {k: v for k, v in value.items() if is_leaf(v)}
    lines = table(["", "value"], [[str(k), fmt_cell(v)] for k, v in leaves.items()]) + [""] if leaves else []
    for key, item in value.items():
        if key in leaves:
            continue
        if depth > 6:
            lines += table(["", "value"], [[path, fmt_cell(v)] for path, v in flatten(item, str(key))]) + [""]
            continue
        if prefix:
            label = f"{prefix} / {key}"
            lines += [f"**{label}**", ""] + render_numbers(item, depth + 1, label)
        else:
            lines += ["#" * depth + f" {key}", ""] + render_numbers(item, depth + 1)
    return lines


def freshness(record: dict) -> str:
    try:
        current = results_io.source_hash(record.get("sources", []))
    except FileNotFoundError as missing:
        return f"**stale** ({missing})"
    if current != record.get("source_hash"):
        return "**stale**: the sources it exercised have changed since it ran"
    return "current: the sources it exercised are unchanged"


def render_record(record: dict) -> list[str]:
    machine = record.get("machine", {})
    where = ", ".join(f"{k} {v}" for k, v in machine.items() if v is not None)
    lines = [f"## {record['name']}", "",
             f"- command: `{record.get('command', '')}`",
             f"- commit {record.get('commit', 'unknown')[:12]}, {record.get('date', '')}; {where}",
             f"- budgets: {fmt_cell(record.get('budgets', {})) or '—'}; seeds: {fmt_cell(record.get('seeds', [])) or '—'}",
             f"- {freshness(record)}", ""]
    if record.get("notes"):
        lines += [record["notes"].strip(), ""]
    lines += render_numbers(record.get("numbers", {}), 3)
    if record.get("paper"):
        lines += ["### The paper's numbers", ""] + render_numbers(record["paper"], 4)
    return lines


def render(results: Path | None = None) -> str:
    results = results or results_io.RESULTS
    lines = [INTRO]
    records = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    if not records:
        lines.append("No result has been written yet.\n")
    for record in records:
        lines += render_record(record)
    return "\n".join(lines).rstrip("\n") + "\n"


class IncludeError(ValueError):
    """A results block names a result or a path that does not exist, or is not closed."""


def load_record(name: str, results: Path, page: str) -> dict:
    path = results / f"{name}.json"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not path.is_file():
        known = ", ".join(sorted(p.stem for p in results.glob("*.json"))) or "none"
        raise IncludeError(f"{page}: no result named {name!r} (no {results.name}/{name}.json); "
                           f"known results: {known}")
    return json.loads(path.read_text())


def select(value, keys: list[str], name: str, page: str):
    """The sub-object of `value` at `keys`, or IncludeError naming the first key that is missing."""
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            where = "/".join(keys[:depth]) or "the top level"
            choices = ", ".join(map(str, value)) if isinstance(value, dict) else "none (not a table)"
            raise IncludeError(f"{page}: result {name!r} has no key {key!r} under {where}; keys there: {choices}")
        value = value[key]
    return value


def parse_spec(spec: str, page: str) -> tuple[str, str, list[str]]:
    """'NAME [paper: | freshness:] [a/b]' -> (name, part: 'numbers', 'paper' or 'freshness', [a, b])."""
    name, _, rest = spec.strip().partition(" ")
    if not name:
        raise IncludeError(f"{page}: a results block names no result; write <!-- results: NAME [path] -->")
    part, rest = "numbers", rest.strip()
    for prefix in ("paper:", "freshness:"):
        if rest.startswith(prefix):
            part, rest = prefix[:-1], rest[len(prefix):].strip()
    return name, part, [key.strip() for key in rest.split("/") if key.strip()]


def block_tables(record: dict, part: str, keys: list[str], page: str) -> list[str]:
    """The tables of one block: the selected numbers (or paper's), and the paper's beside ours at that path."""
    name = record["name"]
    if part == "freshness":
        return []
    title = " / ".join([name] + (["the paper"] if part == "paper" else []) + keys)
    lines = render_numbers(select(record.get(part) or {}, keys, name, page), 4, title)
    if part == "numbers" and record.get("paper"):
        try:
            paper = select(record["paper"], keys, name, page)
        except IncludeError:
            paper = None
        if paper:
            lines += ["**The paper's numbers**", ""] + render_numbers(paper, 4, " / ".join(["the paper"] + keys))
    return lines


def render_block(spec: str, page: Path, results: Path, docs: Path) -> str:
    """The text that goes between a block's markers on `page`."""
    label = page.relative_to(docs).as_posix()
    name, part, keys = parse_spec(spec, label)
    record = {**load_record(name, results, label), "name": name}
    link = os.path.relpath(docs / "results.md", page.parent).replace(os.sep, "/")
    where = (f"`{part}` / " + " / ".join(f"`{k}`" for k in keys) if keys
             else "all" if part == "numbers" else f"`{part}`" if part == "paper" else "its freshness")
    lines = [f"*Rendered from `benchmarks/results/{name}.json` ({where}) by `python benchmarks/render_results.py`; "
             f"{freshness(record)}. The whole run: [{name} on the results page]({link}#{name.lower()}).*", ""]
    lines += block_tables(record, part, keys, label)
    return "\n".join(lines).rstrip("\n") + "\n\n"


def fill_page(text: str, page: Path, results: Path | None = None, docs: Path | None = None) -> str:
    """`text` with every results block of `page` filled; IncludeError on an unclosed block."""
    results, docs = results or results_io.RESULTS, docs or DOCS
    label = page.relative_to(docs).as_posix()
    if len(OPENER.findall(text)) != len(CLOSER.findall(text)):
        raise IncludeError(f"{label}: every <!-- results: NAME --> line needs its own <!-- /results --> line after it")
    return BLOCK.sub(lambda m: m.group(1) + "\n" + render_block(m.group("spec"), page, results, docs)
                     + m.group(4), text)


def rendered_pages(results: Path | None = None, docs: Path | None = None) -> dict[Path, str]:
    """docs/results.md and every page with a results block -> its rendered text."""
    results, docs = results or results_io.RESULTS, docs or DOCS
    pages = {docs / "results.md": render(results)}
    for page in sorted(docs.rglob("*.md")):
        if page == docs / "results.md":
            continue
        text = page.read_text(encoding="utf-8")
        if OPENER.search(text) or CLOSER.search(text):
            pages[page] = fill_page(text, page, results, docs)
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when docs/results.md or a page's results block is out of date")
    args = parser.parse_args(argv)
    try:
        pages = rendered_pages()
    except IncludeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stale = [p for p, text in pages.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    for page in stale:
        name = page.relative_to(results_io.REPO)
        if args.check:
            print(f"{name} is out of date: run python benchmarks/render_results.py")
        else:
            page.write_text(pages[page], encoding="utf-8")
            print(f"wrote {name}")
    if not stale:
        print(f"docs are up to date ({len(pages)} pages rendered)")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
