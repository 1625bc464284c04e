"""The `train` stage: fit a relation head on a prepared dataset and write a run folder.

<ws>/runs/<run>/ config.yaml, run.json, checkpoints/, predictions/{val,test}.h5, log.jsonl, metrics.json

Statistical heads (freq) `fit` in one pass: their run folder is built in a staging folder and
renamed into place, so a failed run leaves nothing behind. Trainable heads go through the one
training loop (`engine/loop.py`) and write their run folder in place while training, so it can
be resumed: run.json says "status": "running", then "complete" (or "failed"); predictions and
metrics are written atomically at the end. Bad options are refused before anything is written,
and a run name is never reused. The run folder's life (name, record, status, failures, resume
refusals) is `engine/run.py`'s Run, as for every kind.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


from sgtool import atomic
from sgtool.config import read_yaml, resolve_device, user_settings
from sgtool.data.graphs import SceneGraphs
from sgtool.data.predictions import Predictions, vocabulary_fingerprint, write_predictions
from sgtool.data.prepared import (
    PreparedDataset, dataset_fingerprint, load_prepared, load_prepared_priors,
)
from sgtool.engine.hooks import json_default
from sgtool.engine.objects import labels_from_boxes, object_source as task_objects
from sgtool.engine.record import RunRecord, TrainRequest, read_status
from sgtool.engine.run import Run
from sgtool.engine.visual import reattach, visual_source
from sgtool.errors import SgtoolError
from sgtool.flags import flag
from sgtool.heads import (
    TASKS, HeadConfig, ObjectSource, RelationHead, StatisticalHead, TrainableHead, TrainData, available_heads,
    VisualHeadConfig, config_dict, get_head, make_config,
)
from sgtool.ui import SILENT, Reporter
from sgtool.workspace import Workspace

PREDICTED_SPLITS = ("val", "test")


@dataclass
class TrainResult:
    run: str
    path: Path
    head: str
    dataset: str
    task: str
    metrics: dict[str, float]


# ---------------------------------------------------------------- options

RUN_KEYS = ("dataset", "task", "name", "detector", "config_path", "overrides", "seed", "device", "cache_features")


def check_task(task: str, head: type[RelationHead]) -> None:
    if task not in TASKS:
        raise SgtoolError(f"Unknown task '{task}' (known tasks: {', '.join(TASKS)}).", f"Pass {flag('task')} predcls, sgcls or sgdet.")
    if task not in head.tasks:
        raise SgtoolError(f"The {head.name} head does not support {flag('task')} {task}.", f"It supports: {', '.join(head.tasks)}.")


def head_config(head: type[RelationHead], config_path: Path | None, overrides: list[str],
                explicit: dict[str, Any]) -> HeadConfig:
    """Head defaults < --config YAML < --set overrides < explicit options (--epochs, --overlap, ...)."""
    settings = user_settings(config_path, overrides)
    fields = set(head.Config.__dataclass_fields__)
    for key, value in explicit.items():
        if value is None:
            continue
        if key not in fields:
            raise SgtoolError(f"The {head.name} head does not take --{key.replace('_', '-')}.",
                              f"Its settings are: {', '.join(sorted(fields))}.")
        settings[key] = value
    return make_config(head, settings)


# ---------------------------------------------------------------- the stage

def train(ws: Workspace, *, head: str, object_source: ObjectSource | None = None, reporter: Reporter = SILENT,
          **settings: Any) -> TrainResult:
    """Train a head. `settings`: the run's (dataset, task, name, detector, config_path, overrides, seed,
    device, cache_features) and the head's own options by field name (epochs=3, rank=5, ...)."""
    run_level = {key: settings.pop(key) for key in RUN_KEYS if key in settings}
    request = TrainRequest(kind=head, options=settings, reporter=reporter, **run_level)
    return train_request(ws, request, object_source)


