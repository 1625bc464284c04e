"""The one training loop for every `TrainableHead`, the detector (`engine/train_detector.py`) and the
auto-encoder (`autoencoder/train.py`); everything besides stepping is a hook (`engine/hooks.py`).

    for each phase of the head (most have one):  head.begin_phase(name); a fresh optimiser + schedule
        for each epoch:  for batch in head.batches(train):  hooks; loss = head.loss(batch)["loss"]; step (clipped)
                         hooks: validation + best checkpoint, log.jsonl, last.pt, TensorBoard, progress

The learning rate is scheduled here, in one place: a head's per-epoch schedule (`--set schedule=`), or a
trainee's per-step one (`trainee.step_lr(step, seconds)`: the detector, the auto-encoder), set before each step.

Checkpoints (`engine/checkpoint.py`, the one format, atomic, in <run>/checkpoints/): last.pt after every epoch
(all a resume needs, each hook's state included), model.pt the best epoch by `val_metric`. A non-finite loss
or gradient stops training with an SgtoolError; the last good last.pt is kept. Under torchrun
(`sgtool/distributed.py`) each rank trains on its share of the batches through DDP, rank 0 validates, and
only rank 0 writes.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgtool import distributed
from sgtool.engine.checkpoint import BEST, LAST, load, load_state, resume_point  # noqa: F401 (re-exported)
from sgtool.engine.hooks import Clock, Hook, Validator, default_hooks, read_log, write_log  # noqa: F401 (re-exported)
from sgtool.errors import SgtoolError
from sgtool import flags
from sgtool.heads import TrainableHead, TrainData
from sgtool.ui import SILENT, Reporter


@dataclass
class LoopState:
    epoch: int = 0  # epochs finished, over all phases
    step: int = 0  # optimiser steps taken
    best_value: float | None = None
    best_epoch: int | None = None
    batches_per_epoch: int = 0  # seen in the last epoch (for the progress bar)


class Loop:
    """What the hooks see: the head, its data and run folder, the optimiser of the current phase, the counters."""

    def __init__(self, head: TrainableHead, data: TrainData, folder: Path) -> None:
        self.head, self.data, self.folder = head, data, Path(folder)
        self.checkpoints, self.rng = self.folder / "checkpoints", np.random.default_rng(data.seed)
        self.state, self.log, self.stopped = LoopState(), [], False
        self.phase, self.phase_index, self.phase_end = "", 0, 0
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.loss_fn: Any = None
        self.batches_done, self.mean_loss = 0, 0.0
        self.autocast: Any = contextlib.nullcontext
        self.hooks: list[Hook] = []
        self.clock = Clock()  # the run's clock: its first Clock hook (`use_hooks`), else one of its own

    def use_hooks(self, hooks: list[Hook], saved: dict | None) -> None:
        """The run's hooks, their states given back from last.pt on resume (a hook it does not name starts afresh)."""
        self.hooks = hooks
        self.clock = next((hook for hook in hooks if isinstance(hook, Clock)), self.clock)
        for hook in hooks if saved is not None else ():
            hook.load_state_dict((saved.get("hooks") or {}).get(type(hook).__name__, {}))

    def begin_phase(self, index: int, phase: str, epochs: int, saved: dict | None) -> None:
        self.phase, self.phase_index = phase, index
        self.head.begin_phase(phase)
        self.optimizer, self.scheduler = make_optimizer(self.head.config, self.head.model.to(self.data.device), epochs)
        if hasattr(self.head, "step_lr"):  # a per-step schedule of the trainee's own
            self.scheduler = StepSchedule(self.optimizer, self.head.step_lr)
        if saved is not None and saved["loop"].get("phase", 0) == index:
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
        self.loss_fn = distributed.wrap_loss(self.head.model, self.head.loss)  # DDP under torchrun

    def set_step_lr(self) -> None:
        """Before each step: a per-step schedule sets this step's lr (a per-epoch one steps after each epoch)."""
        if isinstance(self.scheduler, StepSchedule):
            self.scheduler.before_step(self.state.step, self.clock.elapsed())

    def training_state(self) -> dict[str, Any]:
        """What last.pt holds besides the model and the random generators."""
        states = {type(hook).__name__: hook.state_dict() for hook in self.hooks}
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "loop": {**asdict(self.state), "phase": self.phase_index},
                "hooks": {name: state for name, state in states.items() if state}}


