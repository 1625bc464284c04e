"""`sgtool eval --predictions FILE`: any code base's predictions, scored with sgtool's metrics.

Ground truth comes from the prepared dataset (`--dataset`, checked against the file's own ground truth
when the file carries one) or, without `--dataset`, from the file alone; then the metrics that need
training statistics (zR, head/body/tail mR) are left out and the report says so. Images are matched by
id when the file names them, else by order. Nothing is written: the console (or `--json`) gets the report.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sgtool.data.graphs import SPLIT_CODES, SceneGraphs, take_ragged
from sgtool.data.predictions import Predictions
from sgtool.data.sgg_h5 import Vocabulary
from sgtool.errors import SgtoolError
from sgtool.eval.arrays import scene_graphs_from_arrays
from sgtool.eval.formats import LoadedPredictions, read_prediction_file
from sgtool.eval.metrics import TASKS, EvalResult, check_empty_images, evaluate
from sgtool.eval.report import EvalOutcome, report_payload
from sgtool.eval.sgbench import sgbench_metrics
from sgtool.flags import flag
from sgtool.ui import SILENT, Reporter
from sgtool.workspace import Workspace, check_names

NO_STATISTICS = (f"Without {flag('dataset')} there are no training statistics, so zR@K / ng-zR@K (seen triplets) and "
                 "head/body/tail-mR@K (predicate groups) are left out.")


def select_images(pred: Predictions, images: np.ndarray) -> Predictions:
    """The predictions of the chosen images, in the given order (rows renumbered)."""
    box_rows, box_offsets = take_ragged(pred.box_offsets, images)
    pair_rows, pair_offsets = take_ragged(pred.pair_offsets, images)
    new_box = np.zeros(len(pred.labels), np.int64)
    new_box[box_rows] = np.arange(len(box_rows))
    labels = None if pred.pair_labels is None else pred.pair_labels[pair_rows]
    return Predictions(pred.image_ids[images], box_offsets, pred.boxes[box_rows], pred.labels[box_rows],
                       pred.scores[box_rows], pair_offsets, new_box[pred.pairs[pair_rows]], pred.rel_scores[pair_rows],
                       dict(pred.meta), labels)


def match_images(path: Path, loaded: LoadedPredictions, gt: SceneGraphs, where: str) -> np.ndarray:
    """For each GT image, the file's image row: by id when the file names ids, else by order."""
    n_file = loaded.predictions.num_images
    if not loaded.named_ids:
        if n_file != gt.num_images:
            raise SgtoolError(f"{path} names no image ids, so its images are matched by order, but it holds {n_file} "
                              f"images and {where} {gt.num_images}.", "Predict the same images, in the split's order.")
        return np.arange(n_file)
    ids = loaded.predictions.image_ids
    order = np.argsort(ids, kind="stable")
    at = np.minimum(np.searchsorted(ids[order], gt.image_ids), max(n_file - 1, 0))
    found = (ids[order][at] == gt.image_ids) if n_file else np.zeros(gt.num_images, bool)
    extra = np.setdiff1d(ids, gt.image_ids)
    if not found.all() or len(extra):
        missing = gt.image_ids[~found]
        what = (f"{len(missing)} of the {gt.num_images} images of {where} are missing (first: id {missing[0]})"
                if len(missing) else f"{len(extra)} of its images are not in {where} (first: id {extra[0]})")
        raise SgtoolError(f"{path} holds predictions for {n_file} images, matched by id: {what}.",
                          f"Predict exactly the images of the split you evaluate on ({flag('split')}).")
    return order[at]


def check_file_ground_truth(path: Path, file_gt: SceneGraphs, gt: SceneGraphs, where: str) -> None:
    """The file's own ground truth must be the dataset's: same boxes per image, labels and relations."""
    differs = np.flatnonzero((file_gt.box_counts() != gt.box_counts()) | (file_gt.relations.counts() != gt.relations.counts()))
    if not len(differs):
        triplets = [np.column_stack([g.labels[g.relations.pairs], g.relations.predicates]) for g in (file_gt, gt)]
        bad = np.any(file_gt.labels != gt.labels) or not np.array_equal(*triplets)
        differs = np.array([0]) if bad else differs
    if len(differs):
        raise SgtoolError(f"The ground truth inside {path} differs from {where} (first at image {differs[0]} in order): "
                          "it was made for another dataset or split.", f"Pass the {flag('dataset')} and {flag('split')} it was made on.")


