"""`sgtool draw` of a huge graph.json (the issue's probe: 2,000 objects, 620,000 relations, about 51 MB).

Runs `sgtool draw` in a subprocess and prints one JSON object: file size, wall seconds, peak memory
of the process (ru_maxrss of the child), and what was drawn / left out; also writes
benchmarks/results/bench_draw.json. Target (docs/training.md): the draw succeeds and keeps to its caps,
at most 100 relations (the default --top) and 300 objects drawn.
    python benchmarks/bench_draw.py [--objects 2000] [--relations 620000]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_io import write_result

MAX_RELATIONS_DRAWN, MAX_OBJECTS_DRAWN = 100, 300


def write_graph(path: Path, objects: int, relations: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 900, size=(objects, 2)).round(1)
    pairs = rng.integers(0, objects, size=(relations, 2))
    scores = rng.random(relations).round(6)
    graph = {"image": None, "width": 1000, "height": 1000,
             "objects": [{"id": i, "label": f"thing{i % 150}", "box": [x, y, x + 50, y + 40], "score": 0.5}
                         for i, (x, y) in enumerate(xy.tolist())],
             "relations": [{"subject": s, "predicate": "near", "object": o, "score": p}
                           for (s, o), p in zip(pairs.tolist(), scores.tolist())]}
    path.write_text(json.dumps(graph))
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--relations", type=int, default=620_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        graph = Path(folder) / "huge.graph.json"
        size = write_graph(graph, args.objects, args.relations)
        start = time.time()
        done = subprocess.run([sys.executable, "-m", "sgtool", "--json", "draw", str(graph), "--out",
                               str(Path(folder) / "huge.png")], capture_output=True, text=True)
        seconds = time.time() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    drawn = json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr.strip()}
    out = {"objects": args.objects, "relations": args.relations, "graph_mb": round(size / 2**20, 1),
           "exit_code": done.returncode, "seconds": round(seconds, 2), "peak_rss_mb": round(peak / 2**20),
           "drawn": {k: drawn.get(k) for k in ("objects", "relations", "relations_left_out",
                                               "objects_left_out", "error") if k in drawn}}
    print(json.dumps(out))
    record(out)


def record(out: dict) -> None:
    """benchmarks/results/bench_draw.json, with the caps checked."""
    drawn = out["drawn"]
    met = (out["exit_code"] == 0 and drawn.get("relations", MAX_RELATIONS_DRAWN + 1) <= MAX_RELATIONS_DRAWN
           and drawn.get("objects", MAX_OBJECTS_DRAWN + 1) <= MAX_OBJECTS_DRAWN)
    write_result("bench_draw", budgets={"objects": out["objects"], "relations": out["relations"]}, seeds=[0],
                 numbers={"input": {"objects": out["objects"], "relations": out["relations"],
                                    "graph_mb": out["graph_mb"]},
                          "run": {"exit_code": out["exit_code"], "seconds": out["seconds"],
                                  "peak_rss_mb": out["peak_rss_mb"]},
                          "drawn": drawn,
                          "target": {"max_relations_drawn": MAX_RELATIONS_DRAWN,
                                     "max_objects_drawn": MAX_OBJECTS_DRAWN, "met": met}},
                 sources=["sgtool/viz/draw.py", "sgtool/viz/graph_json.py"],
                 notes="A synthetic graph.json of random boxes and relations drawn by `sgtool draw` in a child "
                       "process; seconds and peak RSS are the child's (seconds include Python start-up).")


if __name__ == "__main__":
    main()
