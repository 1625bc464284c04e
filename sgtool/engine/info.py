"""`sgtool info`: what the workspace holds, from its manifests.

Each dataset gets a status: its annotation files are present and sgg.h5 opens ("ok"), or what is
wrong; `--verify` also compares every file, images included, with the manifest's sha256.
"""
from __future__ import annotations

from pathlib import Path

from sgtool import ui
from sgtool.data.prepared import MANIFEST, PreparedDataset, sha256_of
from sgtool.data.sgg_h5 import read_json
from sgtool.errors import SgtoolError
from sgtool.flags import flag
from sgtool.workspace import Workspace


def _read_optional(path) -> dict:
    try:
        payload = read_json(path)
        return payload if isinstance(payload, dict) else {}
    except SgtoolError:
        return {}


def dataset_status(folder: Path, manifest: dict, verify: bool = False) -> str:
    """"ok", or one phrase saying what is missing, unreadable or changed since `prepare`."""
    import h5py

    recorded = manifest.get("sha256")
    if not isinstance(recorded, dict) or not recorded:
        return "no manifest checksums"
    names = sorted(recorded) if verify else sorted(n for n in recorded if not n.startswith("images/"))
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        return f"missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
    if (folder / "sgg.h5").is_file():
        try:
            with h5py.File(folder / "sgg.h5", "r") as handle:
                list(handle.keys())
        except (OSError, ValueError):
            return "sgg.h5 unreadable"
    changed = [n for n in names if verify and sha256_of(folder / n) != recorded[n]]
    if changed:
        return f"changed {changed[0]}" + (f" and {len(changed) - 1} more" if len(changed) > 1 else "")
    return "ok"


def workspace_summary(ws: Workspace, verify: bool = False) -> dict:
    datasets = {}
    for name in ws.datasets():
        try:
            manifest, status = read_json(ws.data_dir(name) / MANIFEST), None
        except SgtoolError:
            manifest, status = {}, f"{MANIFEST} is corrupt: prepare it again with {flag('force')}"
        manifest = manifest if isinstance(manifest, dict) else {}
        datasets[name] = {
            "recipe": manifest.get("recipe"),
            "counts": manifest.get("counts", {}),
            "has_images": manifest.get("has_images"),
            "priors": ws.priors_path(name).exists(),
            "status": status or dataset_status(ws.data_dir(name), manifest, verify),
        }
    runs = {}
    for name in ws.runs():
        config = _read_optional(ws.run_dir(name) / "run.json")
        runs[name] = {"head": config.get("head"), "dataset": config.get("dataset"), "task": config.get("task"),
                      "metrics": _read_optional(ws.run_dir(name) / "metrics.json")}
    return {"workspace": str(ws.root), "datasets": datasets, "runs": runs, "reports": ws.reports()}


def show_workspace(ws: Workspace, as_json: bool = False, verify: bool = False) -> dict:
    ws.refuse_file_root()
    summary = workspace_summary(ws, verify)
    if as_json:
        ui.print_json(summary)
        return summary
    rows = []
    for name, data in summary["datasets"].items():
        for split, counts in data["counts"].items():
            rows.append((name, data["recipe"], split, counts.get("images"), counts.get("objects"), counts.get("relations"),
                         data["status"]))
        if not data["counts"]:  # a manifest without counts still gets its row and status
            rows.append((name, data["recipe"], "-", None, None, None, data["status"]))
    if rows:
        ui.print_table(f"Datasets in {ws.root}", ("dataset", "recipe", "split", "images", "objects", "relations", "status"),
                       rows)
    else:
        ui.out.print(f"No datasets in {ws.root}; run `sgtool prepare synth` to make one.")
    if summary["runs"]:
        ui.print_table("Runs", ("run", "head", "dataset", "task"),
                       ((n, r["head"], r["dataset"], r["task"]) for n, r in summary["runs"].items()))
    if summary["reports"]:
        ui.print_table("Reports", ("run",), ((n,) for n in summary["reports"]))
    return summary


def show_prepared(prepared: PreparedDataset, as_json: bool = False) -> None:
    counts = prepared.manifest["counts"]
    if as_json:
        ui.print_json({"dataset": prepared.name, "path": str(prepared.path), "counts": counts})
        return
    ui.print_table(f"Prepared '{prepared.name}' in {prepared.path}", ("split", "images", "objects", "relations"),
                   ((split, c["images"], c["objects"], c["relations"]) for split, c in counts.items()))
