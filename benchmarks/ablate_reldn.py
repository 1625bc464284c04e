"""RelDN loss ablation (issue "Relation heads I", item 4 b/c): L0 only vs L0 + L1 + L2 + L3, against freq.

On synthetic data in a temporary workspace: prepare, train freq, train reldn twice per feature mode
(same seed and epochs, only `--losses` differs; `--features spatial,visual` compares the pixel-free
variant with the one on a detector's ROI features, the detector trained first for
`--detector-minutes` with one thread, its features cached once per split), then on the test split (PredCls) report overall R@50 / mR@50 and
the recall@K of two hard subsets of GT relations, the cases the Graphical Contrastive Losses target:

- entity instance confusion: the image holds another instance of the object's class (besides
  the subject), so the subject must pick the right one of several same-class objects;
- proximal ambiguity: the subject has another GT relation with the same predicate to a different
  object whose centre lies within `--proximal-distance` x max(W, H) of this object's centre.

Subset recall is R@K restricted to the subset's GT relations (mean over images that hold one),
read from the metric engine's hit table (`sgtool.eval.evaluate`), so matching is the standard one.
Prints ONE JSON object, then a markdown table (unless --json-only).

    nice python benchmarks/ablate_reldn.py --images 2000 --epochs 10
    nice python benchmarks/ablate_reldn.py --images 2000 --epochs 10 --features spatial,visual --detector-minutes 5
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sgtool.data.graphs import SceneGraphs, offsets_from_counts, ordered_pairs
from sgtool.data.predictions import read_predictions
from sgtool.data.prepared import load_prepared, load_prepared_priors
from sgtool.data.synth import prepare_synth
from sgtool.engine.train_detector import train_detector
from sgtool.engine.train import train
from sgtool.eval.run_eval import evaluate_predictions
from sgtool.workspace import Workspace

VARIANTS = {"reldn-L0": "L0", "reldn-L0123": "L0,L1,L2,L3"}


# ---------------------------------------------------------------- subsets of GT relations

def instance_confusion(gt: SceneGraphs) -> np.ndarray:
    """(M,) bool: another box of the image (not the subject, not the object) has the object's class."""
    rels, image = gt.relations, gt.image_of_box()
    c = int(gt.labels.max()) + 1 if len(gt.labels) else 1
    per_image_class = np.bincount(image * c + gt.labels, minlength=gt.num_images * c)
    s, o = rels.pairs[:, 0], rels.pairs[:, 1]
    same = per_image_class[image[o] * c + gt.labels[o]]
    return same - 1 - (gt.labels[s] == gt.labels[o]) >= 1


def proximal_ambiguity(gt: SceneGraphs, distance: float) -> np.ndarray:
    """(M,) bool: the subject has another GT relation with the same predicate to a different object
    whose centre is within distance x max(W, H) of this relation's object centre."""
    rels = gt.relations
    s, o, p = rels.pairs[:, 0], rels.pairs[:, 1], rels.predicates
    order = np.lexsort((p, s))
    key = s[order] * (int(p.max(initial=0)) + 1) + p[order]
    _, counts = np.unique(key, return_counts=True)
    _, a, b = ordered_pairs(offsets_from_counts(counts))  # every two rows of one (subject, predicate) group
    a, b = order[a], order[b]
    centre = (gt.boxes[:, :2] + gt.boxes[:, 2:]) / 2
    scale = np.maximum(gt.widths, gt.heights)[gt.image_of_box()[o[a]]]
    near = (o[a] != o[b]) & (np.linalg.norm(centre[o[a]] - centre[o[b]], axis=1) <= distance * scale)
    flag = np.zeros(len(s), dtype=bool)
    flag[a[near]] = True
    return flag


def subset_recall(gt_rank: np.ndarray, rel_image: np.ndarray, members: np.ndarray, num_images: int, k: int) -> float:
    """R@k over the member relations: per image hits / members, mean over images with a member."""
    total = np.bincount(rel_image[members], minlength=num_images)
    hits = np.bincount(rel_image[members & (gt_rank < k)], minlength=num_images)
    held = total > 0
    return float(np.mean(hits[held] / total[held])) if held.any() else float("nan")


# ---------------------------------------------------------------- the experiment

