"""The one training loop for every `TrainableHead`.

    for each phase of the head (most heads have one):   head.begin_phase(name); fresh optimiser + schedule
        for each epoch:  for batch in head.batches(train):  loss = head.loss(batch)["loss"]; step (clipped)
                         validate (predict val, the configured metric), log.jsonl line, checkpoints

Checkpoints (atomic writes, in <run>/checkpoints/): `last.pt` after every epoch holds everything a
resume needs (head state, optimiser, scheduler, phase, epoch, step, best so far, RNG states);
`model.pt` is the best epoch by `val_metric` (the file `eval` / `predict` load). A non-finite loss
or gradient stops training with an SgtoolError; the last good `last.pt` is left untouched.
Under torchrun (`engine/distributed.py`) each rank trains on its share of the batches through DDP,
rank 0 validates, and only rank 0 writes the log and checkpoints.
"""
from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgtool import atomic
from sgtool.engine import distributed
from sgtool.errors import SgtoolError
from sgtool.heads import HeadConfig, TrainableHead, TrainData
from sgtool.ui import SILENT, Reporter

LAST = "last.pt"
BEST = "model.pt"
STATE_FORMAT = "sgtool-train-state"

Validator = Callable[[], dict[str, float]]  # predicts the val split with the head, returns its metrics


@dataclass
class LoopState:
    epoch: int = 0  # epochs finished, over all phases
    step: int = 0  # optimiser steps taken
    best_value: float | None = None
    best_epoch: int | None = None
    batches_per_epoch: int = 0  # seen in the last epoch (for the progress bar)


# ---------------------------------------------------------------- the loop

def run_loop(head: TrainableHead, data: TrainData, folder: Path, validate: Validator,
             reporter: Reporter = SILENT, resume: bool = False) -> list[dict]:
    """Train head on data.train in the run folder; return the log records. The head ends with the best weights."""
    config, ckpt, rng = head.config, Path(folder) / "checkpoints", np.random.default_rng(data.seed)
    seed_everything(data.seed)
    if config.deterministic:
        use_deterministic_kernels()
    if head.model is None:
        head.build(data)
    state, log, saved = LoopState(), [], _resume_point(head, ckpt, rng, resume)
    if saved is not None:
        state = LoopState(**saved["loop"])  # epochs logged after the last checkpoint are dropped
        log = [r for r in read_log(Path(folder) / "log.jsonl") if r.get("event") == "epoch" and r["epoch"] <= state.epoch]
    plan, first = head.phases(), 0
    with reporter.progress() as bar:
        task = bar.add_task(f"train {head.name}", total=sum(n for _, n in plan), completed=state.epoch, status="")
        for index, (phase, epochs) in enumerate(plan):
            if state.epoch < first + epochs:
                head.begin_phase(phase)
                optimizer, scheduler = make_optimizer(config, head.model.to(data.device), epochs)
                if saved is not None and saved["phase"] == index:
                    optimizer.load_state_dict(saved["optimizer"])
                    scheduler.load_state_dict(saved["scheduler"])
                loss_fn = distributed.wrap_loss(head.model, head.loss)  # DDP under torchrun, else head.loss
            while state.epoch < first + epochs:
                started, lr = time.time(), optimizer.param_groups[0]["lr"]
                losses = train_epoch(head, optimizer, data, rng, state, lambda done, loss: bar.update(
                    task, completed=state.epoch + done, status=f"{phase} loss {loss:.4f}"), loss_fn)
                scheduler.step()
                state.epoch += 1
                metrics = distributed.on_main(validate) if _validates(config, state.epoch, first + epochs) else None
                log.append(_record(config, state, phase, losses, lr, metrics, started))
                main = distributed.is_main()  # only rank 0 writes
                if main:
                    write_log(Path(folder) / "log.jsonl", log)
                if _improved(state, config, metrics) and main:
                    save_best(ckpt / BEST, head, state, config.val_metric)
                if main:
                    save_last(ckpt / LAST, head, optimizer, scheduler, index, state, rng)
                bar.update(task, completed=state.epoch, status=_status(phase, losses, config.val_metric, metrics))
            first += epochs
    if distributed.is_main():
        head.load_state_dict(load_state(ckpt / BEST)["state"])
    head.model.to(data.device)
    return log


def train_epoch(head: TrainableHead, optimizer: torch.optim.Optimizer, data: TrainData, rng: np.random.Generator,
                state: LoopState, progress: Callable[[float, float], None],
                loss_fn: Callable[[Any], dict[str, Any]] | None = None) -> dict[str, float]:
    """One pass over the training batches (this rank's share of them); mean of each loss term and the gradient norm."""
    head.model.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    clip = head.config.grad_clip or math.inf
    batches = distributed.shard(head.batches(data.train, shuffle=True, rng=rng))
    expected = len(batches) if hasattr(batches, "__len__") else state.batches_per_epoch
    sums: dict[str, float] = {}
    count = 0
    for batch in batches:
        terms = (loss_fn or head.loss)(batch)
        optimizer.zero_grad(set_to_none=True)
        check_finite("loss", terms["loss"], state)
        terms["loss"].backward()
        terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, clip)
        check_finite("gradient norm", terms["grad_norm"], state)
        optimizer.step()
        state.step, count = state.step + 1, count + 1
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach() if isinstance(value, torch.Tensor) else value)
        progress(min(count / expected, 1.0) if expected else 0.0, sums["loss"] / count)
    state.batches_per_epoch = count
    if count == 0:
        raise SgtoolError("The training split gave no batches (no image with an annotated relation).",
                          "Prepare a dataset whose train split holds relations.")
    return distributed.mean_over_ranks({name: value / count for name, value in sums.items()})