def guess_task(pred: Predictions, gt: SceneGraphs) -> str:
    """predcls when the predictions keep the GT boxes and labels, sgcls when only the boxes, else sgdet."""
    if not np.array_equal(np.diff(pred.box_offsets), gt.box_counts()) or not np.allclose(pred.boxes, gt.boxes, atol=1e-2):
        return "sgdet"
    return "predcls" if np.array_equal(pred.labels, gt.labels) else "sgcls"


def widen(pred: Predictions, num_predicates: int, path: Path) -> Predictions:
    """SGBench triplet lists know only the predicates they use: pad their columns to the vocabulary's."""
    have = pred.rel_scores.shape[1]
    if have > num_predicates:
        raise SgtoolError(f"{path} scores {have} predicate columns, the vocabulary has {num_predicates}.",
                          f"Evaluate it against the dataset it was made for ({flag('dataset')}).")
    if have < num_predicates:
        pred.rel_scores = np.pad(pred.rel_scores, ((0, 0), (0, num_predicates - have)))
    return pred


def _dataset_ground_truth(ws: Workspace, path: Path, loaded: LoadedPredictions, dataset: str, split: str):
    from sgtool.data.prepared import load_prepared, load_prepared_priors

    prepared = load_prepared(ws, dataset)
    gt = prepared.graphs.split_subset(split)
    where = f"the {split} split of '{prepared.name}'"
    rows = match_images(path, loaded, gt, where)
    if loaded.gt is not None:
        check_file_ground_truth(path, scene_graphs_from_arrays([loaded.gt[r] for r in rows], split), gt, where)
    return prepared.name, gt, rows, prepared.vocab, load_prepared_priors(ws, prepared.name)


def _file_ground_truth(path: Path, loaded: LoadedPredictions, split: str):
    if loaded.gt is None:
        raise SgtoolError(f"{path} carries no ground truth ({loaded.format} format), so there is nothing to score against.",
                          f"Pass {flag('dataset')} NAME (a dataset prepared with `sgtool prepare`) and {flag('split')}.")
    gt = scene_graphs_from_arrays(loaded.gt, split)
    if loaded.named_ids:
        gt.image_ids = loaded.predictions.image_ids.copy()
    pred = loaded.predictions
    n_obj = int(max(gt.labels.max(initial=0), pred.labels.max(initial=0)))
    vocab = Vocabulary([f"object_{i}" for i in range(1, n_obj + 1)],
                       [f"predicate_{i}" for i in range(1, pred.rel_scores.shape[1])])
    return "the file's own ground truth", gt, np.arange(gt.num_images), vocab, None


def score_predictions(path: Path, loaded: LoadedPredictions, gt: SceneGraphs, rows: np.ndarray, *, num_predicates: int,
                      task: str | None = None, ks: tuple[int, ...] = (20, 50, 100), priors: dict | None = None,
                      empty_images: str = "zero", reporter: Reporter = SILENT) -> tuple[EvalResult, Predictions, str]:
    """sgtool's metrics and SGBench's on the file's images `rows` (one per GT image, in GT order)."""
    from sgtool.eval.run_eval import seen_triplets

    pred = widen(select_images(loaded.predictions, rows), num_predicates, path)
    pred.image_ids = gt.image_ids.copy()
    task = task or loaded.task or guess_task(pred, gt)
    result = evaluate(gt, pred, task=task, num_predicates=num_predicates, ks=ks,
                      predicate_groups=None if priors is None else priors.get("predicate_groups"),
                      seen_triplets=None if priors is None else seen_triplets(priors), reporter=reporter,
                      empty_images=empty_images)
    ng_lists = None
    if loaded.format == "sgbench":  # its own no-graph-constraint list (none given: PRank undefined, as in SGBench)
        ng_lists = [np.zeros((0, 3), np.int64)] * gt.num_images if loaded.ng_triplets is None else \
            [loaded.ng_triplets[r] for r in rows]
    extra, conventions = sgbench_metrics(gt, pred, result.hits, tuple(ks), task, ng_lists)
    result.metrics.update(extra)
    result.conventions.update(conventions)
    return result, pred, task