def evaluate_run(ws: Workspace, run: str, gt: SceneGraphs, priors: dict, vocab, subsets: dict[str, np.ndarray],
                 ks: tuple[int, ...]) -> dict[str, float]:
    predictions = read_predictions(ws.run_dir(run) / "predictions" / "test.h5")
    result = evaluate_predictions(gt, predictions, "predcls", priors, vocab, ks=ks)
    rel_image = np.repeat(np.arange(gt.num_images), gt.relations.counts())
    out = {name: float(result.metrics[name]) for k in ks for name in (f"R@{k}", f"mR@{k}")}
    for subset, members in subsets.items():
        for k in ks:
            out[f"{subset}-R@{k}"] = subset_recall(result.hits.gt_rank, rel_image, members, gt.num_images, k)
    return out


def run(args: argparse.Namespace, root: Path) -> dict:
    ws = Workspace(root)
    started = time.time()
    prepare_synth(ws, images=args.images, seed=args.seed, workers=args.workers)
    prepared = load_prepared(ws, "synth")
    priors = load_prepared_priors(ws, "synth")
    gt = prepared.graphs.split_subset("test")
    subsets = {"instance-confusion": instance_confusion(gt), "proximal-ambiguity": proximal_ambiguity(gt, args.proximal_distance)}
    ks = (20, 50, 100)
    results, seconds, detector = {}, {}, {}
    modes = args.features.split(",")
    if any(mode != "spatial" for mode in modes):
        t0 = time.time()
        det = train_detector(ws, name="detector", time_budget=args.detector_minutes, seed=args.seed, device="cpu",
                             threads=args.threads)
        detector = {"minutes": args.detector_minutes, "seconds": round(time.time() - t0, 1), "test": det.metrics}
    plan = [("freq", None, None)] + [(f"{name}-{mode}" if len(modes) > 1 else name, losses, mode)
                                     for mode in modes for name, losses in VARIANTS.items()]
    for name, losses, mode in plan:
        t0 = time.time()
        if losses is None:
            train(ws, head="freq", name=name, seed=args.seed, device="cpu")
        else:
            train(ws, head="reldn", name=name, losses=losses, epochs=args.epochs, seed=args.seed, device="cpu",
                  overrides=[f"features={mode}"], cache_features=mode != "spatial")
        seconds[name] = round(time.time() - t0, 1)
        results[name] = evaluate_run(ws, name, gt, priors, prepared.vocab, subsets, ks)
    return {
        "benchmark": "ablate_reldn", "dataset": "synth", "task": "predcls", "split": "test",
        "images": args.images, "epochs": args.epochs, "seed": args.seed, "features": modes, "detector": detector,
        "proximal_distance": args.proximal_distance, "threads": args.threads,
        "test_relations": int(len(gt.relations)),
        "subset_relations": {k: int(v.sum()) for k, v in subsets.items()},
        "results": results, "train_seconds": seconds, "total_seconds": round(time.time() - started, 1),
    }


def markdown(report: dict, k: int = 50) -> str:
    cols = [f"R@{k}", f"mR@{k}", f"instance-confusion-R@{k}", f"proximal-ambiguity-R@{k}"]
    lines = ["| model | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for name, metrics in report["results"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * metrics[c]:.2f}" for c in cols) + " |")
    sizes = ", ".join(f"{k}: {v}" for k, v in report["subset_relations"].items())
    return "\n".join(lines) + f"\n\nTest relations: {report['test_relations']} ({sizes})."


def _modes(text: str) -> str:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or any(m not in ("spatial", "visual") for m in modes):
        raise argparse.ArgumentTypeError("use spatial, visual or spatial,visual")
    return ",".join(dict.fromkeys(modes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="synthetic images to render")
    parser.add_argument("--epochs", type=int, default=10, help="reldn training epochs (both variants)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features", default="spatial", type=_modes,
                        help="reldn feature modes, comma-separated from spatial, visual (e.g. spatial,visual)")
    parser.add_argument("--detector-minutes", type=float, default=5.0, help="detector training budget (visual)")
    parser.add_argument("--proximal-distance", type=float, default=0.3, help="fraction of max(W, H)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes")
    parser.add_argument("--workspace", type=Path, default=None, help="keep the workspace here (default: temporary)")
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.workspace is not None:
        report = run(args, args.workspace)
    else:
        with tempfile.TemporaryDirectory(prefix="sgtool-ablate-reldn-") as tmp:
            report = run(args, Path(tmp))
    print(json.dumps(report))
    if not args.json_only:
        print("\n" + markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
