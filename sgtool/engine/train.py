"""The `train` stage: fit a relation head on a prepared dataset and write a run folder.

<ws>/runs/<run>/ config.yaml, run.json, checkpoints/, predictions/{val,test}.h5, log.jsonl, metrics.json

Statistical heads (freq) `fit` in one pass: their run folder is built in a staging folder and
renamed into place, so a failed run leaves nothing behind. Trainable heads go through the one
training loop (`engine/loop.py`) and write their run folder in place while training, so it can
be resumed: run.json says "status": "running", then "complete" (or "failed"); predictions and
metrics are written atomically at the end. Bad options are refused before anything is written,
and a run name is never reused.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sgtool import __version__, atomic
from sgtool.config import merge, parse_overrides, read_yaml, resolve_device
from sgtool.data.graphs import SceneGraphs
from sgtool.data.predictions import Predictions, vocabulary_fingerprint, write_predictions
from sgtool.data.prepared import PreparedDataset, load_prepared, load_prepared_priors
from sgtool.engine.objects import object_source as task_objects
from sgtool.engine.visual import reattach, visual_source
from sgtool.errors import SgtoolError
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

def check_task(task: str, head: type[RelationHead]) -> None:
    if task not in TASKS:
        raise SgtoolError(f"Unknown task '{task}' (known tasks: {', '.join(TASKS)}).", "Pass --task predcls, sgcls or sgdet.")
    if task not in head.tasks:
        raise SgtoolError(f"The {head.name} head does not support --task {task}.", f"It supports: {', '.join(head.tasks)}.")


def head_config(head: type[RelationHead], config_path: Path | None, overrides: list[str],
                explicit: dict[str, Any]) -> HeadConfig:
    """Head defaults < --config YAML < --set overrides < explicit options (--epochs, --overlap, ...)."""
    settings = merge(read_yaml(config_path) if config_path else {}, parse_overrides(overrides))
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

def train(ws: Workspace, *, head: str, dataset: str | None = None, task: str = "predcls",
          name: str | None = None, epochs: int | None = None, batch_size: int | None = None,
          overlap: bool | None = None, losses: str | None = None, rank: int | None = None, k: str | None = None,
          t_end: float | None = None, front_end: str | None = None, samples: int | None = None,
          config_path: Path | None = None, overrides: list[str] | None = None,
          detector: str | None = None, seed: int = 0, device: str = "auto", cache_features: bool = False,
          object_source: ObjectSource | None = None, reporter: Reporter = SILENT) -> TrainResult:
    """Train a head; SGCls / SGDet predictions take their objects from a detector run (default: the latest),
    and features=visual|auto heads its frozen backbone's ROI features (engine/visual.py)."""
    head_cls = get_head(head)
    check_task(task, head_cls)
    config = head_config(head_cls, config_path, overrides or [],
                         {"epochs": epochs, "batch_size": batch_size, "overlap": overlap, "losses": losses,
                          "rank": rank, "k": k, "t_end": t_end, "front_end": front_end, "samples": samples})
    trainable = issubclass(head_cls, TrainableHead)
    if trainable:
        from sgtool.eval import parse_metric

        config.val_metric = parse_metric(config.val_metric)
        device = resolve_device(device)
    from sgtool.engine import distributed

    device = distributed.setup(device)  # under torchrun: join the process group (a no-op otherwise)
    reporter = reporter if distributed.is_main() else SILENT
    prepared = load_prepared(ws, dataset)
    source, objects_run = ((object_source, detector) if object_source is not None
                           else task_objects(ws, prepared, task, detector, device, reporter, head_cls.labels_objects))
    visual, visual_run = visual_source(ws, prepared, head_cls, config, objects_run or detector, device,
                                       cache_features, reporter)
    detector = objects_run or visual_run
    priors = load_prepared_priors(ws, prepared.name)
    data = _train_data(prepared, priors, device, seed)
    run = distributed.broadcast(ws.claim_run_name(name, f"{head}-{prepared.name}-{task}") if distributed.is_main() else None)
    ws.check_writable()
    model = head_cls(config, prepared.vocab.num_object_classes, prepared.vocab.num_predicate_classes)
    if visual is not None:
        model.attach_visual(visual)
    settings = {"run": run, "head": head, "dataset": prepared.name, "task": task, "detector": detector, "seed": seed,
                **({"features": config.features} if isinstance(config, VisualHeadConfig) else {}),
                "device": device, "options": config_dict(config), "sgtool_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if trainable:
        metrics = _train_in_place(ws.run_dir(run), model, data, prepared, priors, source, settings, reporter)
    elif distributed.is_main():  # nothing to share out: rank 0 fits, the others wait
        with atomic.atomic_directory(ws.run_dir(run)) as staging:
            metrics = _fill_run(staging, model, data, prepared, priors, source, settings, reporter)
    else:
        metrics = {}
    if distributed.is_main():
        ws.set_latest("run", run)
    distributed.barrier()
    return TrainResult(run, ws.run_dir(run), head, prepared.name, task, metrics)


def _train_data(prepared: PreparedDataset, priors: dict, device: str, seed: int) -> TrainData:
    train = prepared.graphs.split_subset("train")
    if train.num_images == 0 or len(train.relations) == 0:
        raise SgtoolError(f"The dataset '{prepared.name}' has no training relations.",
                          "Prepare a dataset whose train split holds annotated relations.")
    return TrainData(train, prepared.graphs.split_subset("val"), prepared.vocab, priors, device, seed)


def resume_train(ws: Workspace, run: str, *, head: str | None = None, dataset: str | None = None,
                 given: list[str] | None = None, device: str = "auto", object_source: ObjectSource | None = None,
                 reporter: Reporter = SILENT) -> TrainResult:
    """Continue a killed or failed run from its last checkpoint, with the settings in its config.yaml."""
    if given:
        raise SgtoolError(f"--resume continues a run as it was; it does not take {given[0]}.",
                          "Leave that option out, or start a new run without --resume.")
    folder = ws.require_run(run)
    settings = _resumable_settings(folder, run, head, dataset)
    head_cls = get_head(str(settings["head"]))
    config = make_config(head_cls, settings.get("options") or {})
    from sgtool.engine import distributed

    device = distributed.setup(resolve_device(device))
    reporter = reporter if distributed.is_main() else SILENT
    prepared = load_prepared(ws, settings["dataset"])
    source = object_source or task_objects(ws, prepared, settings["task"], settings.get("detector"), device, reporter,
                                           head_cls.labels_objects)[0]
    priors = load_prepared_priors(ws, prepared.name)
    data = _train_data(prepared, priors, device, int(settings.get("seed") or 0))
    ws.check_writable()
    if distributed.is_main():
        atomic.remove_leftovers(folder)  # temp files of writes the kill interrupted
    model = head_cls(config, prepared.vocab.num_object_classes, prepared.vocab.num_predicate_classes)
    reattach(ws, model, settings, prepared, device=device)  # features=visual: the run's detector backbone again
    metrics = _train_in_place(folder, model, data, prepared, priors, source, {**settings, "device": device},
                              reporter, resume=True)
    if distributed.is_main():
        ws.set_latest("run", run)
    distributed.barrier()
    return TrainResult(run, folder, str(settings["head"]), prepared.name, str(settings["task"]), metrics)


def retask(ws: Workspace, run: str, *, task: str, name: str | None = None, detector: str | None = None,
           device: str = "auto", reporter: Reporter = SILENT) -> TrainResult:
    """A new run holding RUN's trained weights, scoring `task`'s objects without training (a model
    trained on ground-truth pairs, evaluated in SGCls / SGDet as the community reports it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SgtoolError("--from trains nothing, so it runs in one process, not under torchrun.",
                          f"Run `sgtool train --from {run} --task {task}` without torchrun.")
    folder = ws.require_run(run)
    if _read_status(folder / "run.json") != "complete" or not (folder / "config.yaml").is_file():
        raise SgtoolError(f"The run '{run}' is not a complete relation-head run, so its weights cannot be reused.",
                          "Pass a run that `sgtool train` finished (see `sgtool info`).")
    head_cls = get_head(str(read_yaml(folder / "config.yaml").get("head")))
    check_task(task, head_cls)
    device = resolve_device(device)
    model, settings, prepared = load_trained_head(ws, run, device=device)
    visual_run = settings.get("detector") if settings.get("features") == "visual" else None
    if detector is not None and visual_run is not None and detector != visual_run:
        raise SgtoolError(f"The run '{run}' uses the ROI features of the detector '{visual_run}', not '{detector}'.",
                          f"Pass --detector {visual_run}, or leave it out.")
    source, objects_run = task_objects(ws, prepared, task, detector or visual_run, device, reporter,
                                       head_cls.labels_objects)
    priors = load_prepared_priors(ws, prepared.name)
    new = ws.claim_run_name(name, f"{settings['head']}-{prepared.name}-{task}")
    ws.check_writable()
    settings = {**settings, "run": new, "task": task, "detector": objects_run or visual_run, "from_run": run,
                "device": device, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    reporter.info(f"Scoring the {settings['head']} weights of run {run} in {task} as run {new} (no training).")
    with atomic.atomic_directory(ws.run_dir(new)) as staging:
        (staging / "checkpoints").mkdir()
        for weights in ("model.npz", "model.pt"):
            if (folder / "checkpoints" / weights).is_file():
                shutil.copy2(folder / "checkpoints" / weights, staging / "checkpoints" / weights)
        metrics = write_outputs(staging, model, prepared, priors, source, settings, reporter)
        atomic.write_text(staging / "config.yaml", yaml.safe_dump(settings, sort_keys=False))
        _write_run_json(staging, settings, "complete")
        atomic.write_text(staging / "log.jsonl", json.dumps({"time": time.time(), "event": "retask", "from_run": run,
                                                             "metrics": metrics}, default=_plain) + "\n")
    ws.set_latest("run", new)
    return TrainResult(new, ws.run_dir(new), str(settings["head"]), prepared.name, task, metrics)


RETASK_FLAGS = ("--task", "--detector", "--name")


AE_FLAGS = ("--name", "--epochs", "--batch-size", "--config", "--set", "--max-nodes", "--supervised", "--seeds")


def run_training(ws: Workspace, *, head: str | None = None, resume: str | None = None, from_run: str | None = None,
                 passed: tuple[str, ...] = (), max_nodes: int | None = None, supervised: bool = False,
                 seeds: int | None = None, **options: Any) -> Any:
    """`sgtool train`: continue a run (`resume`), reuse a run's weights in another task (`from_run`),
    train the ae auto-encoder, or train a relation head.

    `passed` names the command-line options the user gave, so those that do not apply are refused;
    `options` are the keyword arguments of `train`. Returns a TrainResult (AETrainResult for ae)."""
    from sgtool.autoencoder.train import HEAD as AE_HEAD, check_options, train_autoencoder

    if resume is not None:
        return resume_train(ws, resume, head=head, dataset=options.get("dataset"), given=list(passed),
                            device=options.get("device", "auto"), reporter=options.get("reporter", SILENT))
    if from_run is not None:
        foreign = [flag for flag in passed if flag not in RETASK_FLAGS] + (["--head"] if head else [])
        if foreign or options.get("dataset"):
            flag = foreign[0] if foreign else "--dataset"
            raise SgtoolError(f"--from reuses a trained run as it is; it does not take {flag}.",
                              f"It takes {', '.join(RETASK_FLAGS)}; leave {flag} out.")
        return retask(ws, from_run, task=options.get("task", "predcls"), name=options.get("name"),
                      detector=options.get("detector"), device=options.get("device", "auto"),
                      reporter=options.get("reporter", SILENT))
    head = head or "freq"
    check_options(head, max_nodes, supervised, seeds)
    if head != AE_HEAD:
        return train(ws, head=head, **options)
    foreign = [flag for flag in passed if flag not in AE_FLAGS]
    if foreign:
        raise SgtoolError(f"{foreign[0]} is not an option of the ae head.",
                          f"The ae head takes {', '.join(AE_FLAGS)}; leave {foreign[0]} out.")
    keep = ("dataset", "name", "epochs", "batch_size", "config_path", "overrides", "seed", "device", "reporter")
    return train_autoencoder(ws, max_nodes=max_nodes, supervised=supervised, seeds=seeds,
                             **{key: options[key] for key in keep if key in options})


def show_training(result: Any, as_json: bool = False) -> None:
    """Print what `run_training` returned: a relation head's run or the auto-encoder's."""
    if isinstance(result, TrainResult):
        show_train(result, as_json=as_json)
    else:
        from sgtool.autoencoder.train import show_ae_train

        show_ae_train(result, as_json=as_json)


def _resumable_settings(folder: Path, run: str, head: str | None, dataset: str | None) -> dict:
    """The run's config.yaml, when the run is an unfinished run of a trainable head that fits the options."""
    settings = read_yaml(folder / "config.yaml") if (folder / "config.yaml").is_file() else {}
    status = _read_status(folder / "run.json")
    name = str(settings.get("head"))
    if name == "detector":
        raise SgtoolError(f"The run '{run}' is a detector run.", f"Resume it with `sgtool train-detector --resume {run}`.")
    if not settings or name not in available_heads() or not issubclass(get_head(name), TrainableHead):
        raise SgtoolError(f"The run '{run}' is not a run of a trainable relation head, so it cannot be resumed.",
                          "Resume a run made by `sgtool train --head reldn|tensor|nodis|iwsl`.")
    if status == "complete":
        raise SgtoolError(f"The run '{run}' is complete; there is nothing to resume.", "Train a new run instead.")
    if head is not None and head != name:
        raise SgtoolError(f"The run '{run}' trains the {name} head, not {head}.", "Leave out --head.")
    if dataset is not None and dataset != settings.get("dataset"):
        raise SgtoolError(f"The run '{run}' trains on '{settings.get('dataset')}', not '{dataset}'.", "Leave out --dataset.")
    if not (folder / "checkpoints" / "last.pt").is_file():
        raise SgtoolError(f"The run '{run}' stopped before its first checkpoint, so it cannot be resumed.",
                          "Train a new run instead.")
    return settings


def _read_status(path: Path) -> str | None:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return payload.get("status") if isinstance(payload, dict) else None


def _fill_run(staging: Path, model: StatisticalHead, data: TrainData, prepared: PreparedDataset, priors: dict,
              source: ObjectSource, settings: dict, reporter: Reporter) -> dict[str, float]:
    reporter.info(f"Training the {settings['head']} head on '{prepared.name}' ({settings['task']}) "
                  f"as run {settings['run']}.")
    log = [{"time": time.time(), **record} for record in model.fit(data, reporter)]
    save_checkpoint(staging / "checkpoints", model)
    metrics = write_outputs(staging, model, prepared, priors, source, settings, reporter)
    log.append({"time": time.time(), "event": "val", "metrics": metrics})
    atomic.write_text(staging / "config.yaml", yaml.safe_dump(settings, sort_keys=False))
    _write_run_json(staging, settings, "complete")
    atomic.write_text(staging / "log.jsonl", "".join(json.dumps(r, default=_plain) + "\n" for r in log))
    return metrics


def _train_in_place(folder: Path, model: TrainableHead, data: TrainData, prepared: PreparedDataset, priors: dict,
                    source: ObjectSource, settings: dict, reporter: Reporter, resume: bool = False) -> dict[str, float]:
    """The training loop writes the run folder as it goes; the status in run.json says how far it got."""
    from sgtool.engine import distributed
    from sgtool.engine.loop import read_log, run_loop, seed_everything, write_log

    seed_everything(data.seed)
    model.build(data)  # before the folder exists: a head that cannot be built changes nothing
    main = distributed.is_main()  # under torchrun only rank 0 writes the run folder
    if main and not resume:
        folder.mkdir(parents=True, exist_ok=False)
        atomic.write_text(folder / "config.yaml", yaml.safe_dump(settings, sort_keys=False))
    if main:
        _write_run_json(folder, settings, "running")
    reporter.info(f"{'Resuming' if resume else 'Training'} the {settings['head']} head on '{prepared.name}' "
                  f"({settings['task']}, {data.device}) as run {settings['run']}.")
    try:
        run_loop(model, data, folder, _validator(model, data.val, source, prepared, priors, settings), reporter,
                 resume=resume)
        if main:
            _select_k(folder, model, data.val, source, prepared, priors, settings)
        metrics = write_outputs(folder, model, prepared, priors, source, settings, reporter) if main else {}
    except BaseException as exc:
        if main:
            _write_run_json(folder, settings, "failed" if isinstance(exc, Exception) else "interrupted", str(exc))
        raise
    if main:
        log = read_log(folder / "log.jsonl")
        write_log(folder / "log.jsonl", [*log, {"time": time.time(), "event": "val", "metrics": metrics}])
        _write_run_json(folder, settings, "complete")
    return metrics


def _validator(model: RelationHead, val: SceneGraphs, source: ObjectSource, prepared: PreparedDataset,
               priors: dict, settings: dict) -> Callable[[], dict[str, float]]:
    """What the loop calls after an epoch: the val split's metrics ({} when it holds no relation)."""
    from sgtool.eval.run_eval import evaluate_predictions

    def validate() -> dict[str, float]:
        if len(val.relations) == 0:
            return {}
        predictions = predict_split(model, val, source, "val", prepared, settings)
        return evaluate_predictions(val, predictions, settings["task"], priors, prepared.vocab).metrics

    return validate


def _select_k(folder: Path, model: RelationHead, val: SceneGraphs, source: ObjectSource, prepared: PreparedDataset,
              priors: dict, settings: dict) -> None:
    """A head with a free k per pair (`select_k`, the tensor head's k=free) picks it on the val split by
    R@50 of each k of its grid; the choice is part of the head state, so the best checkpoint is rewritten."""
    if not hasattr(model, "select_k") or getattr(model.config, "k", None) != "free" or len(val.relations) == 0:
        return
    from sgtool.engine.loop import BEST, load_state
    from sgtool.eval import evaluate

    def measure(grid: list[int]) -> dict[int, float]:
        predictions = predict_split(model, val, source, "val", prepared, settings)
        result = evaluate(val, predictions, task=settings["task"], num_predicates=prepared.vocab.num_predicate_classes,
                          ks=(50,), top_k_per_pair=tuple(grid))
        return {k: result.metrics[f"k{k}-R@50"] for k in grid}

    recalls = model.select_k(measure)
    best = folder / "checkpoints" / BEST
    saved = load_state(best)
    saved.update(state=model.state_dict(), free_k={str(k): v for k, v in recalls.items()})
    import torch

    with atomic.atomic_path(best) as tmp:
        torch.save(saved, tmp)


def write_outputs(folder: Path, model: RelationHead, prepared: PreparedDataset, priors: dict,
                  source: ObjectSource, settings: dict, reporter: Reporter) -> dict[str, float]:
    """predictions/{val,test}.h5 and metrics.json (val metrics), each written atomically."""
    from sgtool.eval.run_eval import evaluate_predictions

    metrics: dict[str, float] = {}
    for split in PREDICTED_SPLITS:
        graphs = prepared.graphs.split_subset(split)
        predictions = predict_split(model, graphs, source, split, prepared, settings)
        write_predictions(folder / "predictions" / f"{split}.h5", predictions)
        if split == "val" and len(graphs.relations):
            result = evaluate_predictions(graphs, predictions, settings["task"], priors, prepared.vocab, reporter=reporter)
            metrics = result.metrics
    atomic.write_json(folder / "metrics.json", {"split": "val", "task": settings["task"], "metrics": metrics})
    return metrics


def _write_run_json(folder: Path, settings: dict, status: str, error: str | None = None) -> None:
    payload = {k: settings[k] for k in ("run", "head", "dataset", "task", "seed")}
    payload["status"] = status
    if error:
        payload["error"] = error
    atomic.write_json(folder / "run.json", payload)


def predict_split(model: RelationHead, graphs: SceneGraphs, source: ObjectSource, split: str,
                  prepared: PreparedDataset, settings: dict) -> Predictions:
    predictions = model.predict(source(graphs))
    predictions.meta = {"dataset": prepared.name, "split": split, "task": settings["task"], "head": settings["head"],
                        "run": settings["run"], "num_images": graphs.num_images,
                        "vocabulary_fingerprint": vocabulary_fingerprint(prepared.vocab)}
    return predictions


def save_checkpoint(folder: Path, model: RelationHead) -> Path:
    """model.npz when the state is numpy arrays only, else model.pt (torch.save)."""
    state = model.state_dict()
    if all(isinstance(v, np.ndarray) for v in state.values()):
        path = folder / "model.npz"
        atomic.write_npz(path, {**state, "__head__": np.array(model.name)})
        return path
    import torch

    path = folder / "model.pt"
    with atomic.atomic_path(path) as tmp:
        torch.save({"head": model.name, "state": state}, tmp)
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def show_train(result: TrainResult, as_json: bool = False) -> None:
    from sgtool import ui

    payload = {"run": result.run, "path": str(result.path), "head": result.head, "dataset": result.dataset,
               "task": result.task, "val_metrics": result.metrics}
    ui.show_run(payload, as_json, f"Run {result.run} ({result.head} on {result.dataset}, {result.task}): validation",
                result.metrics, ("R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100"))


def load_trained_head(ws: Workspace, run: str, images: Mapping[int, Any] | None = None,
                      device: str = "cpu") -> tuple[RelationHead, dict, PreparedDataset]:
    """A run's head with its checkpoint loaded, its settings, and its dataset (for `predict`).

    A features=visual head gets its run's detector features again: on the dataset's images, or on
    `images` ({image id: CHW tensor or loader}) when given (`sgtool predict` on the user's pictures)."""
    folder = ws.require_run(run)
    settings = read_yaml(folder / "config.yaml")
    head_cls = get_head(str(settings.get("head")))
    prepared = load_prepared(ws, settings.get("dataset"))
    model = head_cls(make_config(head_cls, settings.get("options") or {}),
                     prepared.vocab.num_object_classes, prepared.vocab.num_predicate_classes)
    reattach(ws, model, settings, prepared, images, device)
    model.load_state_dict(load_checkpoint(folder / "checkpoints"))
    return model, settings, prepared


def load_checkpoint(folder: Path) -> dict[str, Any]:
    if (folder / "model.npz").exists():
        with np.load(folder / "model.npz", allow_pickle=False) as data:
            return {key: data[key] for key in data.files if key != "__head__"}
    if (folder / "model.pt").exists():
        import torch

        return torch.load(folder / "model.pt", map_location="cpu", weights_only=False)["state"]
    raise SgtoolError(f"The run folder {folder.parent} holds no checkpoint.", "Train the head again.")
