"""The eval report: report.json, report.md (tables + each metric's convention), a per-predicate
recall bar chart (drawn by viz/plots.py), the console table, and graph.json dumps of a few images
with hits marked."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sgtool import __version__, atomic, ui
from sgtool.data.graphs import SceneGraphs
from sgtool.data.predictions import Predictions
from sgtool.data.prepared import PreparedDataset
from sgtool.eval.metrics import EvalResult, Hits
from sgtool.data.sgg_h5 import Vocabulary
from sgtool.viz.graph_json import build_graph, relative_image, write_graph
from sgtool.viz.plots import plot_per_predicate

PLOT_NAME = "per_predicate_recall.png"


@dataclass
class EvalOutcome:
    """What `sgtool eval` computed for one run: where, on what, and the metrics."""

    run: str
    dataset: str
    split: str
    task: str
    ks: tuple[int, ...]
    result: EvalResult
    report_dir: Path | None  # None: nothing written (`eval --predictions FILE`)
    selected: list[str] = field(default_factory=list)  # metrics named with --metric, in order
    graphs_dumped: int = 0
    head_meta: dict = field(default_factory=dict)  # what the head recorded while predicting (NFE, sampling statistics)
    payload: dict = field(default_factory=dict)  # everything report.json holds (set when the report is built)


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def percent(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def plotted_metric(per_predicate: dict[str, np.ndarray], ks: tuple[int, ...]) -> str | None:
    """The per-predicate recall to plot: graph-constrained at the largest K, else the first one."""
    preferred = f"R@{max(ks)}"
    if preferred in per_predicate:
        return preferred
    return next(iter(per_predicate), None)


def per_predicate_table(outcome: EvalOutcome, vocab: Vocabulary) -> dict[str, dict[str, float | None]]:
    """{metric: {predicate name: recall}} from the engine's (P,) arrays (index i = predicate i + 1)."""
    table = {}
    for name, values in outcome.result.per_predicate.items():
        values = np.asarray(values, dtype=np.float64)
        names = vocab.predicates if len(values) == len(vocab.predicates) else ["__no_relation__", *vocab.predicates]
        table[name] = {p: _finite_or_none(v) for p, v in zip(names, values) if p != "__no_relation__"}
    return table


def report_payload(outcome: EvalOutcome, vocab: Vocabulary, settings: dict) -> dict:
    result = outcome.result
    return {
        "run": outcome.run, "dataset": outcome.dataset, "split": outcome.split, "task": outcome.task,
        "head": settings.get("head"), "ks": list(outcome.ks), "sgtool_version": __version__,
        "metrics": {name: _finite_or_none(value) for name, value in result.metrics.items()},
        "conventions": dict(result.conventions),
        "per_predicate": per_predicate_table(outcome, vocab),
        "plot": PLOT_NAME,
        **({"head_meta": outcome.head_meta} if outcome.head_meta else {}),
    }


def metric_grid(metrics: dict[str, float | None], conventions: dict[str, str]) -> tuple[list[int], list[tuple], str]:
    """Metrics as rows of a family x K grid: (the Ks, [(family, {K: value}, convention)], shared suffix)."""
    from sgtool.eval import metric_family

    from sgtool.eval.metrics import METRIC_FAMILIES

    own = [text for name, text in conventions.items() if name in metrics and _in_families(name, METRIC_FAMILIES)]
    suffix = _common_suffix(own or list(conventions.values()))
    rows: dict[str, tuple[dict[int, float | None], str]] = {}
    for name, value in metrics.items():
        family, k = metric_family(name)
        if not k:  # a metric without K: listed apart (single_metrics)
            continue
        text = conventions.get(name, "")
        cut = suffix and text.endswith(suffix)
        rows.setdefault(family, ({}, text[: len(text) - len(suffix)] if cut else text))[0][k] = value
    ks = sorted({k for values, _ in rows.values() for k in values})
    return ks, [(family, values, text) for family, (values, text) in rows.items()], suffix.lstrip("; ")


def _in_families(name: str, families) -> bool:
    from sgtool.eval import metric_family

    family = metric_family(name)[0]
    return family in families or family.split("-")[0] in ("k1", "k10", "kfree")


def single_metrics(metrics: dict[str, float | None], conventions: dict[str, str]) -> list[str]:
    """One line per metric without K (SGBench's InstR in %, PRank as a rank)."""
    from sgtool.eval import metric_family

    lines = []
    for name, value in metrics.items():
        if metric_family(name)[1] == 0:
            shown = percent(value) + " %" if name != "PRank" else ("n/a" if value is None or value != value else f"{value:.3f}")
            lines.append(f"{name} {shown}: {conventions.get(name, '')}")
    return lines


