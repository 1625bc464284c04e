"""The loop's side of the one checkpoint format (`sgtool/checkpoint.py`, which sits below detect/ and
autoencoder/ so that they read it too): every random generator of a run, the best and the last checkpoint,
and the training state that --resume reads back."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgtool.checkpoint import FORMAT, load, load_state, pack, save  # noqa: F401 (re-exported)
from sgtool.errors import SgtoolError

LAST = "last.pt"
BEST = "model.pt"


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


def save_best(path: Path, head: Any, epoch: int, metric: str, value: float | None) -> None:
    """The head's state, with the epoch and val metric it was picked by."""
    save(path, pack(head.name, head.state_dict(), loop={"epoch": epoch, "val_metric": metric, "val_value": value}))


def save_last(path: Path, head: Any, training: dict[str, Any], rng: np.random.Generator) -> None:
    """`training`: optimizer, scheduler (state dicts), loop (the counters and phase) and hooks (their states)."""
    save(path, pack(head.name, head.state_dict(), rng=rng_states(rng, head), **training))


def training_state(path: Path, head: str) -> dict:
    """last.pt, checked to be a training state of `head` (SgtoolError otherwise): what --resume reads."""
    saved = load(path)
    if saved.get("loop") is None or saved.get("optimizer") is None or saved.get("kind") != head:
        raise SgtoolError(f"{path} is not a training state of the {head} head.", "Train a new run instead.")
    return saved


def resume_point(head: Any, folder: Path, rng: np.random.Generator) -> dict:
    """Restore the head's weights and every RNG from last.pt; return it (optimiser, scheduler, hooks inside)."""
    saved = training_state(Path(folder) / LAST, head.name)
    head.load_state_dict(saved["model"])
    set_rng_states(saved["rng"], rng, head)
    return saved