def train_request(ws: Workspace, request: TrainRequest, object_source: ObjectSource | None = None) -> TrainResult:
    """Train a relation head; SGCls / SGDet predictions take their objects from a detector run (default: the
    latest), and features=visual|auto heads its frozen backbone's ROI features (engine/visual.py)."""
    head, task, device = str(request.kind), request.task, request.device
    head_cls = get_head(head)
    check_task(task, head_cls)
    config = head_config(head_cls, request.config_path, request.overrides, request.options)
    trainable = issubclass(head_cls, TrainableHead)
    if trainable:
        from sgtool.eval import parse_metric

        config.val_metric = parse_metric(config.val_metric)
        device = resolve_device(device)
        if config.tensorboard:
            from sgtool.engine.hooks import require_tensorboard

            require_tensorboard()  # before anything is written
    from sgtool import distributed

    device = distributed.setup(device)  # under torchrun: join the process group (a no-op otherwise)
    reporter = request.reporter if distributed.is_main() else SILENT
    prepared = load_prepared(ws, request.dataset)
    source, objects_run = ((object_source, request.detector) if object_source is not None
                           else task_objects(ws, prepared, task, request.detector, device, reporter,
                                         labels_from_boxes(head_cls)))
    visual, visual_run = visual_source(ws, prepared, head_cls, config, objects_run or request.detector, device,
                                       request.cache_features, reporter)
    priors = load_prepared_priors(ws, prepared.name)
    data = _train_data(prepared, priors, device, request.seed, reporter)
    run = distributed.broadcast(Run.claim(ws, request.name, f"{head}-{prepared.name}-{task}")
                                if distributed.is_main() else None)
    ws.check_writable()
    model = head_cls(config, prepared.vocab.num_object_classes, prepared.vocab.num_predicate_classes)
    if visual is not None:
        model.attach_visual(visual)
    record = RunRecord(run=run, head=head, dataset=prepared.name, task=task, detector=objects_run or visual_run,
                       seed=request.seed, features=config.features if isinstance(config, VisualHeadConfig) else None,
                       device=device, options=config_dict(config), dataset_sha256=dataset_fingerprint(prepared))
    run_data = RunData(prepared, priors, source, record)
    if trainable:
        with ws.training(run, prepared.name):
            metrics = _train_in_place(ws.run_dir(run), model, data, run_data, reporter)
    elif distributed.is_main():  # nothing to share out: rank 0 fits, the others wait
        with ws.training(run, prepared.name), atomic.atomic_directory(ws.run_dir(run)) as staging:
            _refuse_taken(ws, run)
            metrics = _fill_run(staging, model, data, run_data, reporter)
    else:
        metrics = {}
    if distributed.is_main():
        ws.set_latest("run", run)
    distributed.barrier()
    return TrainResult(run, ws.run_dir(run), head, prepared.name, task, metrics)


@dataclass
class RunData:
    """What writing a run's outputs needs besides the head: the dataset, its priors, the task's objects, the record."""

    prepared: PreparedDataset
    priors: dict
    source: ObjectSource
    record: RunRecord


def _refuse_taken(ws: Workspace, run: str) -> None:
    if ws.run_dir(run).exists():  # claimed free, then made by a concurrent train of the same name
        raise SgtoolError(f"A run named '{run}' was just made by another sgtool process.", f"Pick another {flag('name')}.")


def _train_data(prepared: PreparedDataset, priors: dict, device: str, seed: int,
                reporter: Reporter = SILENT) -> TrainData:
    train = prepared.graphs.split_subset("train")
    if train.num_images == 0 or len(train.relations) == 0:
        raise SgtoolError(f"The dataset '{prepared.name}' has no training relations.",
                          "Prepare a dataset whose train split holds annotated relations.")
    val = prepared.graphs.split_subset("val")
    if len(val.relations) == 0:
        reporter.warn(f"The val split of '{prepared.name}' holds no annotated relation: there are no validation "
                      "metrics, and the last epoch is kept as the best (prepare with a val split to select on it).")
    return TrainData(train, val, prepared.vocab, priors, device, seed)


