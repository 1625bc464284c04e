"""The one way a benchmark records what it measured: `benchmarks/results/<name>.json`.

Every file holds the command, the commit, the date, the machine, the step budgets, the seeds, the numbers
and a sha256 over the sgtool source files the benchmark exercised (`sources`: paths relative to the
repository root, files or folders). `benchmarks/render_results.py` (issue 30) renders docs/results.md from
these files alone and marks a result stale when `source_hash(sources)` no longer matches.

Statistics live here too, so no table is summarised by hand: `summarise` (mean and *sample* sd) and
`welch` (Welch's t-test; a difference is "resolved" when p < 0.05).

    from results_io import summarise, welch, write_result
    write_result("ablate_iwsl", budgets={"train_steps": 600}, seeds=[0, 1, 2], numbers=table,
                 sources=["sgtool/heads/iwsl.py", "sgtool/eval"])
"""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Sequence

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def source_files(sources: Iterable[str]) -> list[Path]:
    """The .py / .yaml files under each source path (a file or a folder), sorted, de-duplicated."""
    found: set[Path] = set()
    for entry in sources:
        path = REPO / entry
        if path.is_dir():
            found.update(p for p in path.rglob("*") if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts)
        elif path.is_file():
            found.add(path)
        else:
            raise FileNotFoundError(f"results_io: source {entry!r} does not exist under {REPO}")
    return sorted(found)


def source_hash(sources: Iterable[str]) -> str:
    """sha256 over (relative path, content) of every source file: changes when the exercised code does."""
    digest = hashlib.sha256()
    for path in source_files(sources):
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    """Where it ran: enough to tell two machines apart, nothing that changes from run to run."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def summarise(values: Sequence[float]) -> dict:
    """Mean and sample sd (n - 1; 0 for one value) of a list, with the values kept."""
    values = [float(v) for v in values]
    if not values:
        return {"n": 0, "mean": None, "sd": None, "values": []}
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"n": len(values), "mean": statistics.fmean(values), "sd": sd, "values": values}


def welch(a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> dict:
    """Welch's two-sided t-test of mean(a) vs mean(b); `resolved` is p < alpha (never with < 2 values a side)."""
    from scipy import stats
    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) < 2 or len(b) < 2:
        return {"t": None, "p": None, "resolved": False, "diff": None}
    diff = statistics.fmean(a) - statistics.fmean(b)
    if statistics.stdev(a) == 0 and statistics.stdev(b) == 0:
        p = 1.0 if diff == 0 else 0.0
        return {"t": None if diff == 0 else math.copysign(math.inf, diff), "p": p, "resolved": p < alpha, "diff": diff}
    t, p = stats.ttest_ind(a, b, equal_var=False)
    return {"t": float(t), "p": float(p), "resolved": bool(p < alpha), "diff": diff}


def write_result(name: str, *, budgets: dict, seeds: Sequence[int], numbers: dict, sources: Iterable[str],
                 paper: dict | None = None, notes: str = "", argv: Sequence[str] | None = None) -> Path:
    """Write benchmarks/results/<name>.json atomically and return its path."""
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"results_io: {name!r} is not a plain result name")
    sources = sorted(set(sources))
    record = {
        "name": name,
        "command": " ".join(["python"] + list(sys.argv if argv is None else argv)),
        "commit": _commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "budgets": budgets,
        "seeds": list(seeds),
        "sources": sources,
        "source_hash": source_hash(sources),
        "numbers": numbers,
        "paper": paper or {},
        "notes": notes,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"{name}.json"
    temporary = target.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    temporary.replace(target)
    return target
