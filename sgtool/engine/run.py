"""`Run`: one run folder's whole life, the same for every kind (relation heads, the auto-encoder, the detector).

    name = Run.claim(ws, name, default)  # a free name (a name, never a path)
    run = Run.new(ws.run_dir(name), record)  # the folder made: the atomic claim of the name
    with run.failures(resumable):        # config.yaml, run.json "running"; on an error "failed" / "interrupted"
        ...train into run.folder...
    run.complete()                       # config.yaml (final) and run.json "complete"

    run = Run.resume(ws, name, kind=..., dataset=..., given=...)   # refuses what cannot be resumed
    run.check_dataset(prepared); run.clean_leftovers()

A one-pass run (a statistical head, `train --from`) is built in a staging folder: `run.complete(staging)`
writes its record there before the folder is renamed into place. Only this module writes run.json; its
keys are one schema for every kind (`RunRecord.write_status`).
"""
from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from sgtool import atomic
from sgtool.data.prepared import PreparedDataset, check_same_dataset
from sgtool.engine.record import RunRecord, read_status, record_failure
from sgtool.errors import SgtoolError
from sgtool.flags import flag
from sgtool.workspace import Workspace


class Run:
    """A run folder and its record: config.yaml (everything) and run.json (who it is, its status)."""

    def __init__(self, folder: Path, record: RunRecord, fresh: bool = False) -> None:
        self.folder, self.record = Path(folder), record
        self.fresh = fresh  # made by this process: config.yaml is written when training starts

    @staticmethod
    def claim(ws: Workspace, name: str | None, default: str, hint: str | None = None) -> str:
        """A free run name: `name` (checked to be a name, never a path) or a fresh variant of `default`."""
        return ws.claim_run_name(name, default, hint)

    @classmethod
    def new(cls, folder: Path, record: RunRecord) -> Run:
        """Make the run folder (ws.run_dir(name)): the atomic claim of the name (a concurrent run of the same
        name fails here)."""
        run = cls(folder, record, fresh=True)
        run.folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            run.folder.mkdir()
        except FileExistsError:
            raise SgtoolError(f"A run named '{record.run}' was just made by another sgtool process.",
                              f"Pick another {flag('name')}.") from None
        return run

    @classmethod
    def resume(cls, ws: Workspace, name: str, kind: str | None = None, dataset: str | None = None,
               given: list[str] | tuple[str, ...] = ()) -> Run:
        """An unfinished run to continue as it was: refused in one sentence when it is complete, of another
        kind or dataset than asked, or when options that would change it are given."""
        if given:
            raise SgtoolError(f"{flag('resume')} continues a run as it was; it does not take {given[0]}.",
                              f"Leave that option out, or start a new run without {flag('resume')}.")
        folder = ws.require_run(name)
        record = RunRecord.read(folder)
        if read_status(folder) == "complete":
            raise SgtoolError(f"The run '{name}' is complete; there is nothing to resume.", "Train a new run instead.")
        if kind is not None and kind != record.head:
            raise SgtoolError(f"The run '{name}' trains the {record.head} head, not {kind}.", f"Leave out {flag('head')}.")
        if dataset is not None and dataset != record.dataset:
            raise SgtoolError(f"The run '{name}' trains on '{record.dataset}', not '{dataset}'.",
                              f"Leave out {flag('dataset')}.")
        return cls(folder, record)

    def require_checkpoint(self, path: Path) -> None:
        if not path.is_file():
            raise SgtoolError(f"The run '{self.record.run}' stopped before its first checkpoint, so it cannot be "
                              "resumed.", "Train a new run instead.")

    def check_dataset(self, prepared: PreparedDataset) -> None:
        """The run resumes only on the dataset it started on (its fingerprint)."""
        check_same_dataset(prepared, self.record.dataset_sha256, self.record.run)

    def clean_leftovers(self) -> None:
        """Remove the temp files of writes that a kill interrupted (the files they replace are whole)."""
        atomic.remove_leftovers(self.folder)

    @contextlib.contextmanager
    def failures(self, resumable: Callable[[], bool], keep_unresumable: bool = True) -> Iterator[None]:
        """config.yaml (a new run's) and run.json "running" while the block trains; an error or interrupt is
        recorded in run.json ("failed" / "interrupted" and why) and raised again; a folder that cannot record it
        and holds nothing to resume from (`resumable()`) is removed. `keep_unresumable=False`: a new run that
        fails before it can be resumed is removed (the detector finds bad images only while training, and bad
        input leaves the workspace as it was)."""
        try:
            if self.fresh:
                self.record.write_config(self.folder)
            self.record.write_status(self.folder, "running")
            yield
        except BaseException as exc:
            if self.fresh and not keep_unresumable and not resumable():
                shutil.rmtree(self.folder, ignore_errors=True)
            else:
                record_failure(self.folder, self.record, exc, resumable())
            raise

    def complete(self, folder: Path | None = None) -> None:
        """The final config.yaml and run.json "complete", in the run folder or the staging folder given."""
        self.record.write_config(folder or self.folder)
        self.record.write_status(folder or self.folder, "complete")
