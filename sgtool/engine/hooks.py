"""What the one training loop (`engine/loop.py`) does besides stepping, each a hook called at fixed points:

    before_train(loop)   before_step(loop)   after_step(loop, terms)   after_epoch(loop, record)   after_train(loop)

A hook with state (a clock) returns it from `state_dict()`; last.pt keeps it under the hook's class name
(one hook of a class per run) and a resumed run gives it back through `load_state_dict()` before
`before_train`. Hooks never set the learning rate: the loop's schedule does (`engine/loop.py`).

Clock (seconds trained over every session), AmpHook (bfloat16 autocast on CUDA, `--set amp=true`),
BudgetHook (a Clock: `--set max_steps=N`, `--set minutes=M`), ValidationHook (val metrics, the best
checkpoint by `val_metric`), LogHook (log.jsonl), CheckpointHook (last.pt), TensorBoardHook
(`--set tensorboard=true`) and ProgressHook (the bar). Only rank 0 writes.
"""
from __future__ import annotations

import json
import time
from time import perf_counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgtool import atomic
from sgtool import distributed
from sgtool.engine import checkpoint
from sgtool.errors import SgtoolError
from sgtool.flags import setting

Validator = Callable[[], dict[str, float]]  # predicts the val split with the head, returns its metrics


class Hook:
    def before_train(self, loop: Any) -> None: ...

    def before_step(self, loop: Any) -> None: ...

    def after_step(self, loop: Any, terms: dict[str, Any]) -> None: ...

    def after_epoch(self, loop: Any, record: dict) -> None: ...

    def after_train(self, loop: Any) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}  # stateless

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Clock(Hook):
    """The seconds trained, over every session of the run: its state, so a resumed run's time budget goes on
    where it stopped. `seconds` is updated after each step; `elapsed()` is the time up to now."""

    def __init__(self) -> None:
        self.seconds, self.base, self.started = 0.0, 0.0, perf_counter()

    def before_train(self, loop: Any) -> None:
        self.base, self.started = self.seconds, perf_counter()

    def elapsed(self) -> float:
        return self.base + perf_counter() - self.started

    def after_step(self, loop: Any, terms: dict[str, Any]) -> None:
        self.seconds = self.elapsed()

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seconds = float(state.get("seconds", 0.0))


class AmpHook(Hook):
    """Mixed precision on CUDA: the forward pass and loss under bfloat16 autocast (no loss scaling needed)."""

    def before_train(self, loop: Any) -> None:
        if loop.head.config.amp and str(loop.data.device).startswith("cuda"):
            loop.autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)


class BudgetHook(Clock):
    """Stops training after `max_steps` optimiser steps or `minutes` of training over every session (0: no
    limit); the epoch it stops in is then the last one (validated and checkpointed)."""

    def __init__(self, max_steps: int, minutes: float) -> None:
        super().__init__()
        self.max_steps, self.budget = max_steps, 60 * minutes

    def before_train(self, loop: Any) -> None:
        super().before_train(loop)
        if self.max_steps and loop.state.step >= self.max_steps:  # resumed after the last step: nothing to add
            loop.stopped = True

    def after_step(self, loop: Any, terms: dict[str, Any]) -> None:
        super().after_step(loop, terms)
        if (self.max_steps and loop.state.step >= self.max_steps) or (self.budget and self.seconds >= self.budget):
            loop.stopped = True


class ValidationHook(Hook):
    """After an epoch (every val_every, a phase's last, the last before a budget stop): val metrics into the
    record; the best epoch by val_metric (the latest without val relations) becomes checkpoints/model.pt."""

    def __init__(self, validate: Validator) -> None:
        self.validate = validate

    def after_epoch(self, loop: Any, record: dict) -> None:
        config, state = loop.head.config, loop.state
        due = state.epoch % config.val_every == 0 or state.epoch == loop.phase_end or loop.stopped
        metrics = distributed.on_main(self.validate) if due else None
        if metrics is not None:
            record.update(val_metric=config.val_metric, val_value=metrics.get(config.val_metric), val=metrics)
        if improved(state, config.val_metric, metrics) and distributed.is_main():
            checkpoint.save_best(loop.checkpoints / checkpoint.BEST, loop.head, state.epoch, config.val_metric,
                                 state.best_value)

    def after_train(self, loop: Any) -> None:
        if distributed.is_main():
            loop.head.load_state_dict(checkpoint.load(loop.checkpoints / checkpoint.BEST)["model"])
        loop.head.model.to(loop.data.device)


def improved(state: Any, metric: str, metrics: dict[str, float] | None) -> bool:
    """Is this epoch the new best? Without val relations (metrics == {}), the latest epoch is."""
    if metrics is None:
        if state.best_epoch is not None:
            return False
        state.best_epoch = state.epoch
        return True
    if not metrics:
        state.best_epoch = state.epoch
        return True
    if metric not in metrics:
        raise SgtoolError(f"The validation metric {metric} is not computed for this task.",
                          f"Pick another with {setting('val_metric')}..., e.g. mR@50 or R@50.")
    value = float(metrics[metric])
    if state.best_value is not None and value <= state.best_value:
        return False
    state.best_value, state.best_epoch = value, state.epoch
    return True


class LogHook(Hook):
    """log.jsonl: one record per epoch (phase, step, lr, train losses, val metrics, seconds), rewritten atomically."""

    def after_epoch(self, loop: Any, record: dict) -> None:
        loop.log.append(record)
        if distributed.is_main():
            write_log(loop.folder / "log.jsonl", loop.log)


