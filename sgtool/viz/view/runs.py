"""Which runs a view shows, and each run's evaluation by the same evaluator as `sgtool eval`.

A view compares runs image by image, so every run must hold predictions for the chosen split of
one dataset. The metrics, the per-image hits and the per-predicate recall all come from
`eval.run_eval.evaluate_predictions` (the engine `sgtool eval` calls), never recomputed here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgtool.data.graphs import SPLIT_CODES, SceneGraphs
from sgtool.data.predictions import Predictions, read_predictions
from sgtool.data.prepared import PreparedDataset, load_prepared, load_prepared_priors
from sgtool.errors import SgtoolError
from sgtool.eval import EvalResult
from sgtool.eval.confusion import predicate_confusion
from sgtool.eval.run_eval import DEFAULT_KS, check_belongs, check_ks, evaluate_predictions, resolve_task, run_settings
from sgtool.flags import flag
from sgtool.workspace import Workspace, check_names


@dataclass
class ViewRun:
    """One run as the view shows it: its predictions on the split and the evaluator's result."""

    name: str
    head: str | None
    task: str
    predictions: Predictions
    result: EvalResult
    confusion: np.ndarray  # (P, P) GT predicate x predicted predicate (eval/confusion.py)


@dataclass
class ViewData:
    dataset: PreparedDataset
    split: str
    gt: SceneGraphs
    ks: tuple[int, ...]
    top: int
    runs: list[ViewRun]


def _predictions_path(ws: Workspace, run: str, split: str) -> Path:
    return ws.run_dir(run) / "predictions" / f"{split}.h5"


def pick_runs(ws: Workspace, runs: list[str] | None, split: str) -> list[str]:
    """The runs named (each must exist), else every run with predictions for the split on the latest run's dataset."""
    if split not in SPLIT_CODES:
        raise SgtoolError(f"Unknown split '{split}'.", f"Use one of: {', '.join(SPLIT_CODES)}.")
    if runs:
        for name in runs:
            check_names(run=name)
            ws.require_run(name)
        return list(dict.fromkeys(runs))
    found = [name for name in ws.runs() if _predictions_path(ws, name, split).is_file()
             and (ws.run_dir(name) / "config.yaml").is_file()]
    if not found:
        raise SgtoolError(f"No run in {ws.root} holds predictions for the {split} split.",
                          f"Train a relation head first (`sgtool train`), or pass {flag('split')}.")
    datasets = {name: run_settings(ws, name).get("dataset") for name in found}
    try:
        latest = ws.latest_run()
    except SgtoolError:  # no latest recorded: the last run found decides
        latest = None
    chosen = datasets.get(latest, datasets[found[-1]])
    return [name for name in found if datasets[name] == chosen]


def _check_same_dataset(settings: dict[str, dict]) -> str:
    names = list(settings)
    first = settings[names[0]]["dataset"]
    for name in names[1:]:
        if settings[name]["dataset"] != first:
            raise SgtoolError(f"The runs '{names[0]}' (dataset '{first}') and '{name}' (dataset "
                              f"'{settings[name]['dataset']}') were made on different datasets, so their graphs "
                              "cannot be compared image by image.", f"Pass {flag('run')} only for runs of one dataset.")
    return first


def _read_run_predictions(ws: Workspace, run: str, split: str) -> Predictions:
    path = _predictions_path(ws, run, split)
    if not path.is_file():
        raise SgtoolError(f"The run '{run}' holds no predictions for the {split} split, so there is nothing to show.",
                          f"Pick relation-head runs (see `sgtool info`), or another {flag('split')}.")
    predictions = read_predictions(path)
    made_for = predictions.meta.get("split")
    if made_for and made_for != split:
        raise SgtoolError(f"{path} holds predictions for the {made_for} split, not the {split} split.",
                          "Predict this split again, or pass the runs of one split.")
    return predictions


def load_view_data(ws: Workspace, runs: list[str], split: str, top: int) -> ViewData:
    """Read and evaluate every run (K = 20, 50, 100 and the view's top K), refusing runs that do not compare."""
    if top < 1:
        raise SgtoolError(f"{flag('top')} must be 1 or more, not {top}.", f"Pass how many predictions to show, e.g. {flag('top')} 20.")
    ks = check_ks(tuple(sorted(set(DEFAULT_KS) | {top})))
    settings = {name: run_settings(ws, name) for name in runs}
    prepared = load_prepared(ws, _check_same_dataset(settings))
    gt = prepared.graphs.split_subset(split)
    if len(gt.relations) == 0:
        raise SgtoolError(f"The {split} split of '{prepared.name}' holds no annotated relation to compare.",
                          f"Pass another {flag('split')}.")
    priors = load_prepared_priors(ws, prepared.name)
    loaded = []
    for name in runs:
        predictions = _read_run_predictions(ws, name, split)
        path = _predictions_path(ws, name, split)
        check_belongs(predictions, prepared, gt, split, path)
        task = resolve_task(None, predictions, settings[name], path)
        result = evaluate_predictions(gt, predictions, task, priors, prepared.vocab, ks)
        confusion = predicate_confusion(gt, predictions, prepared.vocab.num_predicate_classes)
        loaded.append(ViewRun(name, settings[name].get("head"), task, predictions, result, confusion))
    return ViewData(prepared, split, gt, ks, top, loaded)
