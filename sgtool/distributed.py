"""Data-parallel training under `torchrun` (PyTorch DDP); a no-op in a plain single process.

    torchrun --nproc_per_node N -m sgtool train --head tensor ...        (gloo on CPU, nccl on CUDA)

`setup` reads RANK / WORLD_SIZE / LOCAL_RANK from the environment torchrun sets and starts the
process group. Every rank builds the same seeded batch order; `shard` gives rank r the batches
r, r + N, r + 2N, ... of each epoch, in full groups of N (a last group with fewer than N batches
is dropped, as DistributedSampler(drop_last=True) does), so one optimiser step sees N batches:
the global batch is N × --batch-size images, and the per-rank losses' gradients are averaged by
DDP. Rank 0 validates and broadcasts the metrics; only rank 0 writes the workspace (checkpoints,
logs, predictions, reports) while the others wait at a barrier. Heads never see any of this.
"""
from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from sgtool.errors import SgtoolError

T = TypeVar("T")
TIMEOUT = timedelta(minutes=float(os.environ.get("SGTOOL_DIST_TIMEOUT_MINUTES", "60")))


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def setup(device: str) -> str:
    """Join the process group torchrun describes (if any); return the device to train on."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or active():
        return device
    if not dist.is_available():
        raise SgtoolError("torchrun started several processes, but this PyTorch has no torch.distributed.",
                          "Run a single process, or install a PyTorch build with distributed support.")
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # "cuda" now means this rank's GPU
    dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=TIMEOUT)
    atexit.register(shutdown)
    if dist.get_rank() != 0:
        sys.stdout = open(os.devnull, "w")  # results are printed once, by rank 0
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast(value: T) -> T:
    """Rank 0's value on every rank (any picklable object)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], T]) -> T:
    """Run fn on rank 0 only and give its result to every rank."""
    return broadcast(fn() if is_main() else None)


def all_finite(value: torch.Tensor) -> bool:
    """Whether value is finite on every rank (so all ranks stop together)."""
    ok = torch.isfinite(value.detach()).all().reshape(1).float()
    if active():
        ok = ok.to(_collective_device())
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item())


def any_rank(flag: bool) -> bool:
    """True on every rank when flag is true on some rank (e.g. a time budget ran out)."""
    if not active():
        return flag
    value = torch.tensor([float(flag)], device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average each number over the ranks (the same keys on every rank)."""
    if not active() or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return {k: float(v) / world_size() for k, v in zip(keys, tensor.tolist())}


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# ---------------------------------------------------------------- batches and models

def shard(batches: Iterable[T]) -> Iterable[T]:
    """This rank's share of an epoch's batches: the rank-th of each full group of world_size batches."""
    size = world_size()
    if size == 1:
        return batches
    if hasattr(batches, "__len__"):
        items = list(batches)
        return items[rank():len(items) - len(items) % size:size]
    return _shard_lazily(iter(batches), rank(), size)


def _shard_lazily(batches: Iterator[T], index: int, size: int) -> Iterator[T]:
    group: list[T] = []
    for batch in batches:  # every batch is drawn on every rank, so the random streams stay in step
        group.append(batch)
        if len(group) == size:
            yield group[index]
            group = []


def sharded_count(count: int) -> int:
    """Optimiser steps per epoch on each rank for count batches."""
    return count // world_size() if world_size() > 1 else count


class _LossModule(nn.Module):
    """forward(batch) = loss_fn(batch), so DDP sees the head's network run inside its forward."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[Any], Any]) -> None:
        super().__init__()
        self.model = model
        self._loss_fn = loss_fn

    def forward(self, batch: Any) -> Any:
        return self._loss_fn(batch)


def wrap_loss(model: nn.Module, loss_fn: Callable[[Any], T]) -> Callable[[Any], T]:
    """loss_fn, made to average its gradients over the ranks (DDP) when training is distributed.

    Wrap again after changing which parameters require gradients (a new phase)."""
    if not active():
        return loss_fn
    return _ddp(_LossModule(model, loss_fn), find_unused_parameters=True)


def _ddp(module: nn.Module, find_unused_parameters: bool) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    on_gpu = next(module.parameters()).is_cuda
    ids = [torch.cuda.current_device()] if on_gpu else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters)