def _common_suffix(texts: list[str]) -> str:
    if len(texts) < 2:
        return ""
    reversed_common = os.path.commonprefix([t[::-1] for t in texts])[::-1]
    cut = reversed_common.find("; ")
    return reversed_common[cut:] if cut >= 0 else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(payload: dict) -> str:
    ks, rows, shared = metric_grid(payload["metrics"], payload["conventions"])
    lines = [f"# Evaluation of run `{payload['run']}`", "",
             f"Dataset `{payload['dataset']}`, split `{payload['split']}`, task {payload['task']}, "
             f"head `{payload['head']}`. Values in %.", "",
             "## Metrics", "", "| metric | " + " | ".join(f"@{k}" for k in ks) + " | convention |",
             "| --- |" + " ---: |" * len(ks) + " --- |"]
    for family, values, text in rows:
        lines.append(f"| {family} | " + " | ".join(percent(values.get(k)) for k in ks) + f" | {_cell(text)} |")
    if shared:
        lines += ["", f"Every metric: {shared}."]
    lines += [f"- {line}" for line in single_metrics(payload["metrics"], payload["conventions"])]
    names = list(payload["per_predicate"])
    if names:
        first = payload["per_predicate"][names[0]]
        lines += ["", "## Per-predicate recall (%)", "", f"![per-predicate recall]({PLOT_NAME})", "",
                  "| predicate | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
        for predicate in first:
            cells = [percent(payload["per_predicate"][n].get(predicate)) for n in names]
            lines.append(f"| {predicate} | " + " | ".join(cells) + " |")
    if payload.get("head_meta"):
        lines += ["", "## What the head recorded while predicting", ""]
        lines += [f"- {name}: {value}" for name, value in payload["head_meta"].items()]
    lines += ["", "## Conventions (each metric, in full)", ""]
    lines += [f"- **{name}**: {text}" for name, text in payload["conventions"].items()]
    return "\n".join(lines) + "\n"


def write_report(folder: Path, outcome: EvalOutcome, vocab: Vocabulary, settings: dict) -> dict:
    payload = outcome.payload = report_payload(outcome, vocab, settings)
    atomic.write_json(folder / "report.json", payload)
    atomic.write_text(folder / "report.md", markdown(payload))
    metric = plotted_metric(outcome.result.per_predicate, outcome.ks)
    if metric:
        plot_per_predicate(folder / PLOT_NAME, payload["per_predicate"][metric], metric,
                           f"{outcome.run}: {outcome.dataset} {outcome.split} ({outcome.task})")
    return payload


# ---------------------------------------------------------------- console

def show_eval(outcome: EvalOutcome, as_json: bool = False) -> None:
    metrics, conventions = outcome.result.metrics, outcome.result.conventions
    if outcome.selected:
        values = {name: _finite_or_none(metrics[name]) for name in outcome.selected}
        if as_json:
            ui.print_json(values)
        else:
            for name, value in values.items():
                ui.out.print(f"{name} {percent(value)}", highlight=False)
        return
    if as_json:  # everything report.json carries (head meta included), and where it is
        where = {"report": str(outcome.report_dir / "report.json")} if outcome.report_dir is not None else {}
        ui.print_json({"run": outcome.run, "dataset": outcome.dataset, "split": outcome.split, "task": outcome.task,
                       "metrics": {n: _finite_or_none(v) for n, v in metrics.items()}, **outcome.payload, **where})
        return
    ks, rows, shared = metric_grid(metrics, conventions)
    ui.print_table(f"{outcome.run} on {outcome.dataset} {outcome.split} ({outcome.task}), values in %",
                   ("metric", *(f"@{k}" for k in ks), "convention"),
                   ((family, *(percent(values.get(k)) for k in ks), text) for family, values, text in rows))
    if shared:
        ui.out.print(f"Every metric: {shared}.", highlight=False)
    for line in single_metrics({n: _finite_or_none(v) for n, v in metrics.items()}, conventions):
        ui.out.print(line, highlight=False)
    for note in outcome.payload.get("notes", []):
        ui.out.print(note, highlight=False)
    if outcome.report_dir is not None:
        ui.out.print(f"Report: {outcome.report_dir / 'report.md'}", highlight=False)


# ---------------------------------------------------------------- graph dumps

def dump_graphs(folder: Path, final_folder: Path, gt: SceneGraphs, predictions: Predictions, result: EvalResult,
                prepared: PreparedDataset, count: int, k: int) -> int:
    """<image_id>.gt.json and <image_id>.pred.json for the first `count` images with GT relations."""
    hits = result.hits
    images = np.flatnonzero(gt.relations.counts() > 0)[:count]
    for i in images:
        image_id = int(gt.image_ids[i])
        image = prepared.path / gt.files[i] if gt.files and gt.files[i] else None
        name = relative_image(image, final_folder) if image is not None and image.is_file() else None
        write_graph(folder / f"{image_id}.gt.json", _gt_graph(gt, i, hits.gt_rank < k, prepared.vocab, name))
        write_graph(folder / f"{image_id}.pred.json", _pred_graph(gt, predictions, i, hits, prepared.vocab, name, k))
    return len(images)


def _gt_graph(gt: SceneGraphs, i: int, hits: np.ndarray, vocab: Vocabulary, image: str | None) -> dict:
    lo, hi = gt.box_offsets[i], gt.box_offsets[i + 1]
    rlo, rhi = gt.relations.offsets[i], gt.relations.offsets[i + 1]
    return build_graph(image=image, width=gt.widths[i], height=gt.heights[i], boxes=gt.boxes[lo:hi],
                       labels=gt.labels[lo:hi], vocab=vocab, pairs=gt.relations.pairs[rlo:rhi] - lo,
                       predicates=gt.relations.predicates[rlo:rhi], hits=hits[rlo:rhi])


def _pred_graph(gt: SceneGraphs, pred: Predictions, i: int, hits: Hits, vocab: Vocabulary,
                image: str | None, k: int) -> dict:
    """The image's top-k graph-constrained predictions as the engine ranked them, hits marked."""
    lo, hi = pred.box_offsets[i], pred.box_offsets[i + 1]
    rows, hit = hits.top_pairs(i, k)
    return build_graph(image=image, width=gt.widths[i], height=gt.heights[i], boxes=pred.boxes[lo:hi],
                       labels=pred.labels[lo:hi], scores=pred.scores[lo:hi], vocab=vocab,
                       pairs=pred.pairs[rows] - lo, predicates=hits.pred_predicate[rows],
                       rel_scores=hits.pred_score[rows], hits=hit)