def resume_train(ws: Workspace, run: str, request: TrainRequest,
                 object_source: ObjectSource | None = None) -> TrainResult:
    """Continue a killed or failed run from its last checkpoint, with the settings in its config.yaml."""
    record = _resumable_record(ws, run, request)
    with ws.training(run, record.dataset):  # one writer of the run; its dataset is not replaced meanwhile
        return _resume_held(ws, run, record, request, object_source)


def _resume_held(ws: Workspace, run: str, record: RunRecord, request: TrainRequest,
                 object_source: ObjectSource | None) -> TrainResult:
    """resume_train once this process holds the run: the same dataset, the last checkpoint, the loop."""
    folder = ws.run_dir(run)
    from sgtool.engine.checkpoint import LAST, training_state

    training_state(folder / "checkpoints" / LAST, record.head)  # unreadable: refused, run.json untouched
    head_cls = get_head(record.head)
    config = make_config(head_cls, record.options)
    from sgtool import distributed

    device = distributed.setup(resolve_device(request.device))
    reporter = request.reporter if distributed.is_main() else SILENT
    prepared = load_prepared(ws, record.dataset)
    Run(folder, record).check_dataset(prepared)
    source = object_source or task_objects(ws, prepared, record.task, record.detector, device, reporter,
                                           labels_from_boxes(head_cls))[0]
    priors = load_prepared_priors(ws, prepared.name)
    data = _train_data(prepared, priors, device, int(record.seed or 0), reporter)
    ws.check_writable()
    if distributed.is_main():
        Run(folder, record).clean_leftovers()
    model = head_cls(config, prepared.vocab.num_object_classes, prepared.vocab.num_predicate_classes)
    reattach(ws, model, record, prepared, device=device)  # features=visual: the run's detector backbone again
    record = record.replace(device=device)
    metrics = _train_in_place(folder, model, data, RunData(prepared, priors, source, record), reporter, resume=True)
    if distributed.is_main():
        ws.set_latest("run", run)
    distributed.barrier()
    return TrainResult(run, folder, record.head, prepared.name, record.task, metrics)


