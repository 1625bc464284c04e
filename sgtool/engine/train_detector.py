"""The `train-detector` stage: Faster R-CNN trained through the one training loop (`engine/loop.py`), then
COCO mAP on the test split (`detect/train.py`). The loop drives `detect/trainee.py`'s DetectorTrainee.

The detector's own hooks: DetectorClock (the lr per step: warm-up then cosine over the steps or the time
budget, whichever ends first; the budget counts the seconds of every resumed session; each epoch's
images/s) and the step bar (`hooks.StepProgressHook`). Checkpoints, log.jsonl
and the best (= latest) model.pt come from the loop's hooks. The run folder exists while training so a
killed run can be resumed; a run that fails before its first checkpoint is removed again.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from sgtool import atomic, distributed
from sgtool.config import resolve_device
from sgtool.data.prepared import load_prepared
from sgtool.detect.api import LATEST_KIND, Detector
from sgtool.detect.config import DetectorConfig
from sgtool.detect.data import num_batches, require_images
from sgtool.detect.model import DetectorSpec, build_model, check_arch
from sgtool.detect.train import (DetectorResult, DetectorRunState, check_options, evaluate_detector, mean_rate,
                                 new_state, run_settings)
from sgtool.detect.trainee import DetectorTrainee, lr_factor
from sgtool.engine import checkpoint
from sgtool.engine.hooks import AmpHook, CheckpointHook, Hook, LogHook, StepProgressHook, ValidationHook, read_log
from sgtool.engine.loop import run_loop
from sgtool.errors import SgtoolError
from sgtool.flags import flag
from sgtool.heads import TrainData
from sgtool.ui import SILENT, Reporter
from sgtool.workspace import Workspace, check_names

DETECTOR_OPTIONS = ("dataset", "arch", "epochs", "batch_size", "lr", "weights", "name", "time_budget")


def train_detector(ws: Workspace, *, resume: str | None = None, seed: int = 0, device: str = "auto",
                   threads: int | None = None, reporter: Reporter = SILENT, **options: object) -> DetectorResult:
    """Train (or resume) a detector run and evaluate it on the test split with COCOeval.

    `options`: dataset, arch, epochs, batch_size, lr, weights (a path), name and time_budget (in minutes:
    training stops after it and the lr schedule decays over it); None or left out means the default.
    """
    unknown = sorted(set(options) - set(DETECTOR_OPTIONS))
    if unknown:
        raise TypeError(f"train_detector() got unexpected options {unknown}")
    dataset, arch, epochs, batch_size, lr, weights, name, time_budget = (options.get(k) for k in DETECTOR_OPTIONS)
    check_names(dataset=dataset, resume=resume, name=name)
    if arch is not None:
        check_arch(arch)
    check_options(epochs, batch_size, lr, time_budget, threads)
    device = distributed.setup(resolve_device(device))  # under torchrun: join the process group
    reporter = reporter if distributed.is_main() else SILENT
    if threads:
        torch.set_num_threads(threads)
    if resume is not None:
        state = resume_state(ws, resume, dataset, arch, epochs, weights, name, time_budget)
    else:
        state = new_state(ws, dataset, arch or "tiny", epochs, batch_size, lr, weights, name, time_budget, seed)
    with ws.training(state.run, state.prepared.name):  # one writer of the run; its dataset is not replaced meanwhile
        return _run(ws, state, device, reporter)


def resume_state(ws: Workspace, run: str, dataset: str | None, arch: str | None, epochs: int | None,
                 weights: Path | None, name: str | None, time_budget: float | None) -> DetectorRunState:
    if weights is not None or name is not None:
        raise SgtoolError(f"{flag('resume')} continues a run as it was; it takes neither {flag('weights')} nor {flag('name')}.",
                          f"Leave those out, or start a new run without {flag('resume')}.")
    path = ws.require_run(run) / "checkpoints" / checkpoint.LAST
    if not path.is_file():
        raise SgtoolError(f"The run '{run}' holds no detector checkpoint to resume from.",
                          "Resume a run made by `sgtool train-detector`.")
    saved = checkpoint.training_state(path, DetectorTrainee.name)
    state, done = saved["state"], saved["loop"]["epoch"]
    config = DetectorConfig(**state["config"])
    if arch is not None and arch != config.arch:
        raise SgtoolError(f"The run '{run}' trains the {config.arch} architecture, not {arch}.", f"Leave out {flag('arch')}.")
    if dataset is not None and dataset != state["dataset"]:
        raise SgtoolError(f"The run '{run}' trains on '{state['dataset']}', not '{dataset}'.", f"Leave out {flag('dataset')}.")
    prepared = load_prepared(ws, state["dataset"])
    require_images(prepared)
    if list(state["vocabulary"]["objects"]) != list(prepared.vocab.objects):
        raise SgtoolError(f"The dataset '{prepared.name}' changed its object vocabulary since run '{run}' started.",
                          "Start a new run instead of resuming.")
    if epochs is not None:
        config.epochs = epochs
    if done >= config.epochs:
        raise SgtoolError(f"The run '{run}' has already trained {done} of {config.epochs} epochs.",
                          f"Pass {flag('epochs')} {done + 1} or more to train it longer.")
    if time_budget is not None:
        config.time_budget = state["train_seconds"] + time_budget * 60
    elif config.time_budget and state["train_seconds"] >= config.time_budget:
        raise SgtoolError(f"The run '{run}' has used its whole time budget ({config.time_budget / 60:g} minutes).",
                          f"Pass {flag('time_budget')} MINUTES to train it longer.")
    return DetectorRunState(run, prepared, config, DetectorSpec(**state["spec"]), int(state["seed"]), state,
                            epochs_done=done)


def _run(ws: Workspace, state: DetectorRunState, device: str, reporter: Reporter) -> DetectorResult:
    run_dir = ws.run_dir(state.run)
    fresh, main = state.checkpoint is None, distributed.is_main()  # only rank 0 writes
    if not fresh and main:
        atomic.remove_leftovers(run_dir)  # temp files of writes a kill interrupted
    try:
        if fresh and main:
            settings = run_settings(state, device)
            atomic.write_text(run_dir / "config.yaml", yaml.safe_dump(settings, sort_keys=False))
            atomic.write_json(run_dir / "run.json", {k: settings[k] for k in ("run", "head", "dataset", "task", "arch", "seed")})
        trainee = _fit(run_dir, state, device, reporter)
    except BaseException:
        if fresh and main and not (run_dir / "checkpoints" / checkpoint.LAST).exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if not main:  # rank 0 evaluates and writes; the others wait for its metrics
        metrics = distributed.broadcast(None)
        return DetectorResult(state.run, run_dir, state.prepared.name, state.config.arch, state.config.epochs, metrics)
    detector = Detector(trainee.model, state.spec, state.prepared.vocab, state.run, device)
    metrics = evaluate_detector(detector, state.prepared, run_dir, reporter)
    metrics["train_images_per_s"] = mean_rate(read_log(run_dir / "log.jsonl"))
    atomic.write_json(run_dir / "metrics.json", {"split": metrics.pop("split"), "task": "det", "metrics": metrics})
    ws.set_latest(LATEST_KIND, state.run)
    distributed.broadcast(metrics)
    return DetectorResult(state.run, run_dir, state.prepared.name, state.config.arch, state.config.epochs, metrics)


def _fit(run_dir: Path, state: DetectorRunState, device: str, reporter: Reporter) -> DetectorTrainee:
    """The one loop over the detector; the trainee ends with the final (= best) weights."""
    torch.manual_seed(state.seed)
    model = state.model if state.model is not None else build_model(state.spec)
    trainee = DetectorTrainee(state.config, state.spec, state.prepared, state.seed, model, device)
    per_epoch = distributed.sharded_count(num_batches(len(trainee.images), state.config.batch_size))
    if per_epoch == 0:
        raise SgtoolError(f"The {len(trainee.images)} training images make fewer batches than the "
                          f"{distributed.world_size()} processes.", f"Use a smaller {flag('batch_size')} or fewer processes.")
    graphs = state.prepared.graphs
    data = TrainData(graphs.split_subset("train"), graphs.split_subset("val"), state.prepared.vocab, {}, device, state.seed)
    reporter.info(f"Training the {state.config.arch} detector on '{state.prepared.name}' ({len(trainee.images)} images) "
                  f"as run {state.run}" + (f", resuming after epoch {state.epochs_done}." if state.epochs_done else "."))

    def hooks(config: Any, validate: Any, bar: Any) -> list[Hook]:
        return [AmpHook(), DetectorClock(state.config, per_epoch), ValidationHook(validate), LogHook(),
                CheckpointHook(), StepProgressHook(bar, "train-detector", per_epoch * state.config.epochs,
                                                    state.config.time_budget)]

    run_loop(trainee, data, run_dir, lambda: {}, reporter, resume=state.checkpoint is not None, make_hooks=hooks)
    return trainee


class DetectorClock(Hook):
    """The detector's lr before each step (warm-up, then cosine over the steps or the time budget), the
    seconds trained over every session (in the trainee's state, so in last.pt), the stop at the budget, and
    each epoch's record as the detector writes it (partial, images/s, the loss terms, the last step's lr)."""

    def __init__(self, config: DetectorConfig, per_epoch: int) -> None:
        self.config, self.per_epoch, self.total = config, per_epoch, per_epoch * config.epochs

    def before_train(self, loop: Any) -> None:
        self.started, self.base = time.perf_counter(), loop.head.train_seconds

    def elapsed(self) -> float:
        return self.base + time.perf_counter() - self.started

    def before_step(self, loop: Any) -> None:
        if loop.batches_done == 0:
            self.epoch_started = time.perf_counter()
        factor = lr_factor(loop.state.step, self.total, self.config.warmup_steps, self.elapsed(), self.config.time_budget)
        for group in loop.optimizer.param_groups:
            group["lr"] = self.last_lr = self.config.lr * factor

    def after_step(self, loop: Any, terms: dict[str, Any]) -> None:
        loop.head.train_seconds = self.elapsed()
        budget = self.config.time_budget
        if distributed.any_rank(bool(budget) and loop.head.train_seconds >= budget):  # every rank together
            loop.stopped = True

    def after_epoch(self, loop: Any, record: dict) -> None:
        took = time.perf_counter() - self.epoch_started
        images = loop.batches_done * self.config.batch_size * distributed.world_size()
        losses = {k: v for k, v in record["train"].items() if k != "grad_norm"}
        record.update(partial=loop.batches_done < self.per_epoch, seconds=round(took, 3),
                      images_per_s=round(images / max(took, 1e-9), 2), lr=self.last_lr, **losses)


def train_request(ws: Workspace, request: Any, resume: str | None = None) -> DetectorResult:
    """The detector kind's entry point (sgtool/detect/kind.py): `sgtool train-detector` as a TrainRequest."""
    options = request.given()
    return train_detector(ws, resume=resume, dataset=request.dataset, name=request.name, seed=request.seed,
                          device=request.device, threads=options.pop("threads", None), reporter=request.reporter,
                          **options)


def resume_request(ws: Workspace, run: str, request: Any) -> DetectorResult:
    return train_request(ws, request, resume=run)
