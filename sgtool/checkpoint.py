"""The one checkpoint format of every run kind, written atomically, and the migrations that read older shapes.

    {format: "sgtool-checkpoint", version, kind, model, optimizer, scheduler, loop, rng, hooks}

`kind` is the run's kind (a head's name, "ae", "detector"); `model` its state (`state_dict()`: a head's, the
auto-encoder's {config, model}, the detector's {spec, vocabulary, dataset, config, seed, model}). `last.pt`
(after every epoch) holds everything a resume needs: optimiser, scheduler, loop counters (phase included), every
random generator (python, numpy, torch, CUDA, the batch order, a head's own) and each hook's state (its clock).
Model files (`model.pt`, the ae's `model-seed<S>.pt`) hold the model and, in `loop`, the epoch and metric they
were picked by; the rest is None. `load` reads the shapes sgtool wrote before this format too (`migrate`).
A kill mid-write leaves the previous file intact; nothing in a file is ever executed (weights-only unpickler).
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgtool import atomic
from sgtool.errors import SgtoolError

FORMAT, VERSION = "sgtool-checkpoint", 1
KEYS = ("format", "version", "kind", "model", "optimizer", "scheduler", "loop", "rng", "hooks")
OLD_TRAIN_STATE = "sgtool-train-state"  # last.pt before the one format
OLD_DETECTOR = "sgtool-detector"  # the detector's state before the one format
CLOCKS = {"ae": "AEClock", "detector": "DetectorClock"}  # the hook whose clock an old trainee state held
AE_EARLIER_OPTIONS = {"edge_input": "image+segment", "aux": "overlap", "baseline": "strong"}  # ae files before them


def pack(kind: str, model: Any, **parts: Any) -> dict[str, Any]:
    """A checkpoint of the one format; `parts` (optimizer, scheduler, loop, rng, hooks) left out are None."""
    unknown = set(parts) - set(KEYS)
    if unknown:
        raise TypeError(f"not a checkpoint part: {sorted(unknown)}")
    return {"format": FORMAT, "version": VERSION, "kind": kind, "model": model,
            **{key: parts.get(key) for key in KEYS[4:]}}


def save(path: Path, payload: dict) -> None:
    with atomic.atomic_path(path) as tmp:
        torch.save(payload, tmp)


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


def load(path: Path) -> dict[str, Any]:
    """A checkpoint or model file (model.npz too) in the one format, whatever shape it was written in."""
    path = Path(path)
    if path.suffix == ".npz":
        return _load_npz(path)
    return migrate(load_state(path), path)


def migrate(saved: dict, path: Path) -> dict[str, Any]:
    """The one format from each shape sgtool wrote: itself, the old last.pt, model files {head, state, ...},
    the ae's {head, config, state} and the detector's bare state; SgtoolError for anything else."""
    if saved.get("format") == FORMAT:
        if int(saved.get("version", 0)) > VERSION:
            raise SgtoolError(f"{path} was written by a newer sgtool (checkpoint version {saved['version']}).",
                              "Upgrade sgtool to read it.")
        return saved
    if saved.get("format") == OLD_DETECTOR:  # the detector's state on its own
        return _old_detector(saved, pack("detector", saved))
    kind, state = saved.get("head"), saved.get("state")
    if not isinstance(kind, str) or not isinstance(state, dict):
        raise SgtoolError(f"{path} is not an sgtool checkpoint.", "Train a new run instead.")
    if saved.get("format") == OLD_TRAIN_STATE:
        loop = {**saved["loop"], "phase": saved["phase"]}
        new = pack(kind, state, optimizer=saved["optimizer"], scheduler=saved["scheduler"], loop=loop,
                   rng=saved["rng"], hooks={})
    else:
        picked = {key: saved[key] for key in ("epoch", "val_metric", "val_value", "free_k") if key in saved}
        new = pack(kind, state, loop=picked or None)
    if kind == "ae" and "config" in saved:  # an ae model file: {head, config, state}
        new["model"] = {"config": {**AE_EARLIER_OPTIONS, **saved["config"]}, "model": state}
    return _old_detector(state, new) if kind == "detector" else _old_clock(new)


def _old_clock(new: dict) -> dict:
    """A trainee state that held its seconds trained: the seconds go to the clock hook's state."""
    model = new["model"]
    if isinstance(model, dict) and "train_seconds" in model and new["kind"] in CLOCKS:
        new["model"] = {k: v for k, v in model.items() if k != "train_seconds"}
        if new["hooks"] is not None:
            new["hooks"] = {CLOCKS[new["kind"]]: {"seconds": float(model["train_seconds"])}}
    return new


def _old_detector(state: dict, new: dict) -> dict:
    """The detector's state without its own format and version keys (the one format says them)."""
    new["model"] = {k: v for k, v in state.items() if k not in ("format", "version")}
    return _old_clock(new)


def _load_npz(path: Path) -> dict[str, Any]:
    """A statistical head's model.npz (arrays and `__head__`) as a model file of the one format."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # truncated or random bytes
        raise SgtoolError(f"{path} is damaged or not an sgtool head checkpoint.",
                          "Train the head again (or restore the run folder from a copy).") from exc
    kind = str(arrays.pop("__head__")) if "__head__" in arrays else None
    return pack(kind, arrays)
