"""The typed run record of every kind: what a run is (kind, dataset, task, seed, options, ...), written as
config.yaml (everything) and run.json (who it is and its status: one schema, RUN_JSON_KEYS, for every kind)
in the run folder. `engine/run.py` (Run) is what writes them."""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sgtool import __version__, atomic
from sgtool.config import read_yaml
from sgtool.flags import flag
from sgtool.ui import SILENT, Reporter

RUN_JSON_KEYS = ("run", "head", "dataset", "task", "seed", "seeds", "status", "error")  # run.json, every kind


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class RunRecord:
    run: str
    head: str  # the run's kind: a relation head's name, "ae" or "detector"
    dataset: str
    task: str
    detector: str | None = None  # the detector run giving objects or ROI features
    seed: int = 0
    features: str | None = None  # a VisualHeadConfig head: the resolved feature mode
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)  # the kind's config, as a dict
    sgtool_version: str = __version__
    created: str = field(default_factory=_now)
    from_run: str | None = None  # `train --from`: whose weights this run scores
    seeds: list[int] | None = None  # ae: every seed trained into the run
    dataset_sha256: str | None = None  # the dataset's fingerprint when the run started (checked on --resume)

    def to_dict(self) -> dict[str, Any]:
        """config.yaml's mapping; optional keys that are unset are left out, as before."""
        data = dataclasses.asdict(self)
        for key in ("features", "from_run", "seeds", "dataset_sha256"):
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def read(cls, folder: Path) -> RunRecord:
        return cls.from_dict(read_yaml(Path(folder) / "config.yaml"))

    def write_config(self, folder: Path) -> None:
        atomic.write_text(Path(folder) / "config.yaml", yaml.safe_dump(self.to_dict(), sort_keys=False))

    def status_payload(self, status: str, error: str | None = None) -> dict[str, Any]:
        """run.json's mapping: RUN_JSON_KEYS for every kind (`seeds`: every seed trained, [seed] for one)."""
        return {"run": self.run, "head": self.head, "dataset": self.dataset, "task": self.task, "seed": self.seed,
                "seeds": self.seeds if self.seeds is not None else [self.seed], "status": status, "error": error}

    def write_status(self, folder: Path, status: str, error: str | None = None) -> None:
        atomic.write_json(Path(folder) / "run.json", self.status_payload(status, error))

    def replace(self, **changes: Any) -> RunRecord:
        return dataclasses.replace(self, **changes)


def read_status(folder: Path) -> str | None:
    """run.json's status, None when it is missing or unreadable."""
    try:
        payload = json.loads((Path(folder) / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return payload.get("status") if isinstance(payload, dict) else None


def record_failure(folder: Path, record: RunRecord, exc: BaseException, resumable: bool) -> None:
    """run.json says why the run stopped, even on a full disk (written in place); a run folder that cannot
    say so and holds no checkpoint to resume from (`resumable`) is removed, so no run is left 'running'."""
    status = "failed" if isinstance(exc, Exception) else "interrupted"
    reason = str(exc) if not isinstance(exc, OSError) else f"{exc.strerror or exc}: {exc.filename or folder}"
    try:
        atomic.write_json_or_overwrite(Path(folder) / "run.json", record.status_payload(status, reason))
    except OSError:
        if not resumable:
            shutil.rmtree(folder, ignore_errors=True)


def flag_name(field_name: str) -> str:
    return flag(field_name)


@dataclass
class TrainRequest:
    """What `sgtool train` was asked: the run-level settings, and the kind's own options by field name."""

    kind: str | None = None
    dataset: str | None = None
    task: str = "predcls"
    name: str | None = None
    detector: str | None = None
    config_path: Path | None = None
    overrides: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # kind options given as flags (None: left out)
    passed: tuple[str, ...] = ()  # the run-level flags the user gave (--task, --detector, ...)
    seed: int = 0
    device: str = "auto"
    cache_features: bool = False
    reporter: Reporter = SILENT

    def given(self) -> dict[str, Any]:
        return {key: value for key, value in self.options.items() if value is not None}

    def given_flags(self) -> list[str]:
        return [*self.passed, *(flag_name(key) for key in self.given())]
