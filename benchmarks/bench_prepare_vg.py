"""Time and peak memory of `sgtool prepare vg` on raw Visual Genome JSON of VG-like size.

Writes objects.json, relationships.json and image_data.json for --images images (default
108,077, as VG 1.4) with VG-like statistics — about 11 boxes and 6 relationships per image,
~100 object names with case, plural, alias and article variants plus names outside the
vocabulary, ~40 predicate spellings — then runs the prepare in a child process and prints ONE
JSON object: input size, generation and prepare seconds, the child's peak RSS (getrusage) and
the prepared counts. Also writes benchmarks/results/bench_prepare_vg.json. Target: the child's peak
RSS stays within 24 GiB (limit_mib).

    python benchmarks/bench_prepare_vg.py [--images N] [--keep DIR] [--seed 0]
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

LIMIT_MIB = 24 * 1024
DEFAULT_IMAGES = 108_077  # as VG 1.4

OBJECT_NAMES = [
    "man", "Man", "men", "woman", "women", "person", "people", "tree", "trees", "Tree", "building", "buildings",
    "window", "windows", "shirt", "t-shirt", "T-Shirt", "tshirt", "sign", "signs", "car", "cars", "automobile",
    "wheel", "wheels", "hand", "hands", "head", "hair", "leg", "legs", "table", "plate", "plates", "pole",
    "light", "lights", "fence", "grass", "sky", "cloud", "clouds", "water", "street", "sidewalk", "door",
    "jeans", "pants", "shorts", "shoe", "shoes", "sneakers", "hat", "cap", "helmet", "jacket", "bag", "chair",
    "chairs", "boy", "girl", "kid", "kids", "child", "children", "dog", "cat", "horse", "elephant", "giraffe",
    "zebra", "bike", "bicycle", "motorcycle", "bus", "train", "truck", "plane", "airplane", "boat", "leaf",
    "leaves", "flower", "flowers", "rock", "rocks", "snow", "ski", "skis", "the man", "a tree", "glass",
    "bottle", "cup", "banana", "pizza", "laptop", "café", "wall", "ground",
]
PREDICATES = [
    "on", "ON", "has", "have", "wearing", "wears", "is wearing", "of", "in", "inside", "near", "next to",
    "behind", "with", "holding", "holds", "above", "sitting on", "under", "riding", "in front of", "standing on",
    "at", "attached to", "over", "for", "looking at", "parked on", "carrying", "eating", "walking on",
    "playing", "covering", "laying on", "along", "hanging from", "mounted on", "and", "says", "is on top of",
]


def _names_distribution(count: int, rng: np.random.Generator) -> np.ndarray:
    weights = 1.0 / np.arange(1, count + 1) ** 0.9
    return rng.permutation(weights / weights.sum())


def _image_records(index: int, rng: np.random.Generator, object_p: np.ndarray, predicate_p: np.ndarray,
                   next_id: int) -> tuple[dict, dict, dict, int]:
    image_id = index + 1
    width, height = int(rng.integers(400, 1025)), int(rng.integers(300, 1025))
    n = max(1, int(rng.poisson(11)))
    names = rng.choice(len(OBJECT_NAMES), size=n, p=object_p)
    x = rng.integers(0, width - 10, size=n)
    y = rng.integers(0, height - 10, size=n)
    w = rng.integers(1, np.maximum(width - x, 2))
    h = rng.integers(1, np.maximum(height - y, 2))
    objects = [{"object_id": next_id + k, "x": int(x[k]), "y": int(y[k]), "w": int(w[k]), "h": int(h[k]),
                "names": [OBJECT_NAMES[names[k]]], "synsets": []} for k in range(n)]
    m = int(rng.poisson(6)) if n > 1 else 0
    subj = rng.integers(0, n, size=m)
    obj = (subj + rng.integers(1, max(n, 2), size=m)) % n
    preds = rng.choice(len(PREDICATES), size=m, p=predicate_p)
    rels = [{"relationship_id": next_id * 2 + k, "predicate": PREDICATES[preds[k]],
             "subject": objects[subj[k]], "object": objects[obj[k]], "synsets": []} for k in range(m)]
    image = {"image_id": image_id, "width": width, "height": height, "url": f"https://example.org/{image_id}.jpg",
             "coco_id": None, "flickr_id": None}
    return image, {"image_id": image_id, "objects": objects}, {"image_id": image_id, "relationships": rels}, next_id + n


def write_raw_vg(folder: Path, images: int, seed: int = 0) -> int:
    """Write the three raw files, streaming; returns their total size in bytes."""
    rng = np.random.default_rng(seed)
    object_p, predicate_p = _names_distribution(len(OBJECT_NAMES), rng), _names_distribution(len(PREDICATES), rng)
    paths = [folder / n for n in ("image_data.json", "objects.json", "relationships.json")]
    handles = [open(p, "w", encoding="utf-8") for p in paths]
    next_id = 1
    try:
        for h in handles:
            h.write("[")
        for index in range(images):
            records = _image_records(index, rng, object_p, predicate_p, next_id)
            next_id = records[3]
            for h, record in zip(handles, records[:3]):
                h.write(("," if index else "") + json.dumps(record, ensure_ascii=False))
        for h in handles:
            h.write("]")
    finally:
        for h in handles:
            h.close()
    return sum(p.stat().st_size for p in paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="Write the input and workspace here and keep them.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_vg_") as tmp:
        root = args.keep or Path(tmp)
        source, workspace = root / "raw", root / "ws"
        source.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        input_bytes = write_raw_vg(source, args.images, args.seed)
        generate_s = time.perf_counter() - start
        cmd = [sys.executable, "-m", "sgtool", "-w", str(workspace), "--quiet", "--json",
               "prepare", "vg", "--split", "vg150", "--source", str(source), "--force"]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        prepare_s = time.perf_counter() - start
        if done.returncode != 0:
            print(json.dumps({"error": done.stderr.strip()[-2000:], "returncode": done.returncode}))
            sys.exit(1)
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        manifest = json.loads((workspace / "data" / "vg150" / "manifest.json").read_text(encoding="utf-8"))
        out = {
            "benchmark": "prepare_vg_raw", "images": args.images, "input_mb": round(input_bytes / 2**20, 1),
            "generate_s": round(generate_s, 2), "prepare_s": round(prepare_s, 2),
            "peak_rss_mib": round(peak_kib / 1024, 1), "limit_mib": LIMIT_MIB,
            "counts": manifest["counts"],
            "dropped": {k: v for k, v in manifest.items() if k.startswith(("objects_dropped", "boxes_", "relations_"))},
        }
        print(json.dumps(out))
        record(out, args.seed)


def record(out: dict, seed: int) -> None:
    """benchmarks/results/bench_prepare_vg.json, the peak RSS checked against LIMIT_MIB."""
    write_result("bench_prepare_vg", budgets={"images": out["images"]}, seeds=[seed],
                 numbers={"run": {k: out[k] for k in ("images", "input_mb", "generate_s", "prepare_s", "peak_rss_mib")},
                          "target": {"peak_rss_mib_at_most": LIMIT_MIB, "met": out["peak_rss_mib"] <= LIMIT_MIB},
                          "prepared_counts": out["counts"], "dropped": out["dropped"]},
                 sources=["sgtool/data/vg.py", "sgtool/data/vg_raw.py", "sgtool/data/normalize.py",
                          "sgtool/data/sgg_h5.py", "sgtool/data/prepared.py", "sgtool/data/recipes.py",
                          "data_recipes/vg150.yaml"],
                 notes="Raw Visual Genome JSON written with VG-like statistics, then `sgtool prepare vg --split vg150` "
                       "in a child process; prepare_s and peak_rss_mib are the child's."
                       + ("" if out["images"] == DEFAULT_IMAGES else
                          f" Run at {out['images']:,} images, below the default {DEFAULT_IMAGES:,}, to finish in a "
                          "few minutes on a shared 2-core machine."))


if __name__ == "__main__":
    main()
