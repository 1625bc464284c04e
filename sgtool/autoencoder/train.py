"""`sgtool train --head ae`: the image -> graph -> image auto-encoder's stage, trained through the one
training loop (`engine/loop.py`, driving `autoencoder/trainee.py`).

Paper: Lu & Dubbelman, "Image-Graph-Image Translation via Auto-Encoding" (docs/methods/ae.md).
A step budget (`--set steps=N`, else the epochs) with a time cap (`--set minutes=M`), the schedule of
`trainee.AEClock`, a progress bar, one log record every `log_every` steps.

A seed that ends on the blank-drawing plateau (no validation edge found) is named; with
`--set plateau_restarts=N` it is retrained with the next unused seed, at most N times per run.

<ws>/runs/<run>/ config.yaml, run.json ("status": "running", then "complete"; `engine/run.py`), training/seed<S>/ (the
loop's checkpoints/last.pt + model.pt and log.jsonl of each seed: what `--resume` continues from),
training/progress.json (the seeds done so far), checkpoints/model-seed<S>.pt, log.jsonl, metrics.json,
training-curves.png, predictions/{val,test}.h5 (the first seed) and predictions/seed<S>/{val,test}.h5.
`--seeds N` trains N models (seeds S, S+1, ...) into one run; `sgtool eval` reports their mean ± std.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgtool import atomic
from sgtool.autoencoder.config import AEConfig
from sgtool.autoencoder.data import LineDrawings, load_split
from sgtool.autoencoder.inference import HEAD, load_model, model_for, predict, save_model  # noqa: F401 (re-exported)
from sgtool.autoencoder.model import GraphAutoEncoder
from sgtool.autoencoder.trainee import AEClock, AETrainee, step_loss, total_steps  # noqa: F401 (re-exported)
from sgtool.config import build, check_options, resolve_device, user_settings
from sgtool.data.predictions import vocabulary_fingerprint, write_predictions
from sgtool.data.prepared import PreparedDataset, dataset_fingerprint, load_prepared
from sgtool.engine.checkpoint import LAST
from sgtool.engine.hooks import CheckpointHook, Hook, LogHook, StepProgressHook, ValidationHook, write_log
from sgtool.engine.loop import run_loop
from sgtool.engine.record import RunRecord, TrainRequest
from sgtool.engine.run import Run
from sgtool.errors import SgtoolError
from sgtool.flags import flag, setting
from sgtool.heads import TrainData
from sgtool.ui import SILENT, Reporter
from sgtool.workspace import Workspace


@dataclass
class AETrainResult:
    run: str
    path: Path
    dataset: str
    seeds: list[int]  # the seeds finally trained (a restarted seed replaced by its successor)
    metrics: dict[str, float]
    minutes: float
    stuck_seeds: list[int] = field(default_factory=list)  # seeds kept although they found no validation edge
    restarts: int = 0  # seeds retrained because they ended on the plateau
    plateau_seeds: list[int] = field(default_factory=list)  # the seeds that were replaced


def on_plateau(val_scores: dict[str, float]) -> bool:
    """A model still drawing a blank canvas finds no validation edge at all."""
    return val_scores["recall"] == 0


# ---------------------------------------------------------------- options

def ae_config(config_path: Path | None, overrides: list[str], explicit: dict[str, Any]) -> AEConfig:
    """Defaults < --config YAML < --set overrides < the flags given (--max-nodes, --epochs, ...), checked."""
    settings = user_settings(config_path, overrides)
    settings.update({k: v for k, v in explicit.items() if v is not None})
    config = build(AEConfig, settings)
    config.validate()
    check_options(config)
    return config


# ---------------------------------------------------------------- one seed through the loop

def fit(model: GraphAutoEncoder, data: LineDrawings, config: AEConfig, seed: int, device: str,
        reporter: Reporter = SILENT, folder: Path | None = None, resume: bool = False) -> list[dict]:
    """Train in place through the one loop for the step budget (or until the time cap); the log records,
    the last one {"event": "trained", "steps": ...}. `folder` keeps the loop's checkpoints and log.jsonl
    (a temporary folder when None); `resume` continues from its last.pt."""
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="sgtool-ae-") as tmp:
            return fit(model, data, config, seed, device, reporter, Path(tmp))
    trainee = AETrainee(config, model, data, device)

    def hooks(settings: Any, validate: Any, bar: Any) -> list[Hook]:
        return [AEClock(seed), ValidationHook(validate), LogHook(), CheckpointHook(),
                StepProgressHook(bar, f"train ae (seed {seed})", trainee.total, config.minutes * 60 or None)]

    train = TrainData(data, data, None, {}, device, seed)  # the trainee reads its own drawings
    return run_loop(trainee, train, folder, dict, reporter, resume=resume, make_hooks=hooks)  # dict: no val metric


# ---------------------------------------------------------------- the stage

def train_autoencoder(ws: Workspace, *, dataset: str | None = None, name: str | None = None,
                      config_path: Path | None = None, overrides: list[str] | None = None, seed: int = 0,
                      device: str = "auto", reporter: Reporter = SILENT, **options: Any) -> AETrainResult:
    """Train `seeds` auto-encoders into one run; `options` are AEConfig fields (max_nodes, epochs, ...)."""
    config = ae_config(config_path, overrides or [], options)
    prepared = load_prepared(ws, dataset)
    device = resolve_device(device)
    splits = _load_splits(prepared, config)
    kind = "supervised" if config.supervised else "ae"
    run = Run.claim(ws, name, f"{kind}-{prepared.name}-k{config.max_nodes}")
    ws.check_writable()
    record = RunRecord(run=run, head=HEAD, dataset=prepared.name, task="sgdet", seed=seed, device=device,
                       options=asdict(config), seeds=[seed + i for i in range(config.seeds)],
                       dataset_sha256=dataset_fingerprint(prepared))
    with ws.training(run, prepared.name):  # one writer of the run; its dataset is not replaced meanwhile
        keeper = Run.new(ws.run_dir(run), record)
        reporter.info(f"Training the {'supervised ' if config.supervised else ''}auto-encoder (max {config.max_nodes} "
                      f"nodes) on '{prepared.name}' as run {run}, seeds {record.seeds}.")
        result = _train_in_place(keeper, config, splits, prepared, SeedProgress.start(record.seeds), reporter)
    ws.set_latest("run", run)
    return result


def resume_autoencoder(ws: Workspace, run: str, request: TrainRequest) -> AETrainResult:
    """`sgtool train --resume RUN` of an ae run: the seeds left, the current one from its last checkpoint."""
    keeper = Run.resume(ws, run, request.kind, request.dataset, request.given_flags())
    folder, record = keeper.folder, keeper.record
    progress = SeedProgress.read(folder, record.seeds or [record.seed])
    if not progress.kept and not progress.replaced:
        keeper.require_checkpoint(seed_folder(folder, progress.queue[0]) / "checkpoints" / LAST)
    config = build(AEConfig, record.options)
    prepared = load_prepared(ws, record.dataset)
    keeper.check_dataset(prepared)
    splits = _load_splits(prepared, config)
    with ws.training(run, prepared.name):  # one writer of the run; its dataset is not replaced meanwhile
        keeper.clean_leftovers()
        request.reporter.info(f"Resuming ae run {run}: seed(s) {progress.queue} left.")
        keeper.record = record.replace(device=resolve_device(request.device))
        result = _train_in_place(keeper, config, splits, prepared, progress, request.reporter)
    ws.set_latest("run", run)
    return result


def _load_splits(prepared: PreparedDataset, config: AEConfig) -> dict[str, LineDrawings]:
    splits = {s: load_split(prepared, s, config.resolution, config.train_images if s == "train" else 0)
              for s in ("train", "val", "test")}
    if len(splits["train"]) < config.batch_size:
        raise SgtoolError(f"The train split of '{prepared.name}' holds {len(splits['train'])} images, fewer than "
                          f"one batch of {config.batch_size}.", f"Prepare more images or lower {flag('batch_size')}.")
    return splits


def seed_folder(folder: Path, seed: int) -> Path:
    return Path(folder) / "training" / f"seed{seed}"


@dataclass
class SeedProgress:
    """The seeds of a run so far (training/progress.json, rewritten after each seed): those left, kept and
    replaced (plateau restarts), the kept seeds' validation scores and the run's log records."""

    queue: list[int]
    next_seed: int
    kept: list[int] = field(default_factory=list)
    replaced: list[int] = field(default_factory=list)
    per_seed: list[dict] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)

    @classmethod
    def start(cls, seeds: list[int]) -> SeedProgress:
        return cls(list(seeds), max(seeds) + 1)

    @classmethod
    def read(cls, folder: Path, seeds: list[int]) -> SeedProgress:
        path = Path(folder) / "training" / "progress.json"
        return cls(**json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else cls.start(seeds)

    def write(self, folder: Path) -> None:
        atomic.write_json(Path(folder) / "training" / "progress.json", asdict(self))


def _train_in_place(keeper: Run, config: AEConfig, splits: dict[str, LineDrawings], prepared: PreparedDataset,
                    progress: SeedProgress, reporter: Reporter) -> AETrainResult:
    """Train the seeds left into the run folder; run.json's status says how far it got."""
    start, threads = time.time(), torch.get_num_threads()
    folder, record = keeper.folder, keeper.record

    def resumable() -> bool:
        return bool(progress.kept or any((folder / "training").glob(f"seed*/checkpoints/{LAST}")))

    try:
        torch.set_num_threads(config.threads or threads)
        with keeper.failures(resumable):
            while progress.queue:
                _next_seed(folder, splits, prepared, config, record, progress, reporter)
            metrics = _finish(keeper, progress)
    finally:
        torch.set_num_threads(threads)
    stuck = [s for s, m in zip(progress.kept, progress.per_seed) if on_plateau(m)]
    return AETrainResult(record.run, folder, prepared.name, progress.kept, metrics, (time.time() - start) / 60,
                         stuck, len(progress.replaced), progress.replaced)