def retask(ws: Workspace, run: str, *, task: str, name: str | None = None, detector: str | None = None,
           device: str = "auto", reporter: Reporter = SILENT) -> TrainResult:
    """A new run holding RUN's trained weights, scoring `task`'s objects without training (a model
    trained on ground-truth pairs, evaluated in SGCls / SGDet as the community reports it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SgtoolError(f"{flag('from')} trains nothing, so it runs in one process, not under torchrun.",
                          f"Run `sgtool train {flag('from')} {run} {flag('task')} {task}` without torchrun.")
    folder = ws.require_run(run)
    if read_status(folder) != "complete" or not (folder / "config.yaml").is_file():
        raise SgtoolError(f"The run '{run}' is not a complete relation-head run, so its weights cannot be reused.",
                          "Pass a run that `sgtool train` finished (see `sgtool info`).")
    head_cls = get_head(RunRecord.read(folder).head)
    check_task(task, head_cls)
    device = resolve_device(device)
    model, record, prepared = load_trained_head(ws, run, device=device)
    visual_run = record.detector if record.features == "visual" else None
    if detector is not None and visual_run is not None and detector != visual_run:
        raise SgtoolError(f"The run '{run}' uses the ROI features of the detector '{visual_run}', not '{detector}'.",
                          f"Pass {flag('detector')} {visual_run}, or leave it out.")
    source, objects_run = task_objects(ws, prepared, task, detector or visual_run, device, reporter,
                                       labels_from_boxes(head_cls))
    priors = load_prepared_priors(ws, prepared.name)
    new = Run.claim(ws, name, f"{record.head}-{prepared.name}-{task}")
    ws.check_writable()
    record = record.replace(run=new, task=task, detector=objects_run or visual_run, from_run=run, device=device,
                            created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    reporter.info(f"Scoring the {record.head} weights of run {run} in {task} as run {new} (no training).")
    with ws.training(new, prepared.name), atomic.atomic_directory(ws.run_dir(new)) as staging:
        _refuse_taken(ws, new)
        (staging / "checkpoints").mkdir()
        for weights in ("model.npz", "model.pt"):
            if (folder / "checkpoints" / weights).is_file():
                shutil.copy2(folder / "checkpoints" / weights, staging / "checkpoints" / weights)
        metrics = write_outputs(staging, model, RunData(prepared, priors, source, record), reporter)
        Run(staging, record).complete()
        atomic.write_text(staging / "log.jsonl", json.dumps({"time": time.time(), "event": "retask", "from_run": run,
                                                             "metrics": metrics}, default=json_default) + "\n")
    ws.set_latest("run", new)
    return TrainResult(new, ws.run_dir(new), record.head, prepared.name, task, metrics)


RETASK_FLAGS = (flag("task"), flag("detector"), flag("name"))


def retask_request(ws: Workspace, run: str, request: TrainRequest) -> TrainResult:
    """`train --from RUN`: only --task, --detector and --name apply."""
    foreign = [flag for flag in request.given_flags() if flag not in RETASK_FLAGS]
    foreign += [flag("head")] if request.kind else []
    foreign += [flag("dataset")] if request.dataset else []
    if foreign:
        raise SgtoolError(f"{flag('from')} reuses a trained run as it is; it does not take {foreign[0]}.",
                          f"It takes {', '.join(RETASK_FLAGS)}; leave {foreign[0]} out.")
    return retask(ws, run, task=request.task, name=request.name, detector=request.detector, device=request.device,
                  reporter=request.reporter)


def _resumable_record(ws: Workspace, run: str, request: TrainRequest) -> RunRecord:
    """The run's record, when the run is an unfinished run of a trainable head that fits the options."""
    folder = ws.require_run(run)
    settings = read_yaml(folder / "config.yaml") if (folder / "config.yaml").is_file() else {}
    name = str(settings.get("head"))
    if not settings or name not in available_heads() or not issubclass(get_head(name), TrainableHead):
        raise SgtoolError(f"The run '{run}' is not a run of a trainable relation head, so it cannot be resumed.",
                          f"Resume a run made by `sgtool train {flag('head')} reldn|tensor|nodis|iwsl|ae`.")
    resumed = Run.resume(ws, run, request.kind, request.dataset, request.given_flags())
    resumed.require_checkpoint(folder / "checkpoints" / "last.pt")
    return resumed.record


def _fill_run(staging: Path, model: StatisticalHead, data: TrainData, run: RunData, reporter: Reporter) -> dict[str, float]:
    record = run.record
    reporter.info(f"Training the {record.head} head on '{record.dataset}' ({record.task}) as run {record.run}.")
    log = [{"time": time.time(), **entry} for entry in model.fit(data, reporter)]
    save_checkpoint(staging / "checkpoints", model)
    metrics = write_outputs(staging, model, run, reporter)
    log.append({"time": time.time(), "event": "val", "metrics": metrics})
    Run(staging, record).complete()
    atomic.write_text(staging / "log.jsonl", "".join(json.dumps(r, default=json_default) + "\n" for r in log))
    return metrics


