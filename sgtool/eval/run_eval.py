"""The `eval` stage: a run's predictions against its dataset's ground truth, then a report.

Reads <ws>/runs/<run>/predictions/<split>.h5, checks it belongs to the run's dataset (vocabulary
fingerprint, image ids), evaluates with the priors' predicate groups and the training-seen
triplets, and writes <ws>/reports/<run>/ (report.json, report.md, per-predicate recall plot,
and graphs/ with --dump-graphs) in one rename.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from sgtool import atomic
from sgtool.config import read_yaml
from sgtool.data.graphs import SPLIT_CODES, SceneGraphs
from sgtool.data.predictions import Predictions, read_predictions, vocabulary_fingerprint
from sgtool.data.prepared import PreparedDataset, load_prepared, load_prepared_priors
from sgtool.data.sgg_h5 import Vocabulary
from sgtool.errors import SgtoolError
from sgtool.eval import TASKS, EvalResult, evaluate, parse_metric
from sgtool.eval.metrics import check_empty_images
from sgtool.eval.report import EvalOutcome
from sgtool.flags import flag
from sgtool.ui import SILENT, Reporter
from sgtool.workspace import Workspace

DEFAULT_KS = (20, 50, 100)
MAX_K = 1_000_000  # far beyond any image's ranked triplets; keeps K a sane int64 everywhere


# ---------------------------------------------------------------- evaluation shared with `train`

def seen_triplets(priors: dict[str, np.ndarray]) -> np.ndarray:
    """(T, 3) [subject label, predicate, object label] of every triplet seen in training."""
    subj, obj, pred = np.nonzero(priors["counts"][:, :, 1:] > 0)
    return np.stack([subj, pred + 1, obj], axis=1).astype(np.int64)


def evaluate_predictions(gt: SceneGraphs, predictions: Predictions, task: str, priors: dict[str, np.ndarray],
                         vocab: Vocabulary, ks: tuple[int, ...] = DEFAULT_KS, reporter: Reporter = SILENT,
                         empty_images: str = "zero") -> EvalResult:
    """The metric engine on one split, with the dataset's predicate groups and seen triplets."""
    return evaluate(gt, predictions, task=task, num_predicates=vocab.num_predicate_classes, ks=tuple(ks),
                    predicate_groups=priors.get("predicate_groups"), seen_triplets=seen_triplets(priors),
                    reporter=reporter, empty_images=empty_images)


# ---------------------------------------------------------------- options

def parse_ks(text: str | None) -> tuple[int, ...]:
    if text is None or not str(text).strip():
        return DEFAULT_KS
    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    if not all(re.fullmatch("[0-9]+", part) for part in parts):  # int() would take '5_0' and non-ASCII digits
        raise SgtoolError(f"{flag('k')} '{text}' is not a comma-separated list of whole numbers.", f"Example: {flag('k')} 20,50,100")
    ks = sorted({int(part) for part in parts})
    if not ks or ks[0] < 1:
        raise SgtoolError(f"{flag('k')} '{text}' must list positive numbers.", f"Example: {flag('k')} 20,50,100")
    return check_ks(tuple(ks))


def check_ks(ks: tuple[int, ...]) -> tuple[int, ...]:
    if ks and max(ks) > MAX_K:
        raise SgtoolError(f"K = {max(ks)} is beyond the largest K sgtool evaluates ({MAX_K:,}).",
                          f"Pass a K no larger than the triplets an image can have, e.g. {flag('k')} 20,50,100.")
    return ks


def metric_k(name: str) -> int | None:
    _, sep, k = name.rpartition("@")
    return int(k) if sep and k.isdigit() else None


def check_metrics(names: list[str]) -> list[str]:
    """Validate --metric names with the engine's parser (an unknown one lists the valid names)."""
    return list(dict.fromkeys(parse_metric(name) for name in names))


def check_available(selected: list[str], result: EvalResult, task: str) -> None:
    missing = [name for name in selected if name not in result.metrics]
    if missing:
        raise SgtoolError(f"The metric {missing[0]} is not computed for these {task} predictions "
                          "(A@K needs predcls or sgcls, complete-* a dataset with complete ground truth, "
                          "k-lists are k1, k10 and kfree).", f"Leave {flag('metric')} out to see every metric computed.")


def run_settings(ws: Workspace, run: str) -> dict:
    path = ws.require_run(run) / "config.yaml"
    if not path.exists():
        raise SgtoolError(f"The run '{run}' has no config.yaml, so its dataset is unknown.",
                          "It may be unfinished or not a relation-head run; train again.")
    settings = read_yaml(path)
    if not settings.get("dataset"):
        raise SgtoolError(f"{path} does not name the run's dataset.", "Train again, or add `dataset: NAME` to it.")
    return settings