def evaluate_file(path: Path, gt: SceneGraphs, *, fmt: str | None = None, num_predicates: int | None = None,
                  **options) -> EvalResult:
    """The Python API of `eval --predictions`: a prediction file (any format) against the ground truth given,
    images matched by id when the file names them, else by order; options as `score_predictions`'."""
    loaded = read_prediction_file(Path(path), fmt)
    rows = match_images(Path(path), loaded, gt, "the ground truth given")
    width = num_predicates or max(loaded.predictions.rel_scores.shape[1], int(gt.relations.predicates.max(initial=0)) + 1)
    return score_predictions(Path(path), loaded, gt, rows, num_predicates=width, **options)[0]


def _check_options(predictions: Path | None, run: str | None, dump_graphs: int) -> None:
    if predictions is None:
        raise SgtoolError(f"{flag('format')} and {flag('dataset')} describe a predictions file, but no {flag('predictions')} was given.",
                          f"Pass {flag('predictions')} FILE, or leave {flag('format')} and {flag('dataset')} out to evaluate a run.")
    if run is not None or dump_graphs:
        option = flag("run") if run is not None else flag("dump_graphs")
        raise SgtoolError(f"{option} applies to a run's evaluation, not to {flag('predictions')}.", f"Leave {option} out.")


def run_external_eval(ws: Workspace, *, predictions: Path | None, fmt: str | None = None, dataset: str | None = None,
                      split: str = "test", task: str | None = None, metrics: list[str] | None = None,
                      ks: tuple[int, ...] = (20, 50, 100), empty_images: str = "zero", run: str | None = None,
                      dump_graphs: int = 0, reporter: Reporter = SILENT) -> EvalOutcome:
    from sgtool.eval.run_eval import check_available, check_ks, check_metrics, metric_k

    _check_options(predictions, run, dump_graphs)
    check_names(dataset=dataset)
    selected = check_metrics(metrics or [])
    check_empty_images(empty_images)
    ks = check_ks(tuple(sorted(set(ks) | {k for k in map(metric_k, selected) if k is not None})))
    if split not in SPLIT_CODES:
        raise SgtoolError(f"Unknown split '{split}'.", f"Use one of: {', '.join(SPLIT_CODES)}.")
    if task is not None and task not in TASKS:
        raise SgtoolError(f"Unknown task '{task}' (known tasks: {', '.join(TASKS)}).", f"Pass {flag('task')} predcls, sgcls or sgdet.")
    path = Path(predictions)
    loaded = read_prediction_file(path, fmt)
    name, gt, rows, vocab, priors = (_dataset_ground_truth(ws, path, loaded, dataset, split) if dataset is not None
                                     else _file_ground_truth(path, loaded, split))
    if len(gt.relations) == 0:
        raise SgtoolError(f"{name} holds no annotated relation to evaluate.", f"Evaluate another split with {flag('split')}.")
    reporter.info(f"Evaluating {path.name} ({loaded.format}) against {name} ({gt.num_images} images).")
    result, pred, task = score_predictions(path, loaded, gt, rows, num_predicates=vocab.num_predicate_classes, task=task,
                                           ks=ks, priors=priors, empty_images=empty_images, reporter=reporter)
    check_available(selected, result, task)
    outcome = EvalOutcome(f"file {path.name}", name, split, task, ks, result, None, selected,
                          head_meta=dict(pred.meta.get("head_meta") or {}))
    outcome.payload = report_payload(outcome, vocab, {"head": pred.meta.get("head")})
    outcome.payload.update({"predictions": str(path), "format": loaded.format,
                            "notes": [] if priors is not None else [NO_STATISTICS]})
    return outcome