def _train_in_place(folder: Path, model: TrainableHead, data: TrainData, run: RunData, reporter: Reporter,
                    resume: bool = False) -> dict[str, float]:
    """The training loop writes the run folder as it goes; the status in run.json says how far it got."""
    from sgtool import distributed
    from sgtool.engine.budget import build_within_memory
    from sgtool.engine.checkpoint import LAST
    from sgtool.engine.loop import read_log, run_loop, seed_everything, write_log

    record = run.record
    seed_everything(data.seed)
    build_within_memory(model, data)  # before the folder exists: a head that cannot be built changes nothing
    main = distributed.is_main()  # under torchrun only rank 0 writes the run folder
    if main:
        keeper = Run(folder, record) if resume else Run.new(folder, record)
    reporter.info(f"{'Resuming' if resume else 'Training'} the {record.head} head on '{record.dataset}' "
                  f"({record.task}, {data.device}) as run {record.run}.")
    with keeper.failures(lambda: (folder / "checkpoints" / LAST).exists()) if main else contextlib.nullcontext():
        run_loop(model, data, folder, _validator(model, data.val, run), reporter, resume=resume)
        if main:
            _select_k(folder, model, data.val, run)
        metrics = write_outputs(folder, model, run, reporter) if main else {}
    if main:
        log = read_log(folder / "log.jsonl")
        write_log(folder / "log.jsonl", [*log, {"time": time.time(), "event": "val", "metrics": metrics}])
        from sgtool.viz.curves import CURVES_NAME, draw_training_curves

        draw_training_curves(folder / "log.jsonl", folder / CURVES_NAME)
        keeper.complete()
    return metrics


def _validator(model: RelationHead, val: SceneGraphs, run: RunData) -> Callable[[], dict[str, float]]:
    """What the loop calls after an epoch: the val split's metrics ({} when it holds no relation)."""
    from sgtool.eval.run_eval import evaluate_predictions

    def validate() -> dict[str, float]:
        if len(val.relations) == 0:
            return {}
        predictions = predict_split(model, val, "val", run)
        return evaluate_predictions(val, predictions, run.record.task, run.priors, run.prepared.vocab).metrics

    return validate


def _select_k(folder: Path, model: RelationHead, val: SceneGraphs, run: RunData) -> None:
    """A head with a free k per pair (`select_k`, the tensor head's k=free) picks it on the val split by
    R@50 of each k of its grid; the choice is part of the head state, so the best checkpoint is rewritten."""
    if not hasattr(model, "select_k") or getattr(model.config, "k", None) != "free" or len(val.relations) == 0:
        return
    from sgtool.engine.checkpoint import BEST, load, save
    from sgtool.eval import evaluate

    def measure(grid: list[int]) -> dict[int, float]:
        predictions = predict_split(model, val, "val", run)
        result = evaluate(val, predictions, task=run.record.task,
                          num_predicates=run.prepared.vocab.num_predicate_classes, ks=(50,), top_k_per_pair=tuple(grid))
        return {k: result.metrics[f"k{k}-R@50"] for k in grid}

    recalls = model.select_k(measure)
    best = folder / "checkpoints" / BEST
    saved = load(best)
    saved.update(model=model.state_dict(), loop={**(saved["loop"] or {}), "free_k": {str(k): v for k, v in recalls.items()}})
    save(best, saved)


def write_outputs(folder: Path, model: RelationHead, run: RunData, reporter: Reporter) -> dict[str, float]:
    """predictions/{val,test}.h5 and metrics.json (val metrics), each written atomically."""
    from sgtool.eval.run_eval import evaluate_predictions

    metrics: dict[str, float] = {}
    for split in PREDICTED_SPLITS:
        graphs = run.prepared.graphs.split_subset(split)
        predictions = predict_split(model, graphs, split, run)
        write_predictions(folder / "predictions" / f"{split}.h5", predictions)
        accuracy = predictions.meta.get("head_meta", {}).get("object_accuracy")
        if accuracy is not None:
            reporter.info(f"Object accuracy ({split}, SGCls): {100 * accuracy:.1f}%.")
        if split == "val" and len(graphs.relations):
            result = evaluate_predictions(graphs, predictions, run.record.task, run.priors, run.prepared.vocab,
                                          reporter=reporter)
            metrics = result.metrics
    atomic.write_json(folder / "metrics.json", {"split": "val", "task": run.record.task, "metrics": metrics})
    return metrics


