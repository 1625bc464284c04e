"""The `train` stage: fit a relation head on a prepared dataset and write a run folder.

<ws>/runs/<run>/ config.yaml, run.json, checkpoints/, predictions/{val,test}.h5, log.jsonl, metrics.json

The run folder is built in a staging folder and renamed into place, so a failed or killed
run leaves nothing behind, and a run name is never reused.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sgtool import __version__, atomic
from sgtool.config import merge, parse_overrides, read_yaml
from sgtool.data.graphs import SceneGraphs
from sgtool.data.predictions import Predictions, vocabulary_fingerprint, write_predictions
from sgtool.data.prepared import PreparedDataset, load_prepared, load_prepared_priors
from sgtool.errors import SgtoolError
from sgtool.heads import (
    TASKS, HeadConfig, ObjectSource, RelationHead, TrainData, config_dict, get_head, gt_objects, make_config,
)
from sgtool.ui import SILENT, Reporter
from sgtool.workspace import Workspace

PREDICTED_SPLITS = ("val", "test")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


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


def object_source_for(task: str, source: ObjectSource | None) -> ObjectSource:
    """PredCls uses the ground truth; SGCls and SGDet need an object detector's output."""
    if task == "predcls":
        return gt_objects
    if source is None:
        what = "an object classifier for the given boxes" if task == "sgcls" else "an object detector"
        raise SgtoolError(f"--task {task} needs {what}, and no trained detector is available to provide it.",
                          "Use --task predcls for now; SGCls and SGDet need `sgtool train-detector` first.")
    return source


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


def choose_run_name(ws: Workspace, name: str | None, default: str) -> str:
    if name is None:
        return ws.new_run_name(default)
    if not _RUN_NAME.match(name):
        raise SgtoolError(f"'{name}' is not a usable run name.", "Use letters, digits, '.', '_', '+' and '-' only.")
    if name in ws.runs():
        raise SgtoolError(f"A run named '{name}' already exists in {ws.root}.",
                          f"Pick another --name, or leave it out to get {ws.new_run_name(name)}.")
    return name


# ---------------------------------------------------------------- the stage

def train(ws: Workspace, *, head: str, dataset: str | None = None, task: str = "predcls",
          name: str | None = None, epochs: int | None = None, batch_size: int | None = None,
          overlap: bool | None = None, config_path: Path | None = None, overrides: list[str] | None = None,
          seed: int = 0, device: str = "auto", object_source: ObjectSource | None = None,
          reporter: Reporter = SILENT) -> TrainResult:
    head_cls = get_head(head)
    check_task(task, head_cls)
    config = head_config(head_cls, config_path, overrides or [],
                         {"epochs": epochs, "batch_size": batch_size, "overlap": overlap})
    source = object_source_for(task, object_source)
    prepared = load_prepared(ws, dataset)
    priors = load_prepared_priors(ws, prepared.name)
    data = _train_data(prepared, priors, device, seed)
    run = choose_run_name(ws, name, f"{head}-{prepared.name}-{task}")
    ws.check_writable()
    model = head_cls(config, prepared.vocab.num_object_classes, prepared.vocab.num_predicate_classes)
    settings = {"run": run, "head": head, "dataset": prepared.name, "task": task, "seed": seed,
                "device": device, "options": config_dict(config), "sgtool_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with atomic.atomic_directory(ws.run_dir(run)) as staging:
        metrics = _fill_run(staging, model, data, prepared, priors, source, settings, reporter)
    ws.set_latest("run", run)
    return TrainResult(run, ws.run_dir(run), head, prepared.name, task, metrics)


def _train_data(prepared: PreparedDataset, priors: dict, device: str, seed: int) -> TrainData:
    train = prepared.graphs.split_subset("train")
    if train.num_images == 0 or len(train.relations) == 0:
        raise SgtoolError(f"The dataset '{prepared.name}' has no training relations.",
                          "Prepare a dataset whose train split holds annotated relations.")
    return TrainData(train, prepared.graphs.split_subset("val"), prepared.vocab, priors, device, seed)


def _fill_run(staging: Path, model: RelationHead, data: TrainData, prepared: PreparedDataset, priors: dict,
              source: ObjectSource, settings: dict, reporter: Reporter) -> dict[str, float]:
    from sgtool.eval.run_eval import evaluate_predictions

    reporter.info(f"Training the {settings['head']} head on '{prepared.name}' ({settings['task']}) "
                  f"as run {settings['run']}.")
    log = [{"time": time.time(), **record} for record in model.fit(data, reporter)]
    save_checkpoint(staging / "checkpoints", model)
    metrics: dict[str, float] = {}
    for split in PREDICTED_SPLITS:
        graphs = prepared.graphs.split_subset(split)
        predictions = predict_split(model, graphs, source, split, prepared, settings)
        write_predictions(staging / "predictions" / f"{split}.h5", predictions)
        if split == "val" and len(graphs.relations):
            result = evaluate_predictions(graphs, predictions, settings["task"], priors, prepared.vocab, reporter=reporter)
            metrics = result.metrics
    log.append({"time": time.time(), "event": "val", "metrics": metrics})
    atomic.write_text(staging / "config.yaml", yaml.safe_dump(settings, sort_keys=False))
    atomic.write_json(staging / "run.json", {k: settings[k] for k in ("run", "head", "dataset", "task", "seed")})
    atomic.write_text(staging / "log.jsonl", "".join(json.dumps(r, default=_plain) + "\n" for r in log))
    atomic.write_json(staging / "metrics.json", {"split": "val", "task": settings["task"], "metrics": metrics})
    return metrics


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
    if as_json:
        ui.print_json(payload)
        return
    shown = [name for name in ("R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100") if name in result.metrics]
    ui.print_table(f"Run {result.run} ({result.head} on {result.dataset}, {result.task}): validation",
                   ("metric", "value (%)"), ((n, f"{100 * result.metrics[n]:.2f}") for n in shown))
    ui.out.print(f"Run folder: {result.path}", highlight=False)


def load_trained_head(ws: Workspace, run: str) -> tuple[RelationHead, dict, PreparedDataset]:
    """A run's head with its checkpoint loaded, its settings, and its dataset (for `predict`)."""
    folder = ws.require_run(run)
    settings = read_yaml(folder / "config.yaml")
    head_cls = get_head(str(settings.get("head")))
    prepared = load_prepared(ws, settings.get("dataset"))
    model = head_cls(make_config(head_cls, settings.get("options") or {}),
                     prepared.vocab.num_object_classes, prepared.vocab.num_predicate_classes)
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