def check_belongs(predictions: Predictions, prepared: PreparedDataset, gt: SceneGraphs, split: str, path: Path) -> None:
    """A predictions file made for another dataset (or split) is refused in one sentence."""
    made_for = predictions.meta.get("dataset", "an unknown dataset")
    fingerprint = predictions.meta.get("vocabulary_fingerprint")
    if fingerprint is not None and fingerprint != vocabulary_fingerprint(prepared.vocab):
        made = f"an earlier preparation of '{made_for}'" if made_for == prepared.name else f"'{made_for}'"
        raise SgtoolError(f"{path} was made for {made}, whose vocabulary differs from the one '{prepared.name}' holds now.",
                          "Train the run again on the dataset as it is now, or evaluate against the dataset it was made for.")
    labels, num_objects = predictions.labels, len(prepared.vocab.objects)
    if len(labels) and (labels.min() < 1 or labels.max() > num_objects):
        label = labels.max() if labels.max() > num_objects else labels.min()
        raise SgtoolError(f"{path}: object label {label} is outside the vocabulary of {num_objects} classes of "
                          f"'{prepared.name}'.", "Predict this split of this dataset again.")
    if predictions.num_images != gt.num_images or not np.array_equal(predictions.image_ids, gt.image_ids):
        raise SgtoolError(f"{path} holds predictions for {predictions.num_images} images that are not the "
                          f"{gt.num_images} {split} images of '{prepared.name}' (it was made for '{made_for}').",
                          "Predict this split of this dataset again.")


def resolve_task(task: str | None, predictions: Predictions, settings: dict, path: Path) -> str:
    made = predictions.meta.get("task") or settings.get("task")
    if task is not None and task not in TASKS:
        raise SgtoolError(f"Unknown task '{task}' (known tasks: {', '.join(TASKS)}).", f"Pass {flag('task')} predcls, sgcls or sgdet.")
    if task is not None and made is not None and task != made:
        raise SgtoolError(f"{path} holds {made} predictions, so it cannot be evaluated as {task}.",
                          f"Leave {flag('task')} out, or train a run for {task}.")
    return task or made or "predcls"


# ---------------------------------------------------------------- the stage

def run_eval(ws: Workspace, *, run: str | None = None, split: str = "test", task: str | None = None,
             metrics: list[str] | None = None, ks: tuple[int, ...] = DEFAULT_KS, dump_graphs: int = 0,
             reporter: Reporter = SILENT, empty_images: str = "zero") -> EvalOutcome:
    from sgtool.eval.report import dump_graphs as write_graphs, write_report

    selected = check_metrics(metrics or [])
    check_empty_images(empty_images)
    ks = check_ks(tuple(sorted(set(ks) | {k for k in map(metric_k, selected) if k is not None})))
    if split not in SPLIT_CODES:
        raise SgtoolError(f"Unknown split '{split}'.", f"Use one of: {', '.join(SPLIT_CODES)}.")
    if dump_graphs < 0:
        raise SgtoolError(f"{flag('dump_graphs')} must be 0 or more, not {dump_graphs}.", "Pass how many images to dump.")
    run = run if run is not None else ws.latest_run()
    settings = run_settings(ws, run)
    path = ws.run_dir(run) / "predictions" / f"{split}.h5"
    predictions = read_predictions(path)
    prepared = load_prepared(ws, settings["dataset"])
    gt = prepared.graphs.split_subset(split)
    check_belongs(predictions, prepared, gt, split, path)
    task = resolve_task(task, predictions, settings, path)
    if len(gt.relations) == 0:
        raise SgtoolError(f"The {split} split of '{prepared.name}' holds no annotated relation to evaluate.",
                          f"Evaluate another split with {flag('split')}.")
    priors = load_prepared_priors(ws, prepared.name)
    reporter.info(f"Evaluating run {run} on the {split} split of '{prepared.name}' ({task}, {gt.num_images} images).")
    result = evaluate_predictions(gt, predictions, task, priors, prepared.vocab, ks, reporter, empty_images)
    check_available(selected, result, task)
    outcome = EvalOutcome(run, prepared.name, split, task, ks, result, ws.report_dir(run), selected,
                          head_meta=dict(predictions.meta.get("head_meta") or {}))
    ws.check_writable()
    with atomic.exclusive(ws.report_dir(run), f"the report of run '{run}'"), \
            atomic.atomic_directory(ws.report_dir(run)) as staging:
        write_report(staging, outcome, prepared.vocab, settings)
        if dump_graphs:
            outcome.graphs_dumped = write_graphs(staging / "graphs", outcome.report_dir / "graphs", gt,
                                                 predictions, result, prepared, dump_graphs, max(ks))
    return outcome


def evaluate_run(ws: Workspace, run: str, split: str, passed: tuple[str, ...], options: dict[str, Any]) -> EvalOutcome:
    """A relation-head run's evaluation entry point in the registry."""
    return run_eval(ws, run=run, split=split, **options)