def _next_seed(folder: Path, splits: dict[str, LineDrawings], prepared: PreparedDataset, config: AEConfig,
               record: RunRecord, progress: SeedProgress, reporter: Reporter) -> None:
    """Train (or finish) the first seed of the queue; keep it, or replace it by the next unused seed when it
    ended on the plateau and restarts are left."""
    from sgtool.autoencoder.evaluate import score_split

    s = progress.queue.pop(0)
    where = seed_folder(folder, s)
    torch.manual_seed(s)
    model = model_for(config).to(record.device)
    log = fit(model, splits["train"], config, s, record.device, reporter, where, (where / "checkpoints" / LAST).is_file())
    write_log(where / "log.jsonl", log)
    predictions = {split: _predict(model, splits[split], config, record, prepared, split, s) for split in ("val", "test")}
    scores = score_split(splits["val"], predictions["val"])
    progress.log.extend(log)
    if on_plateau(scores) and len(progress.replaced) < config.plateau_restarts:
        progress.log.append({"event": "plateau_restart", "seed": s, "next_seed": progress.next_seed})
        reporter.info(f"Seed {s} ended on the blank-drawing plateau; restarting with seed {progress.next_seed}.")
        progress.replaced.append(s)
        progress.queue.insert(0, progress.next_seed)
        progress.next_seed += 1
    else:
        save_model(folder / "checkpoints" / f"model-seed{s}.pt", model, config)
        for split, p in predictions.items():
            write_predictions(folder / "predictions" / f"seed{s}" / f"{split}.h5", p)
            if not progress.kept:
                write_predictions(folder / "predictions" / f"{split}.h5", p)
        progress.kept.append(s)
        progress.per_seed.append(scores)
    progress.write(folder)  # the seed counts as done only now
    if s in progress.replaced:
        shutil.rmtree(where, ignore_errors=True)