class StepSchedule:
    """A trainee's per-step learning rate, `step_lr(step, seconds trained)`, set before each optimiser step.
    It holds no state of its own: the step and the clock are in last.pt."""

    def __init__(self, optimizer: torch.optim.Optimizer, step_lr: Any) -> None:
        self.optimizer, self.step_lr = optimizer, step_lr

    def before_step(self, step: int, seconds: float) -> None:
        lr = self.step_lr(step, seconds)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self) -> None:
        pass  # nothing per epoch

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass  # an old checkpoint's per-epoch LambdaLR state: the lr is set again before the next step


def run_loop(head: TrainableHead, data: TrainData, folder: Path, validate: Validator,
             reporter: Reporter = SILENT, resume: bool = False, make_hooks: Any = default_hooks) -> list[dict]:
    """Train head on data.train in the run folder; return the log records. The head ends with the best weights.
    make_hooks(config, validate, bar) -> the hooks (a relation head's by default; the detector brings its own)."""
    with deterministic_kernels(head.config.deterministic):
        return _train(head, data, folder, validate, reporter, resume, make_hooks)


def _train(head: TrainableHead, data: TrainData, folder: Path, validate: Validator, reporter: Reporter,
           resume: bool, make_hooks: Any) -> list[dict]:
    seed_everything(data.seed)
    if head.model is None:
        head.build(data)
    loop, saved = Loop(head, data, folder), None
    if resume:  # the head's weights and every RNG from last.pt; epochs logged after it are dropped
        saved = resume_point(head, loop.checkpoints, loop.rng)
        loop.state = LoopState(**{k: v for k, v in saved["loop"].items() if k != "phase"})
        loop.log = [r for r in read_log(loop.folder / "log.jsonl")  # epoch records and a trainee's step records
                    if r.get("event") in ("epoch", "train") and r["epoch"] <= loop.state.epoch]
    with reporter.progress() as bar:
        hooks = make_hooks(head.config, validate, bar)
        loop.use_hooks(hooks, saved)
        for hook in hooks:
            hook.before_train(loop)
        first = 0
        for index, (phase, epochs) in enumerate(head.phases()):
            loop.phase_end = first + epochs
            if loop.state.epoch < loop.phase_end and not loop.stopped:
                loop.begin_phase(index, phase, epochs, saved)
            while loop.state.epoch < loop.phase_end and not loop.stopped:
                started, lr = time.time(), loop.optimizer.param_groups[0]["lr"]
                losses = train_epoch(loop, hooks)
                loop.scheduler.step()
                loop.state.epoch += 1
                record = {"time": time.time(), "event": "epoch", "phase": phase, "epoch": loop.state.epoch,
                          "step": loop.state.step, "lr": lr, "train": losses, "seconds": round(time.time() - started, 3)}
                for hook in hooks:
                    hook.after_epoch(loop, record)
            first += epochs
        for hook in hooks:
            hook.after_train(loop)
    return loop.log


