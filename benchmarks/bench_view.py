"""`sgtool view` at scale: build time and site size for a synthetic annotation-only split of up to
10,000 test images (VG150-sized vocabulary: 150 objects, 50 predicates), with predictions fabricated
directly in the predictions h5 format (PredCls: every ordered pair of the GT boxes, random scores).

Measures, per (images, K): the build's wall seconds (evaluation + writing), the site's bytes, the
gallery index's and the largest shard's bytes; then bytes per (image x K) to show the growth is
linear. Where headless Chromium and Selenium are present, also the seconds from opening the gallery
from disk to its first page of cards.
    python benchmarks/bench_view.py [--images 10000] [--runs 2]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from results_io import write_result

from sgtool.data.graphs import SPLIT_CODES, RelationSet, SceneGraphs, offsets_from_counts, ordered_pairs
from sgtool.data.predictions import Predictions, vocabulary_fingerprint, write_predictions
from sgtool.data.prepared import PreparedDataset, Staged, save_prepared
from sgtool.data.sgg_h5 import Vocabulary
from sgtool.workspace import Workspace

OBJECTS, PREDICATES, TRAIN_IMAGES = 150, 50, 1000


def synthetic_graphs(test_images: int, seed: int = 0) -> SceneGraphs:
    """4-12 boxes and 1-6 relations (distinct ordered pairs) per image; TRAIN_IMAGES train images first."""
    rng = np.random.default_rng(seed)
    n = TRAIN_IMAGES + test_images
    counts = rng.integers(4, 13, n)
    offsets = offsets_from_counts(counts)
    xy = rng.uniform(0, 500, (offsets[-1], 2))
    boxes = np.concatenate([xy, xy + rng.uniform(20, 120, (offsets[-1], 2))], 1).round().astype(np.float32)
    image, subj, obj = ordered_pairs(offsets)
    pick = rng.random(len(image)) < (rng.integers(1, 7, n) / (counts * (counts - 1)))[image]
    rel_counts = np.bincount(image[pick], minlength=n)
    relations = RelationSet(np.stack([subj[pick], obj[pick]], 1), rng.integers(1, PREDICATES + 1, int(pick.sum())),
                            offsets_from_counts(rel_counts))
    split = np.r_[np.full(TRAIN_IMAGES, SPLIT_CODES["train"]), np.full(test_images, SPLIT_CODES["test"])].astype(np.int8)
    return SceneGraphs(np.arange(n, dtype=np.int64), np.full(n, 640), np.full(n, 640), split, offsets, boxes,
                       rng.integers(1, OBJECTS + 1, offsets[-1]), relations, None, [])


def vocabulary() -> Vocabulary:
    return Vocabulary([f"object{i}" for i in range(OBJECTS)], [f"predicate{i}" for i in range(PREDICATES)])


def fabricate_run(ws: Workspace, prepared: PreparedDataset, name: str, seed: int) -> None:
    """A run folder holding config.yaml and PredCls predictions for the test split, as `sgtool train` leaves it."""
    gt = prepared.graphs.split_subset("test")
    rng = np.random.default_rng(seed)
    image, subj, obj = ordered_pairs(gt.box_offsets)
    scores = rng.random((len(image), PREDICATES + 1), dtype=np.float32)
    truth = np.isin((subj * len(gt.labels) + obj), gt.relations.pairs[:, 0] * len(gt.labels) + gt.relations.pairs[:, 1])
    scores[truth, 1:] *= 1.5  # some signal, so the recalls differ from chance
    predictions = Predictions(gt.image_ids, gt.box_offsets, gt.boxes, gt.labels, np.ones(len(gt.labels), np.float32),
                              offsets_from_counts(np.bincount(image, minlength=gt.num_images)), np.stack([subj, obj], 1),
                              scores, {"dataset": prepared.name, "split": "test", "task": "predcls", "head": "fabricated",
                                       "vocabulary_fingerprint": vocabulary_fingerprint(prepared.vocab)})
    folder = ws.run_dir(name)
    (folder / "predictions").mkdir(parents=True)
    write_predictions(folder / "predictions" / "test.h5", predictions)
    (folder / "config.yaml").write_text(yaml.safe_dump({"head": "freq", "dataset": prepared.name, "task": "predcls"}))


def first_page_seconds(site: Path) -> float | None:
    """Seconds from opening gallery.html from disk to its first page of cards (None without Chromium)."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None
    if not (chromium and driver_path):
        return None
    options = webdriver.ChromeOptions()
    profile = tempfile.mkdtemp()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.binary_location = chromium
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        driver.get("about:blank")
        start = time.perf_counter()
        driver.get((site / "gallery.html").as_uri())
        while not driver.find_elements("css selector", "#cards .card"):
            time.sleep(0.01)
        return round(time.perf_counter() - start, 3)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def measure(images: int, runs: int, tops: list[int], folder: Path) -> list[dict]:
    from sgtool.viz.view import build_view
    from sgtool.viz.view.site import folder_bytes

    ws = Workspace(folder / f"ws-{images}")
    graphs = synthetic_graphs(images)
    prepared = save_prepared(ws, "bench", "synthetic", {"images": images},
                             lambda staging: Staged(graphs, vocabulary(), {}))
    names = [f"run{r}" for r in range(runs)]
    for r, name in enumerate(names):
        fabricate_run(ws, prepared, name, seed=r)
    rows = []
    for top in tops:
        outcome = build_view(ws, runs=names, out=folder / f"site-{images}-{top}", top=top)
        shards = sorted((outcome.path / "data" / "shards").glob("*.js"))
        rows.append({"images": images, "runs": runs, "top": top, "build_seconds": outcome.seconds,
                     "site_bytes": outcome.bytes, "bytes_per_image": round(outcome.bytes / images),
                     "data_bytes": folder_bytes(outcome.path / "data"), "thumbs_bytes": folder_bytes(outcome.path / "thumbs"),
                     "index_bytes": (outcome.path / "data" / "index.js").stat().st_size,
                     "largest_shard_bytes": max(p.stat().st_size for p in shards), "shards": len(shards),
                     "gallery_first_page_seconds": first_page_seconds(outcome.path)})
        print(rows[-1], flush=True)
        shutil.rmtree(outcome.path)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    sizes = sorted({max(args.images // 4, 1), args.images})
    with tempfile.TemporaryDirectory() as scratch:
        rows = [row for size in sizes
                for row in measure(size, args.runs, [20, 50] if size == args.images else [20], Path(scratch))]
    small, large = rows[0], next(r for r in rows if r["images"] == args.images and r["top"] == 20)
    write_result("bench_view", budgets={"images": sizes, "runs": args.runs, "top": [20, 50]}, seeds=[0],
                 numbers={"rows": rows, "data_bytes_ratio_4x_images": round(large["data_bytes"] / small["data_bytes"], 3),
                          "thumbs_bytes_ratio_4x_images": round(large["thumbs_bytes"] / small["thumbs_bytes"], 3)},
                 sources=["sgtool/viz/view", "sgtool/eval/confusion.py"],
                 notes="annotation-only synthetic split (blank-canvas thumbnails), predictions fabricated in the h5 "
                       "format; build_seconds includes evaluating every run; first-page time from a headless Chromium")


if __name__ == "__main__":
    main()
