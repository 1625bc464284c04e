"""Atomic writes: write beside the target, then rename, so a killed process leaves no half file."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path in target's folder; on success it replaces target."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_leftovers(folder: Path) -> list[Path]:
    """Delete the temp files that killed writers left in folder (SIGKILL skips clean-up); the targets are whole."""
    stale = [p for p in Path(folder).rglob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: Path, payload: object) -> None:
    write_text(target, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def write_npz(target: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside target; on success it replaces target whole."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".staging", dir=target.parent))
    os.chmod(staging, 0o777 & ~_UMASK)
    try:
        yield staging
        replace_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_directory(source: Path, target: Path) -> None:
    """Move source to target; an existing target is moved aside first and removed last."""
    trash = None
    if target.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, trash / "old")
    try:
        os.replace(source, target)
    except OSError:
        if trash is not None:
            os.replace(trash / "old", target)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
