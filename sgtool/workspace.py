"""Where every artifact lives, and which dataset and run are the latest.

<ws>/data/<dataset>/        prepared dataset (sgg.h5, dicts.json, image_data.json, images/, manifest.json)
<ws>/priors/<dataset>.npz   frequency priors
<ws>/runs/<run>/            one training run
<ws>/reports/<run>/         evaluation report
<ws>/workspace.json         which dataset and run are the latest
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sgtool import atomic
from sgtool.errors import SgtoolError
from sgtool.flags import flag

DEFAULT_WORKSPACE = "sgtool-workspace"
STATE_FILE = "workspace.json"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
MAX_NAME = 128  # with the writer's temp suffix, a file name stays under the 255 bytes of common filesystems


def check_name(name: object, kind: str = "name") -> str:
    """A user-given name that becomes a path (dataset, run, report, recipe) must be a plain name:
    letters, digits, '.', '_', '+', '-', starting with a letter or digit (so never '', '.', '..' or
    a path), at most MAX_NAME characters. Returns it; anything else is one sentence (SgtoolError)."""
    if isinstance(name, str) and len(name) <= MAX_NAME and NAME.fullmatch(name):
        return name
    shown = repr(name) if not isinstance(name, str) or len(name) <= 40 else repr(name[:40]) + "..."
    raise SgtoolError(f"{shown} is not a usable {kind}: a {kind} is 1 to {MAX_NAME} letters, digits, '.', '_', '+' "
                      "or '-', starting with a letter or digit, and never a path.",
                      f"Pass a plain {kind}, e.g. 'mine-1'.")


def check_names(**names: str | None) -> None:
    """check_name on every given option (None = left out): `check_names(dataset=..., run=...)`."""
    for option, name in names.items():
        if name is not None:
            kind = "dataset name" if option == "dataset" else "run name"
            try:
                check_name(name, kind)
            except SgtoolError as exc:
                raise SgtoolError(f"{flag(option)}: {exc.message}", exc.hint) from None


class Workspace:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    # ------------------------------------------------------------ paths
    # every name is checked here, so no name can reach outside the workspace
    def data_dir(self, dataset: str) -> Path:
        return self.root / "data" / check_name(dataset, "dataset name")

    def priors_path(self, dataset: str) -> Path:
        return self.root / "priors" / f"{check_name(dataset, 'dataset name')}.npz"

    def run_dir(self, run: str) -> Path:
        return self.root / "runs" / check_name(run, "run name")

    def report_dir(self, run: str) -> Path:
        return self.root / "reports" / check_name(run, "run name")

    # ------------------------------------------------------------ listing
    def _children(self, folder: str, marker: str | None = None) -> list[str]:
        base = self.root / folder
        if not base.is_dir():
            return []
        atomic.restore_moved_aside(base)  # a write killed between its two renames
        return sorted(p.name for p in base.iterdir()  # hidden and hand-made folders with other names are not ours
                      if p.is_dir() and NAME.fullmatch(p.name) and len(p.name) <= MAX_NAME
                      and (marker is None or (p / marker).exists()))

    def datasets(self) -> list[str]:
        return self._children("data", "manifest.json")

    def runs(self) -> list[str]:
        return self._children("runs")

    def reports(self) -> list[str]:
        return self._children("reports")

    # ------------------------------------------------------------ latest
    def _state(self, strict: bool = True) -> dict:
        """workspace.json ({} when absent); a corrupt one is named in one sentence (strict) or ignored."""
        self.refuse_file_root()
        path = self.root / STATE_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            state = exc
        if isinstance(state, dict) or not strict:
            return state if isinstance(state, dict) else {}
        raise SgtoolError(f"{path}, which remembers the latest dataset and run, is corrupt, so the latest is unknown.",
                          f"Name it ({flag('dataset')} / {flag('run')}, see `sgtool info`), or delete {STATE_FILE}: the next "
                          "prepare or train writes it again.")

    def set_latest(self, kind: str, name: str) -> None:
        state = self._state(strict=False)  # a corrupt file is replaced
        state[f"latest_{kind}"] = name
        atomic.write_json(self.root / STATE_FILE, state)

    def latest_dataset(self) -> str:
        name = self._state().get("latest_dataset")
        if name in self.datasets():
            return name
        known = self.datasets()
        if not known:
            raise SgtoolError(f"The workspace {self.root} holds no prepared dataset.",
                              "Run `sgtool prepare synth` (or vg, vrd, custom) first.")
        return known[-1]

    def latest_run(self) -> str:
        name = self._state().get("latest_run")
        if name in self.runs():
            return name
        if self.runs():
            raise SgtoolError(f"The workspace {self.root} records no latest run among its runs ({', '.join(self.runs())}).",
                              f"Pass {flag('run')} NAME.")
        raise SgtoolError(f"The workspace {self.root} holds no training run.", f"Run `sgtool train` first, or pass {flag('run')}.")

    def require_dataset(self, name: str) -> Path:
        check_name(name, "dataset name")
        if name not in self.datasets():
            known = ", ".join(self.datasets()) or "none"
            raise SgtoolError(f"No prepared dataset named '{name}' in {self.root} (known: {known}).",
                              "Prepare it with `sgtool prepare`, or pick one from `sgtool info`.")
        return self.data_dir(name)

    def require_run(self, name: str) -> Path:
        check_name(name, "run name")
        if name not in self.runs():
            known = ", ".join(self.runs()) or "none"
            raise SgtoolError(f"No run named '{name}' in {self.root} (known: {known}).", "See `sgtool info` for the runs.")
        return self.run_dir(name)

    def new_run_name(self, base: str) -> str:
        """base, or base-2, base-3, ... : never an existing run's name."""
        taken = set(self.runs())
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        return name

    def claim_run_name(self, name: str | None, default: str, hint: str | None = None) -> str:
        """The run's name: `name` when it is usable and free, else a fresh variant of `default`."""
        if name is None:
            return self.new_run_name(default)
        check_name(name, "run name")
        if name in self.runs():
            raise SgtoolError(f"A run named '{name}' already exists in {self.root}.",
                              hint or f"Pick another {flag('name')}, or leave it out to get {self.new_run_name(name)}.")
        return name

    # ------------------------------------------------------------ one writer
    @contextlib.contextmanager
    def training(self, run: str, dataset: str | None = None) -> Iterator[None]:
        """While the block runs, this process is the one writer of `run` (a second `train`, `train --resume`
        of it is refused in one sentence) and `dataset` cannot be replaced (`prepare --force` is refused).
        Under torchrun only rank 0 (RANK, set before the process group starts) writes, so only it locks."""
        if os.environ.get("RANK", "0") not in ("", "0"):
            yield
            return
        self.check_writable()  # a read-only workspace is named before its lock files are
        with atomic.new_folder_kept_on_success(self.run_dir(run).parent), \
                atomic.exclusive(self.run_dir(run), f"the run '{run}'", "Wait for it to finish; a run has one writer."):
            if dataset is None:
                yield
                return
            with atomic.shared(self.data_dir(dataset), f"the dataset '{dataset}'", f"training run '{run}' on"):
                yield

    # ------------------------------------------------------------ checks
    def refuse_file_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise SgtoolError(f"The workspace {self.root} is a file, not a folder.",
                              f"Pass a folder with {flag('workspace')} or SGTOOL_WORKSPACE.")

    MANAGED = ("data", "priors", "runs", "reports")

    def refuse_managed(self, path: Path, option: str) -> None:
        """An output the user names (e.g. predict --out) may not land in a folder sgtool manages here."""
        try:
            resolved, root = Path(path).resolve(), self.root.resolve()
        except (OSError, RuntimeError):  # a symlink loop: the caller names it
            return
        for folder in self.MANAGED:
            if resolved == root / folder or (root / folder) in resolved.parents:
                raise SgtoolError(f"{option} {path} is inside the workspace's {folder}/ folder, which sgtool manages.",
                                  "Pass a folder outside data/, priors/, runs/ and reports/ of the workspace.")

    def check_writable(self) -> None:
        """Fail with a clear message before any work if the workspace cannot be written."""
        self.refuse_file_root()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise SgtoolError(f"The workspace {self.root} is not writable ({exc.strerror or exc}).",
                              f"Pass a writable folder with {flag('workspace')} or SGTOOL_WORKSPACE.") from exc