def check_finite(what: str, value: torch.Tensor, state: LoopState) -> None:
    if not distributed.all_finite(value):  # on every rank, so that all ranks stop together
        kept = f"The last good checkpoint (epoch {state.epoch}, checkpoints/{LAST}) is kept; " if state.epoch else ""
        raise SgtoolError(f"Training stopped in epoch {state.epoch + 1} (step {state.step + 1}): the {what} is "
                          f"{float(value.detach().float().reshape(-1)[0])}.",
                          f"{kept}try a lower --set lr=... or a --set grad_clip=... .")


# ---------------------------------------------------------------- optimiser, schedule, seeds

def make_optimizer(config: HeadConfig, model: torch.nn.Module, epochs: int) -> tuple[torch.optim.Optimizer, Any]:
    """The configured optimiser over the parameters that require gradients, and its per-epoch schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise SgtoolError("The head has no trainable parameters in this phase.", "This is a bug in the head.")
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.schedule == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.step_size or max(1, epochs // 3), config.gamma)
    elif config.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return optimizer, scheduler


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def use_deterministic_kernels() -> None:
    """`--set deterministic=true`: cuDNN / cuBLAS pick deterministic algorithms (an op without one raises)."""
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)


def rng_states(rng: np.random.Generator) -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
              "batches": rng.bit_generator.state}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any], rng: np.random.Generator) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    rng.bit_generator.state = states["batches"]
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ---------------------------------------------------------------- validation and log

def _validates(config: HeadConfig, epoch: int, phase_end: int) -> bool:
    return epoch % config.val_every == 0 or epoch == phase_end


def _improved(state: LoopState, config: HeadConfig, metrics: dict[str, float] | None) -> bool:
    """Is this epoch the new best? Without val relations (metrics == {}), the latest epoch is."""
    if metrics is None:
        if state.best_epoch is not None:
            return False
        state.best_epoch = state.epoch
        return True
    if not metrics:
        state.best_epoch = state.epoch
        return True
    if config.val_metric not in metrics:
        raise SgtoolError(f"The validation metric {config.val_metric} is not computed for this task.",
                          "Pick another with --set val_metric=..., e.g. mR@50 or R@50.")
    value = float(metrics[config.val_metric])
    if state.best_value is not None and value <= state.best_value:
        return False
    state.best_value, state.best_epoch = value, state.epoch
    return True


def _record(config: HeadConfig, state: LoopState, phase: str, losses: dict[str, float], lr: float,
            metrics: dict[str, float] | None, started: float) -> dict:
    record = {"time": time.time(), "event": "epoch", "phase": phase, "epoch": state.epoch, "step": state.step,
              "lr": lr, "train": losses, "seconds": round(time.time() - started, 3)}
    if metrics is not None:
        record.update(val_metric=config.val_metric, val_value=metrics.get(config.val_metric), val=metrics)
    return record


def _status(phase: str, losses: dict[str, float], metric: str, metrics: dict[str, float] | None) -> str:
    shown = f"{phase} loss {losses['loss']:.4f}"
    if metrics and metric in metrics:
        shown += f"  val {metric} {100 * metrics[metric]:.2f}"
    return shown


def write_log(path: Path, records: list[dict]) -> None:
    atomic.write_text(path, "".join(json.dumps(r, default=_plain) + "\n" for r in records))


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic, torch.Tensor)):
        return value.item()
    return str(value)


# ---------------------------------------------------------------- checkpoints

def save_best(path: Path, head: TrainableHead, state: LoopState, metric: str) -> None:
    """The head's state as `load_checkpoint` reads it ({"head", "state"}), with the epoch it comes from."""
    _save(path, {"head": head.name, "state": head.state_dict(), "epoch": state.epoch,
                 "val_metric": metric, "val_value": state.best_value})


def save_last(path: Path, head: TrainableHead, optimizer: torch.optim.Optimizer, scheduler: Any, phase: int,
              state: LoopState, rng: np.random.Generator) -> None:
    _save(path, {"format": STATE_FORMAT, "head": head.name, "state": head.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "phase": phase,
                 "loop": asdict(state), "rng": rng_states(rng)})


def _save(path: Path, payload: dict) -> None:
    with atomic.atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_state(path: Path) -> dict:
    if not path.exists():
        raise SgtoolError(f"No checkpoint at {path}.", "The run was not trained far enough to resume; train again.")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - truncated, random or empty bytes raise many kinds
        raise SgtoolError(f"{path} is not a readable checkpoint ({type(exc).__name__}).",
                          "It may be truncated or overwritten; train a new run instead.") from exc
    if not isinstance(saved, dict):
        raise SgtoolError(f"{path} is not an sgtool checkpoint.", "Train a new run instead.")
    return saved


def training_state(path: Path, head: str) -> dict:
    """last.pt, checked to be a training state of `head` (SgtoolError otherwise): what --resume reads."""
    saved = load_state(path)
    if saved.get("format") != STATE_FORMAT or saved.get("head") != head:
        raise SgtoolError(f"{path} is not a training state of the {head} head.", "Train a new run instead.")
    return saved


def _resume_point(head: TrainableHead, ckpt: Path, rng: np.random.Generator, resume: bool) -> dict | None:
    """With resume: restore head weights and RNG states from last.pt and return it (None otherwise)."""
    if not resume:
        return None
    saved = training_state(ckpt / LAST, head.name)
    head.load_state_dict(saved["state"])
    set_rng_states(saved["rng"], rng)
    return saved