def predict_split(model: RelationHead, graphs: SceneGraphs, split: str, run: RunData) -> Predictions:
    """The head's predictions of a split; what the head put in `meta` (NFE, sampling statistics) and, in
    SGCls, the object accuracy are kept under "head_meta", beside the run's identity."""
    from sgtool.eval.objects import object_accuracy

    objects = run.source(graphs)
    predictions = model.predict(objects)
    head_meta = json.loads(json.dumps(predictions.meta or {}, default=json_default))  # plain JSON for the h5 attribute
    record = run.record
    if record.task == "sgcls":
        head_meta["object_accuracy"] = object_accuracy(graphs, predictions)
        if objects.class_scores is not None:  # the detector's own labels on the same boxes
            head_meta["detector_object_accuracy"] = object_accuracy(graphs, objects)
    predictions.meta = {"dataset": run.prepared.name, "split": split, "task": record.task, "head": record.head,
                        "run": record.run, "num_images": graphs.num_images,
                        "vocabulary_fingerprint": vocabulary_fingerprint(run.prepared.vocab)}
    if head_meta:
        predictions.meta["head_meta"] = head_meta
    return predictions


def save_checkpoint(folder: Path, model: RelationHead) -> Path:
    """model.npz when the state is numpy arrays only (read back as the one checkpoint format), else model.pt."""
    state = model.state_dict()
    if all(isinstance(v, np.ndarray) for v in state.values()):
        path = folder / "model.npz"
        atomic.write_npz(path, {**state, "__head__": np.array(model.name)})
        return path
    from sgtool.engine.checkpoint import pack, save

    path = folder / "model.pt"
    save(path, pack(model.name, state))
    return path



def show_train(result: TrainResult, as_json: bool = False) -> None:
    from sgtool import ui

    payload = {"run": result.run, "path": str(result.path), "head": result.head, "dataset": result.dataset,
               "task": result.task, "val_metrics": result.metrics}
    ui.show_run(payload, as_json, f"Run {result.run} ({result.head} on {result.dataset}, {result.task}): validation",
                result.metrics, ("R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100"))


def load_trained_head(ws: Workspace, run: str, images: Mapping[int, Any] | None = None,
                      device: str = "cpu") -> tuple[RelationHead, RunRecord, PreparedDataset]:
    """A run's head with its checkpoint loaded, its record, and its dataset (for `predict`).

    A features=visual head gets its run's detector features again: on the dataset's images, or on
    `images` ({image id: CHW tensor or loader}) when given (`sgtool predict` on the user's pictures)."""
    folder = ws.require_run(run)
    record = RunRecord.read(folder)
    head_cls = get_head(str(record.head))
    prepared = load_prepared(ws, record.dataset)
    model = head_cls(make_config(head_cls, record.options or {}),
                     prepared.vocab.num_object_classes, prepared.vocab.num_predicate_classes)
    reattach(ws, model, record, prepared, images, device)
    try:
        model.load_state_dict(load_checkpoint(folder / "checkpoints"))
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:  # weights of another shape or head
        raise SgtoolError(f"The checkpoint of run '{run}' does not fit its {record.head} head ({type(exc).__name__}).",
                          "Train the run again; its checkpoint was replaced or damaged.") from exc
    return model, record, prepared


def load_checkpoint(folder: Path) -> dict[str, Any]:
    """The head state in a run's checkpoints/ (model.npz or model.pt, any shape sgtool wrote); a damaged file
    is one sentence."""
    from sgtool.engine.checkpoint import load

    for name in ("model.npz", "model.pt"):
        if (folder / name).exists():
            saved = load(folder / name)
            if not isinstance(saved.get("model"), dict):
                raise SgtoolError(f"{folder / name} is not an sgtool head checkpoint.", "Train the head again.")
            return saved["model"]
    raise SgtoolError(f"The run folder {folder.parent} holds no checkpoint.", "Train the head again.")