def train_epoch(loop: Loop, hooks: list[Hook]) -> dict[str, float]:
    """One pass over the training batches (this rank's share of them); mean of each loss term and the gradient norm."""
    head, optimizer, state = loop.head, loop.optimizer, loop.state
    head.model.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    clip = head.config.grad_clip or math.inf
    sums: dict[str, float] = {}
    loop.batches_done = 0
    for batch in distributed.shard(head.batches(loop.data.train, shuffle=True, rng=loop.rng)):
        loop.set_step_lr()
        for hook in hooks:
            hook.before_step(loop)
        with loop.autocast():
            terms = loop.loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        check_finite("loss", terms["loss"], state)
        terms["loss"].backward()
        terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, clip)
        check_finite("gradient norm", terms["grad_norm"], state)
        optimizer.step()
        state.step, loop.batches_done = state.step + 1, loop.batches_done + 1
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach() if isinstance(value, torch.Tensor) else value)
        loop.mean_loss = sums["loss"] / loop.batches_done
        for hook in hooks:
            hook.after_step(loop, terms)
        if loop.stopped:
            break
    if loop.batches_done == 0:
        raise SgtoolError("The training split gave no batches (no image with an annotated relation).",
                          "Prepare a dataset whose train split holds relations.")
    state.batches_per_epoch = loop.batches_done
    return distributed.mean_over_ranks({name: value / loop.batches_done for name, value in sums.items()})


def check_finite(what: str, value: torch.Tensor, state: LoopState) -> None:
    if not distributed.all_finite(value):  # on every rank, so that all ranks stop together
        kept = f"The last good checkpoint (epoch {state.epoch}, checkpoints/{LAST}) is kept; " if state.epoch else ""
        raise SgtoolError(f"Training stopped in epoch {state.epoch + 1} (step {state.step + 1}): the {what} is "
                          f"{float(value.detach().float().reshape(-1)[0])}.",
                          f"{kept}try a lower {flags.setting('lr')}... or a {flags.setting('grad_clip')}... .")


# ---------------------------------------------------------------- optimiser, schedule, seeds

OPTIMISERS = {
    "adam": lambda params, config, betas: torch.optim.Adam(params, lr=config.lr, betas=betas,
                                                          weight_decay=config.weight_decay),
    "adamw": lambda params, config, betas: torch.optim.AdamW(params, lr=config.lr, betas=betas,  # the detector's
                                                            weight_decay=config.weight_decay),
    "sgd": lambda params, config, betas: torch.optim.SGD(params, lr=config.lr, momentum=0.9,
                                                        weight_decay=config.weight_decay),
}
SCHEDULES = {
    "none": lambda optimizer, config, epochs: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
    "step": lambda optimizer, config, epochs: torch.optim.lr_scheduler.StepLR(
        optimizer, config.step_size or max(1, epochs // 3), config.gamma),
    "cosine": lambda optimizer, config, epochs: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs)),
}


def make_optimizer(config: Any, model: torch.nn.Module, epochs: int) -> tuple[torch.optim.Optimizer, Any]:
    """The configured optimiser over the parameters that require gradients, and its per-epoch schedule; a name
    outside OPTIMISERS / SCHEDULES is refused (never silently replaced)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise SgtoolError("The head has no trainable parameters in this phase.", "This is a bug in the head.")
    for setting, table in (("optimizer", OPTIMISERS), ("schedule", SCHEDULES)):
        if getattr(config, setting) not in table:
            raise SgtoolError(f"Unknown {setting} '{getattr(config, setting)}'.",
                              f"Use one of: {', '.join(sorted(table))}.")
    betas = tuple(getattr(config, "betas", (0.9, 0.999)))  # the auto-encoder's paper: (0.6, 0.9)
    optimizer = OPTIMISERS[config.optimizer](params, config, betas)
    return optimizer, SCHEDULES[config.schedule](optimizer, config, epochs)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_kernels(enabled: bool) -> Iterator[None]:
    """`--set deterministic=true`: cuDNN / cuBLAS pick deterministic algorithms (an op without one raises) while
    the run trains; the process-wide flags and CUBLAS_WORKSPACE_CONFIG are put back afterwards."""
    if not enabled:
        yield
        return
    kept = (os.environ.get("CUBLAS_WORKSPACE_CONFIG"), torch.backends.cudnn.benchmark,
            torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled())
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        if kept[0] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = kept[1], kept[2]
        torch.use_deterministic_algorithms(kept[3])