class CheckpointHook(Hook):
    """last.pt after every epoch: everything a resume needs (`Loop.training_state`)."""

    def after_epoch(self, loop: Any, record: dict) -> None:
        if distributed.is_main():
            checkpoint.save_last(loop.checkpoints / checkpoint.LAST, loop.head, loop.training_state(), loop.rng)


class TensorBoardHook(Hook):
    """Event files in <run>/tensorboard: train losses per step and per epoch, lr, val metrics per epoch."""

    def before_train(self, loop: Any) -> None:
        writer = require_tensorboard()
        self.writer = writer(str(loop.folder / "tensorboard")) if distributed.is_main() else None

    def after_step(self, loop: Any, terms: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.add_scalar("train/step_loss", float(terms["loss"].detach()), loop.state.step)

    def after_epoch(self, loop: Any, record: dict) -> None:
        if self.writer is None:
            return
        for name, value in record["train"].items():
            self.writer.add_scalar(f"train/{name}", value, record["epoch"])
        self.writer.add_scalar("lr", record["lr"], record["epoch"])
        for name, value in (record.get("val") or {}).items():
            if value is not None:
                self.writer.add_scalar(f"val/{name}", value, record["epoch"])
        self.writer.flush()

    def after_train(self, loop: Any) -> None:
        if self.writer is not None:
            self.writer.close()


def require_tensorboard() -> Any:
    """torch's SummaryWriter, or one sentence when the optional tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise SgtoolError(f"{setting('tensorboard', 'true')} needs the tensorboard package, which is not installed.",
                          "Install it with `pip install 'sgtool[tensorboard]'`, or leave the setting out.") from exc
    return SummaryWriter


class ProgressHook(Hook):
    def __init__(self, bar: Any) -> None:
        self.bar, self.task = bar, None

    def before_train(self, loop: Any) -> None:
        total = sum(n for _, n in loop.head.phases())
        self.task = self.bar.add_task(f"train {loop.head.name}", total=total, completed=loop.state.epoch, status="")

    def after_step(self, loop: Any, terms: dict[str, Any]) -> None:
        expected = loop.state.batches_per_epoch
        done = min(loop.batches_done / expected, 1.0) if expected else 0.0
        self.bar.update(self.task, completed=loop.state.epoch + done, status=f"{loop.phase} loss {loop.mean_loss:.4f}")

    def after_epoch(self, loop: Any, record: dict) -> None:
        shown = f"{record['phase']} loss {record['train']['loss']:.4f}"
        metric, value = record.get("val_metric"), record.get("val_value")
        if value is not None:
            shown += f"  val {metric} {100 * value:.2f}"
        for name in getattr(loop.head, "progress_terms", ()):  # a head's own terms worth watching (iwsl: bound gain)
            if name in record["train"]:
                shown += f"  {name} {record['train'][name]:.3g}"
        self.bar.update(self.task, completed=loop.state.epoch, status=shown)


class StepProgressHook(Hook):
    """A bar over the optimiser steps (the detector, the auto-encoder), its total the steps a time budget
    leaves room for at the pace so far; the loop's clock counts the seconds of every session."""

    def __init__(self, bar: Any, label: str, total: int, budget: float | None) -> None:
        self.bar, self.label, self.total, self.budget = bar, label, total, budget

    def before_train(self, loop: Any) -> None:
        self.first_step, self.started = loop.state.step, time.perf_counter()
        self.task = self.bar.add_task(self.label, total=self.total, completed=self.first_step, status="")

    def after_step(self, loop: Any, terms: dict[str, Any]) -> None:
        took = time.perf_counter() - self.started
        left = self.budget - loop.clock.seconds if self.budget else None
        total = expected_steps(loop.state.step, self.total, self.first_step, took, left)
        self.bar.update(self.task, completed=loop.state.step, total=total,
                        status=f"epoch {loop.state.epoch + 1}/{loop.phase_end} loss {float(terms['loss'].detach()):.3f}")

    def after_train(self, loop: Any) -> None:
        self.bar.update(self.task, total=loop.state.step)  # a budget that ended training early: the bar ends full


def expected_steps(step: int, total: int, first_step: int, took: float, seconds_left: float | None) -> int:
    """The steps this run will end at: all `total`, or as many as the time budget leaves room for at the
    pace since `first_step` (so the progress bar's ETA follows the budget)."""
    if seconds_left is None or took <= 0:
        return total
    pace = (step - first_step) / took
    return int(min(total, step + max(0.0, seconds_left) * pace))


def default_hooks(config: Any, validate: Validator, bar: Any) -> list[Hook]:
    """The hooks of a relation head's run, in the order they act after an epoch."""
    hooks: list[Hook] = [AmpHook(), BudgetHook(config.max_steps, config.minutes), ValidationHook(validate),
                         LogHook(), CheckpointHook()]
    if config.tensorboard:
        hooks.append(TensorBoardHook())
    return [*hooks, ProgressHook(bar)]


# ---------------------------------------------------------------- log.jsonl

def write_log(path: Path, records: list[dict]) -> None:
    atomic.write_text(path, "".join(json.dumps(r, default=json_default) + "\n" for r in records))


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def json_default(value: Any) -> Any:
    """json.dumps' fallback for what logs and metas hold: numpy / torch scalars as numbers, arrays as lists."""
    if isinstance(value, np.generic) or isinstance(value, torch.Tensor) and value.dim() == 0:
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    return str(value)

