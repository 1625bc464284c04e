"""Atomic writes: write beside the target, then rename, so a killed process leaves no half file.

Temporary names carry their writer (`.<target>.<host>-<pid>.<random>.tmp|.staging|.old`), so the next
write of the same target removes what a killed writer left and, when the kill fell between the two
renames of `replace_directory`, puts the old target back first."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from sgtool.flags import flag


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def _prefix(target: Path) -> str:
    """The start of a temporary name of target written by this process."""
    return f".{target.name}.{_HOST}-{os.getpid()}."


LEFTOVER = re.compile(r"^\.(?P<target>.+)\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[^.]+\.(?:tmp|staging|old)$")


def _writer_gone(name: str, target: Path) -> bool:
    """Whether the leftover `name` of target was made by a process of this host that has ended."""
    match = LEFTOVER.match(name)
    if match is None or match["target"] != target.name or match["host"] != _HOST:
        return False  # not one of ours, or another machine's writer: leave it
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def restore_moved_aside(folder: Path) -> None:
    """Put back the entries of folder that a killed `replace_directory` left moved aside (readers call this)."""
    for path in Path(folder).glob(".*.old"):
        match = LEFTOVER.match(path.name)
        if match is not None and not (Path(folder) / match["target"]).exists():
            with contextlib.suppress(OSError):  # a read-only workspace: leave it as it is
                sweep_leftovers(Path(folder) / match["target"])


def sweep_leftovers(target: Path) -> list[Path]:
    """Remove the temporary files and folders of target whose writer was killed; restore a target that a
    killed `replace_directory` had moved aside. Returns what was removed."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    stale = [p for p in target.parent.glob(f".{glob.escape(target.name)}.*")
             if p.name.endswith((".tmp", ".staging", ".old")) and _writer_gone(p.name, target)]
    for path in stale:
        if path.name.endswith(".old") and (path / "old").exists() and not target.exists():
            os.replace(path / "old", target)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path in target's folder; on success it replaces target."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(target)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        raise naming_target(exc, tmp, target) from None
    except RuntimeError as exc:  # torch.save's zip writer reports a failed write (a full disk) as a RuntimeError
        if not any(mark in str(exc) for mark in ("write", "inline_container", "PytorchStreamWriter")):
            raise
        raise OSError(errno.EIO, "Writing failed (is the disk full?)", str(target)) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def naming_target(exc: OSError, temporary: str | Path, target: Path) -> OSError:
    """exc with the hidden temporary path replaced by the target's, so the user reads the file they asked for."""
    hidden = str(temporary)
    if hidden not in f"{exc.filename} {exc.strerror} {exc}":
        return exc
    strerror = (exc.strerror or str(exc)).replace(hidden, str(target))
    filename = str(exc.filename).replace(hidden, str(target)) if exc.filename is not None else str(target)
    return OSError(exc.errno, strerror, filename)


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


def write_json_or_overwrite(target: Path, payload: object) -> None:
    """write_json; when that fails (a full disk has no room for the temp file), overwrite target's bytes in
    place, which reuses its blocks. For a small status file that must say what happened."""
    try:
        write_json(target, payload)
    except OSError:
        data = (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        with open(target, "r+b") as handle:
            handle.write(data)
            handle.truncate()


def write_npz(target: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)


@contextlib.contextmanager
def h5_in_memory(target: Path) -> Iterator[object]:
    """An h5py.File built in memory, written to target as plain bytes when the block succeeds: HDF5's own
    writer takes the whole process down (SIGSEGV in h5py's clean-up) when the disk fills mid-write, while a
    plain write fails with an OSError that is named in one sentence."""
    import io

    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w", track_order=False) as h5:
        yield h5
    with open(target, "wb") as handle:
        handle.write(buffer.getbuffer())


@contextlib.contextmanager
def new_folder_kept_on_success(folder: Path) -> Iterator[None]:
    """Run the block; when it fails, remove `folder` if the block made it and left it empty (a failed first
    `prepare` leaves no empty data/ behind)."""
    folder = Path(folder)
    existed = folder.exists()
    try:
        yield
    except BaseException:
        if not existed:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        raise


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside target; on success it replaces target whole."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(target)
    staging = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".staging", dir=target.parent))
    os.chmod(staging, 0o777 & ~_UMASK)
    try:
        yield staging
        replace_directory(staging, target)
    except OSError as exc:
        raise naming_target(exc, staging, target) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_directory(source: Path, target: Path) -> None:
    """Move source to target; an existing target is moved aside first and removed last."""
    trash = None
    if target.exists():
        trash = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".old", dir=target.parent))
        os.replace(target, trash / "old")
    try:
        os.replace(source, target)
    except OSError:
        if trash is not None:
            os.replace(trash / "old", target)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


# ---------------------------------------------------------------- one writer per target

def _lock(path: Path, mode: int, what: str, hint: str) -> int:
    """A descriptor of the lock file `path` holding an flock of `mode` (LOCK_EX or LOCK_SH); a conflicting
    holder is one sentence naming its pid and what it does."""
    from sgtool.errors import SgtoolError

    patience = 50 if mode == fcntl.LOCK_SH else 0  # the last reader holds it exclusively for a moment to remove it
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 512, 0).decode(errors="replace").split()
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            if patience > 0:
                patience -= 1
                time.sleep(0.01)
                continue
            pid, doing = (holder[0], " ".join(holder[1:]) or "writing") if holder else ("unknown", "writing")
            raise SgtoolError(f"Another sgtool process (pid {pid}) is {doing} {what} right now.", hint) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # locked a file its last holder had just removed: lock the new one


def _lock_path(target: Path) -> Path:
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def exclusive(target: Path, what: str, hint: str = f"Wait for it to finish, or pick another {flag('name')}.") -> Iterator[None]:
    """Hold an flock on `.<target>.lock` beside target while the block runs; a second writer of the same
    target, or a writer while readers hold it (`shared`), is refused in one sentence. The lock file is
    removed on release (the inode check in _lock keeps that safe: a writer that locked a file already
    unlinked tries again)."""
    path = _lock_path(target)
    fd = _lock(path, fcntl.LOCK_EX, what, hint)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} writing\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


@contextlib.contextmanager
def shared(target: Path, what: str, doing: str = "using") -> Iterator[None]:
    """Hold a shared flock on target's lock file while the block runs: any number of readers (runs training on
    a dataset) at once, but `exclusive` (a writer replacing it) is refused meanwhile, and a reader is refused
    while a writer holds it. The last reader to leave removes the file (it alone can take it exclusively)."""
    path = _lock_path(target)
    fd = _lock(path, fcntl.LOCK_SH, what, "Wait for it to finish.")
    try:
        os.pwrite(fd, f"{os.getpid()} {doing}\n".ljust(512).encode(), 0)  # readers overwrite each other whole
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with contextlib.suppress(OSError):
                os.unlink(path)
        except OSError:
            pass  # another reader still holds it and removes it when it leaves
        os.close(fd)
