"""The `train-detector` stage: Faster R-CNN trained through the one training loop (`engine/loop.py`), then
COCO mAP on the test split (`detect/train.py`). The loop drives `detect/trainee.py`'s DetectorTrainee.

The lr per step is the loop's schedule (`DetectorTrainee.step_lr`: warm-up then cosine over the steps or the
time budget, whichever ends first). The detector's own hooks: DetectorClock (the seconds trained over every
resumed session, in its state; the stop at the budget; each epoch's images/s) and the step bar
(`hooks.StepProgressHook`). Checkpoints, log.jsonl and the best (= latest) model.pt come from the loop's hooks.
The run folder's life (config.yaml, run.json and its status, failures) is `engine/run.py`'s Run, as for every
kind; the folder exists while training so a killed run can be resumed, and a new run that fails before its
first checkpoint is removed again.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from sgtool import atomic, distributed
from sgtool.config import resolve_device
from sgtool.data.prepared import load_prepared
from sgtool.detect.api import LATEST_KIND, Detector
from sgtool.detect.config import DetectorConfig
from sgtool.detect.data import num_batches, require_images
from sgtool.detect.model import DetectorSpec, build_model, check_arch
from sgtool.detect.train import (DetectorResult, DetectorRunState, check_options, evaluate_detector, mean_rate,
                                 new_state)
from sgtool.detect.trainee import DetectorTrainee
from sgtool.engine import checkpoint
from sgtool.engine.hooks import AmpHook, CheckpointHook, Clock, Hook, LogHook, StepProgressHook, ValidationHook, read_log
from sgtool.engine.loop import run_loop
from sgtool.engine.record import RunRecord
from sgtool.engine.run import Run
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
    state, done = saved["model"], saved["loop"]["epoch"]
    trained = float(saved["hooks"].get(DetectorClock.__name__, {}).get("seconds", 0.0))
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
        config.time_budget = trained + time_budget * 60
    elif config.time_budget and trained >= config.time_budget:
        raise SgtoolError(f"The run '{run}' has used its whole time budget ({config.time_budget / 60:g} minutes).",
                          f"Pass {flag('time_budget')} MINUTES to train it longer.")
    return DetectorRunState(run, prepared, config, DetectorSpec(**state["spec"]), int(state["seed"]), state,
                            epochs_done=done)


def _run(ws: Workspace, state: DetectorRunState, device: str, reporter: Reporter) -> DetectorResult:
    run_dir = ws.run_dir(state.run)
    fresh, main = state.checkpoint is None, distributed.is_main()  # only rank 0 writes
    keeper = None
    if main:
        record = run_record(state, device)
        keeper = Run.new(run_dir, record) if fresh else Run(run_dir, record)
        if not fresh:
            keeper.clean_leftovers()
    resumable = (run_dir / "checkpoints" / checkpoint.LAST).exists
    with keeper.failures(resumable, keep_unresumable=False) if keeper else contextlib.nullcontext():
        trainee = _fit(run_dir, state, device, reporter)
    if not main:  # rank 0 evaluates and writes; the others wait for its metrics
        metrics = distributed.broadcast(None)
        return DetectorResult(state.run, run_dir, state.prepared.name, state.config.arch, state.config.epochs, metrics)
    detector = Detector(trainee.model, state.spec, state.prepared.vocab, state.run, device)
    metrics = evaluate_detector(detector, state.prepared, run_dir, reporter)
    metrics["train_images_per_s"] = mean_rate(read_log(run_dir / "log.jsonl"))
    atomic.write_json(run_dir / "metrics.json", {"split": metrics.pop("split"), "task": "det", "metrics": metrics})
    keeper.complete()
    ws.set_latest(LATEST_KIND, state.run)
    distributed.broadcast(metrics)
    return DetectorResult(state.run, run_dir, state.prepared.name, state.config.arch, state.config.epochs, metrics)


def run_record(state: DetectorRunState, device: str) -> RunRecord:
    """The detector run's record (config.yaml, run.json): its options are the DetectorConfig (arch included)."""
    return RunRecord(run=state.run, head=DetectorTrainee.name, dataset=state.prepared.name, task="det",
                     seed=state.seed, device=device, options=asdict(state.config))


def _fit(run_dir: Path, state: DetectorRunState, device: str, reporter: Reporter) -> DetectorTrainee:
    """The one loop over the detector; the trainee ends with the final (= best) weights."""
    torch.manual_seed(state.seed)
    model = state.model if state.model is not None else build_model(state.spec)
    trainee = DetectorTrainee(state.config, state.spec, state.prepared, state.seed, model, device)
    per_epoch = distributed.sharded_count(num_batches(len(trainee.images), state.config.batch_size))
    trainee.total = per_epoch * state.config.epochs  # the lr schedule's steps
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


class DetectorClock(Clock):
    """The detector's clock: the seconds trained over every session (its state, in last.pt), the stop at the
    time budget, and each epoch's record as the detector writes it (partial, images/s, the loss terms, the
    last step's lr). The lr itself is the loop's schedule (`DetectorTrainee.step_lr`)."""

    def __init__(self, config: DetectorConfig, per_epoch: int) -> None:
        super().__init__()
        self.config, self.per_epoch = config, per_epoch

    def before_step(self, loop: Any) -> None:
        if loop.batches_done == 0:
            self.epoch_started = time.perf_counter()

    def after_step(self, loop: Any, terms: dict[str, Any]) -> None:
        super().after_step(loop, terms)
        budget = self.config.time_budget
        if distributed.any_rank(bool(budget) and self.seconds >= budget):  # every rank together
            loop.stopped = True

    def after_epoch(self, loop: Any, record: dict) -> None:
        took = time.perf_counter() - self.epoch_started
        images = loop.batches_done * self.config.batch_size * distributed.world_size()
        losses = {k: v for k, v in record["train"].items() if k != "grad_norm"}
        record.update(partial=loop.batches_done < self.per_epoch, seconds=round(took, 3),
                      images_per_s=round(images / max(took, 1e-9), 2), lr=loop.optimizer.param_groups[0]["lr"],
                      **losses)


def train_request(ws: Workspace, request: Any, resume: str | None = None) -> DetectorResult:
    """The detector kind's entry point (sgtool/detect/kind.py): `sgtool train-detector` as a TrainRequest."""
    options = request.given()
    return train_detector(ws, resume=resume, dataset=request.dataset, name=request.name, seed=request.seed,
                          device=request.device, threads=options.pop("threads", None), reporter=request.reporter,
                          **options)


def resume_request(ws: Workspace, run: str, request: Any) -> DetectorResult:
    return train_request(ws, request, resume=run)
