"""The training checkpointer of the one loop: everything a resumed run needs, written atomically.

`last.pt` (after every epoch): the head's state, optimiser, scheduler, phase, loop counters, best so far,
and every random generator — python, numpy, torch, CUDA, the batch-order generator and any generator the
head owns (`TrainableHead.random_state`). `model.pt`: the best epoch's head state (what `eval` / `predict`
load), with the epoch and metric it was picked by. A kill mid-write leaves the previous file intact.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgtool import atomic
from sgtool.errors import SgtoolError

LAST = "last.pt"
BEST = "model.pt"
STATE_FORMAT = "sgtool-train-state"


def rng_states(rng: np.random.Generator, head: Any = None) -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
              "batches": rng.bit_generator.state, "head": head.random_state() if head is not None else {}}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any], rng: np.random.Generator, head: Any = None) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    rng.bit_generator.state = states["batches"]
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if head is not None and states.get("head"):
        head.set_random_state(states["head"])


def save(path: Path, payload: dict) -> None:
    with atomic.atomic_path(path) as tmp:
        torch.save(payload, tmp)


def save_best(path: Path, head: Any, epoch: int, metric: str, value: float | None) -> None:
    """The head's state as `load_checkpoint` reads it ({"head", "state"}), with the epoch it comes from."""
    save(path, {"head": head.name, "state": head.state_dict(), "epoch": epoch, "val_metric": metric, "val_value": value})


def save_last(path: Path, head: Any, training: dict[str, Any], rng: np.random.Generator) -> None:
    """`training`: optimizer, scheduler (state dicts), phase (index) and loop (the counters)."""
    save(path, {"format": STATE_FORMAT, "head": head.name, "state": head.state_dict(), **training,
                "rng": rng_states(rng, head)})


def _numpy_globals() -> list:
    """What a checkpoint may hold besides tensors and plain containers: numpy arrays, scalars and dtypes
    (the random states)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    dtypes = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
              np.float16, np.float32, np.float64)
    return [np.dtype, np.ndarray, multiarray._reconstruct, multiarray.scalar, *(type(np.dtype(t)) for t in dtypes)]


def load_state(path: Path) -> dict:
    """A checkpoint read with torch's weights-only unpickler: nothing in the file is ever executed."""
    if not path.exists():
        raise SgtoolError(f"No checkpoint at {path}.", "The run was not trained far enough to resume; train again.")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, random, empty or code-carrying bytes raise many kinds
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


def resume_point(head: Any, folder: Path, rng: np.random.Generator) -> dict:
    """Restore the head's weights and every RNG from last.pt; return it (optimiser and scheduler states inside)."""
    saved = training_state(Path(folder) / LAST, head.name)
    head.load_state_dict(saved["state"])
    set_rng_states(saved["rng"], rng, head)
    return saved