def _predict(model: GraphAutoEncoder, data: LineDrawings, config: AEConfig, record: RunRecord,
             prepared: PreparedDataset, split: str, seed: int) -> Any:
    predictions = predict(model, data, config, record.device)
    predictions.meta = {"dataset": prepared.name, "split": split, "task": "sgdet", "head": HEAD, "run": record.run,
                        "seed": seed, "num_images": len(data), "vocabulary_fingerprint": vocabulary_fingerprint(prepared.vocab)}
    return predictions


def _finish(keeper: Run, progress: SeedProgress) -> dict[str, float]:
    """The mean validation P / R / F1 of the kept seeds into metrics.json; the record, log and curves."""
    from sgtool.viz.curves import CURVES_NAME, draw_training_curves

    folder = keeper.folder
    metrics = {k: float(np.mean([m[k] for m in progress.per_seed])) for k in progress.per_seed[0]}
    write_log(folder / "log.jsonl", [*progress.log, {"time": time.time(), "event": "val", "metrics": metrics,
                                                     "per_seed": progress.per_seed}])
    atomic.write_json(folder / "metrics.json", {"split": "val", "task": "point-graph", "metrics": metrics,
                                                "per_seed": progress.per_seed, "seeds": progress.kept,
                                                "plateau_restarts": len(progress.replaced),
                                                "plateau_seeds": progress.replaced})
    draw_training_curves(seed_folder(folder, progress.kept[0]) / "log.jsonl", folder / CURVES_NAME)
    keeper.record = keeper.record.replace(seeds=progress.kept)
    keeper.complete()
    return metrics


def show_ae_train(result: AETrainResult, as_json: bool = False) -> None:
    from sgtool import ui

    payload = {"run": result.run, "path": str(result.path), "head": HEAD, "dataset": result.dataset,
               "seeds": result.seeds, "minutes": round(result.minutes, 2), "val_metrics": result.metrics,
               "stuck_seeds": result.stuck_seeds, "plateau_restarts": result.restarts,
               "plateau_seeds": result.plateau_seeds}
    if result.restarts:
        ui.err.print(f"{result.restarts} plateau restart(s): seed(s) {', '.join(map(str, result.plateau_seeds))} "
                     "ended on the blank-drawing plateau and were replaced by the next unused seed(s).", highlight=False)
    if result.stuck_seeds:
        ui.err.print(f"Warning: seed(s) {', '.join(map(str, result.stuck_seeds))} found no edge on the validation "
                     "split: training did not leave its starting plateau (a blank drawing). Train longer "
                     f"({setting('steps')}...), with another {flag('seed')}, or with {setting('plateau_restarts', 'N')}.", highlight=False)
    ui.show_run(payload, as_json, f"Run {result.run} (ae on {result.dataset}, {len(result.seeds)} seed(s), "
                f"{result.minutes:.1f} min): validation triplets", result.metrics, ("precision", "recall", "f1"))
