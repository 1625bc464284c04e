"""Measure again what is stale: the canonical command behind every `benchmarks/results/*.json`.

Each result file is written by one benchmark script; PLAN below says which script and which arguments
measure it at the size the docs report (step and epoch budgets, so any machine gives the same numbers).
Commands come from this file, never from a results file. `--list` shows every result as current, stale
or missing; `--stale` re-runs the scripts behind the stale and missing ones, one after another; then
`python benchmarks/render_results.py` renders docs/results.md.

    python benchmarks/remeasure.py --list
    nice -n 10 python benchmarks/remeasure.py --stale [--dry-run]
    nice -n 10 python benchmarks/remeasure.py --only heads_table_spatial,heads_table_visual
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_io  # noqa: E402

VRD = str(results_io.REPO.parent / "shared" / "data" / "vrd")
AE_WS = "/tmp/sgtool-remeasure-ae"  # the ae ablation reads a prepared Simple Shape set from a workspace
# what a script needs in place first: sgtool commands, run once when their output folder is missing
PREPARE: dict[str, tuple[str, list[str]]] = {
    "ablate_ae.py": (f"{AE_WS}/data/shapes", ["-w", AE_WS, "prepare", "shapes", "--images", "6000"]),
    "ae_heat_localisation.py": (f"{AE_WS}/data/shapes", ["-w", AE_WS, "prepare", "shapes", "--images", "6000"]),
}
# script, its arguments, and the results it writes (one run writes all of them)
PLAN: list[tuple[str, list[str], tuple[str, ...]]] = [
    ("heads_table.py", ["--features", "spatial", "--seeds", "3"], ("heads_table_spatial",)),
    ("heads_table.py", ["--features", "visual", "--seeds", "3"], ("heads_table_visual",)),
    ("heads_table.py", ["--vrd", VRD, "--seeds", "3"], ("heads_table_vrd",)),
    ("ablate_tensor.py", ["--synth-images", "300", "--features", "spatial", "--skip", "vrd"],
     ("ablate_tensor_synth_spatial",)),
    ("ablate_tensor.py", ["--synth-images", "300", "--features", "visual", "--skip", "vrd"],
     ("ablate_tensor_synth_visual",)),
    ("ablate_tensor.py", ["--vrd", VRD, "--skip", "synth"], ("ablate_tensor_vrd",)),
    ("ablate_iwsl.py", ["--images", "300", "--detector-epochs", "4"], ("ablate_iwsl",)),
    ("iwsl_inference.py", ["--json"], ("iwsl_inference",)),
    ("ablate_reldn.py", [], ("ablate_reldn",)),
    ("ablate_nodis.py", ["--images", "300", "--detector-epochs", "16", "--epochs", "3", "--batch-size", "16",
                         "--seeds", "3", "--threads", "1"], ("ablate_nodis",)),
    # the ae's Tables 1-3 at the demo's ae scale (batch 16, width 16), so 12 rows x 5 seeds fit about 90 CPU minutes
    ("ablate_ae.py", ["-w", AE_WS, "--budget", "small", "--batch-size", "16", "--width", "16", "--jobs", "2"],
     ("ablate_ae",)),
    ("ablate_ae.py", ["-w", AE_WS, "--choose-heat", "--seeds", "3", "--train-images", "1600", "--jobs", "1"],
     ("ablate_ae_heat",)),
    ("ae_heat_localisation.py", ["-w", AE_WS, "--seeds", "3"], ("ae_heat_localisation",)),
    ("bench_detector.py", ["--images", "300", "--epochs", "2"], ("bench_detector",)),
    # the reference evaluators' sources are fetched into a scratch folder first (see the script's docstring)
    ("eval_versus.py", ["--images", "300", "--community-src", "/tmp/sgtool-ref/community",
                        "--sgbench-src", "/tmp/sgtool-ref/sgbench"], ("bench_eval_versus",)),
    ("bench_view.py", ["--images", "10000"], ("bench_view",)),
    ("device_check.py", ["--json"], ("device_check",)),
    ("bench_demo.py", ["--plan", "quick"], ("bench_demo_quick",)),
    ("bench_demo.py", ["--plan", "full"], ("bench_demo_full",)),
    ("hostile_probes.py", [], ("hostile_probes",)),
    *[(f"{name}.py", [], (name,)) for name in ("bench_priors", "bench_geometry", "bench_draw", "bench_tensor",
                                                "tensor_modes", "bench_prepare", "bench_memory", "bench_prepare_vg")],
]


def state(name: str) -> str:
    path = results_io.RESULTS / f"{name}.json"
    if not path.is_file():
        return "missing"
    record = json.loads(path.read_text())
    try:
        fresh = results_io.source_hash(record.get("sources", [])) == record.get("source_hash")
    except FileNotFoundError:
        fresh = False
    return "current" if fresh else "stale"


def planned_names() -> set[str]:
    return {name for _, _, names in PLAN for name in names}


def chosen(only: set[str] | None, stale: bool) -> list[tuple[str, list[str], tuple[str, ...]]]:
    if only is not None:
        unknown = only - planned_names()
        if unknown:
            raise SystemExit(f"remeasure: no plan for {sorted(unknown)}; see --list")
        return [step for step in PLAN if only & set(step[2])]
    return [step for step in PLAN if not stale or any(state(n) != "current" for n in step[2])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="each planned result and whether it is current")
    parser.add_argument("--stale", action="store_true", help="run the scripts behind stale or missing results")
    parser.add_argument("--only", default=None, help="comma list of result names to measure again")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    if args.list or not (args.stale or args.only):
        unplanned = sorted(p.stem for p in results_io.RESULTS.glob("*.json") if p.stem not in planned_names())
        for script, arguments, names in PLAN:
            for name in names:
                print(f"{state(name):8} {name:30} python benchmarks/{script} {' '.join(arguments)}")
        for name in unplanned:
            print(f"{state(name):8} {name:30} (written by a benchmark outside this plan)")
        return 0
    only = set(args.only.split(",")) if args.only else None
    for script, arguments, names in chosen(only, args.stale):
        if script in PREPARE and not Path(PREPARE[script][0]).exists():
            prepare = [sys.executable, "-m", "sgtool", *PREPARE[script][1]]
            print("remeasure:", " ".join(prepare[1:]), flush=True)
            if not args.dry_run:
                subprocess.run(prepare, cwd=results_io.REPO, check=True)
        command = [sys.executable, str(results_io.REPO / "benchmarks" / script), *arguments]
        print("remeasure:", " ".join(command[1:]), flush=True)
        if not args.dry_run:
            subprocess.run(command, cwd=results_io.REPO, check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
