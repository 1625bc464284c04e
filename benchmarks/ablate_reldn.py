"""RelDN loss ablation on the synthetic confusion sets: the rows of the paper's Tables 1-2.

Rows: L0, L0+L1, L0+L2, L0+L3, L0+L1+L2+L3, each with the visual module as the paper builds it
(subject / object ROI features on a frozen tiny detector, the union box on a trained copy of its
backbone: `predicate_branch=trained`), the same epochs (so the same optimiser steps) and seeds in
every row, each scored after its last epoch (the validation R@K saturates on these small scenes, so
it cannot select an epoch; validation runs once, after the last). A pixel-free control (features=spatial:
boxes, classes and the frequency prior, no pixels) with all four losses must sit at chance, 1/k.

Data: one synthetic dataset (`prepare_synth(confusion=...)`) in which a share of the images are
instance-confusion scenes (a subject, k same-looking candidates at one distance, a line to one) and
a share proximal-ambiguity scenes (two same-class pairs on a square, the pairing a coin flip), the
rest ordinary scenes; the confusion sets are the test images of each kind (`synth_confusion.scene_kinds`).
Per set and row (`sgtool.eval.confusion`): AP of each link predicate over all candidate pairs,
per-subject partner accuracy (and its chance level), wrong-partner (crossed-pair) false positives,
and R@K (the metric engine) for K below the number of candidate pairs of a scene.

Prints ONE JSON object (mean, sd and per-seed values), then a markdown table unless --json-only.

    nice -n 10 python benchmarks/ablate_reldn.py                 # the README table (5 min CPU; 15.5 min wall on a busy machine)
    nice -n 10 python benchmarks/ablate_reldn.py --images 200 --epochs 1 --seeds 0 --detector-minutes 0.3   # smoke
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

from sgtool.data.predictions import read_predictions
from sgtool.data.prepared import load_prepared, load_prepared_priors
from sgtool.data.recipes import load_recipe
from sgtool.data.synth import prepare_synth
from sgtool.data.synth_confusion import scene_kinds
from sgtool.engine.train_detector import train_detector
from sgtool.engine.train import train
from sgtool.eval.confusion import confusion_metrics, select_predictions
from sgtool.eval.run_eval import evaluate_predictions
from sgtool.workspace import Workspace

ROWS = {"L0": "L0", "L0+L1+L2+L3": "L0,L1,L2,L3", "L0+L1": "L0,L1", "L0+L2": "L0,L2", "L0+L3": "L0,L3"}
CONTROL = "pixel-free L0+L1+L2+L3"
LINKS = ("holds", "points at")
KS = (1, 2, 5)
PAPER = {"Table 1 (OpenImages mini val) AP holds": (41.84, 43.09), "Table 1 AP plays": (36.04, 41.04),
         "Table 2 (100 confusion images) R@50": (61.72, 62.65)}


def evaluate_sets(ws: Workspace, run: str, prepared, priors: dict, sets: dict[str, np.ndarray]) -> dict:
    """Per confusion set: confusion metrics and R@K on the run's test predictions."""
    gt_all = prepared.graphs.split_subset("test")
    pred_all = read_predictions(ws.run_dir(run) / "predictions" / "test.h5")
    links = [prepared.vocab.predicates.index(p) + 1 for p in LINKS]
    out = {}
    for name, image_ids in sets.items():
        gt = gt_all.select(np.isin(gt_all.image_ids, image_ids))
        pred = select_predictions(pred_all, np.flatnonzero(np.isin(pred_all.image_ids, image_ids)))
        assert np.array_equal(gt.image_ids, pred.image_ids)
        metrics = confusion_metrics(gt, pred, links)
        for e, p in zip(links, LINKS):
            metrics[f"AP {p}"] = metrics.pop(f"AP-{e}")
        recall = evaluate_predictions(gt, pred, "predcls", priors, prepared.vocab, ks=KS).metrics
        metrics.update({f"R@{k}": float(recall[f"R@{k}"]) for k in KS})
        metrics["candidate_pairs_per_image"] = float(np.mean(np.diff(pred.pair_offsets)))
        out[name] = metrics
    return out


def summarise(per_seed: list[dict]) -> dict:
    """mean / sd / values of every metric of every set over the seeds."""
    out: dict = {}
    for name in per_seed[0]:
        out[name] = {}
        for key in per_seed[0][name]:
            values = np.array([s[name][key] for s in per_seed], dtype=np.float64)
            out[name][key] = {"mean": float(np.nanmean(values)), "sd": float(np.nanstd(values, ddof=1)) if len(values) > 1
                              else 0.0, "values": values.tolist()}
    return out


def run(args: argparse.Namespace, root: Path) -> dict:
    ws = Workspace(root)
    started = time.time()
    confusion = {"instance_fraction": args.instance_fraction, "proximal_fraction": args.proximal_fraction}
    reuse = args.reuse and (root / "data" / "synth").is_dir()
    if not reuse:
        prepare_synth(ws, images=args.images, seed=args.data_seed, workers=args.workers, confusion=confusion)
    prepared = load_prepared(ws, "synth")
    priors = load_prepared_priors(ws, "synth")
    kinds = scene_kinds({**load_recipe("synth")["confusion"], **confusion}, args.data_seed, args.images)
    test_ids = prepared.graphs.split_subset("test").image_ids
    sets = {kind: test_ids[kinds[test_ids - 1] == kind] for kind in ("instance", "proximal")}
    t0 = time.time()
    if reuse and (ws.run_dir("detector") / "metrics.json").is_file():
        detector = {"minutes": args.detector_minutes, "reused": True,
                    "test": json.loads((ws.run_dir("detector") / "metrics.json").read_text())}
    else:
        det = train_detector(ws, name="detector", time_budget=args.detector_minutes, seed=args.data_seed,
                             device="cpu", threads=args.threads)
        detector = {"minutes": args.detector_minutes, "seconds": round(time.time() - t0, 1), "test": det.metrics}
    # validation after the last epoch only, so model.pt is the last epoch and every row is scored after the same
    # optimiser steps (the validation R@20-100 saturates near 95% on these small scenes and cannot select)
    common = [f"val_metric=R@{args.val_k}", f"val_every={args.epochs}", f"batch_size={args.batch_size}"]
    plan = [(row, losses, ["features=visual", "predicate_branch=trained"]) for row, losses in ROWS.items()]
    plan.insert(2, (CONTROL, "L0,L1,L2,L3", ["features=spatial"]))  # the headline rows first (--out keeps partials)
    results, seconds, first = {}, {}, True
    for row, losses, settings in plan:
        per_seed, times = [], []
        for seed in args.seeds:
            t0 = time.time()
            name = f"{row.replace('+', '-').replace(' ', '-')}-s{seed}"
            done = reuse and (ws.run_dir(name) / "metrics.json").is_file()  # a finished run of an earlier call
            if not done:
                train(ws, head="reldn", name=name, losses=losses, epochs=args.epochs, seed=seed, device="cpu",
                      overrides=settings + common, cache_features=first and "features=visual" in settings)
            first = first and "features=visual" not in settings
            times.append(round(time.time() - t0, 1))
            per_seed.append(evaluate_sets(ws, name, prepared, priors, sets))
        results[row], seconds[row] = summarise(per_seed), times
        if args.out is not None:  # what is done so far, in case the run is cut short
            args.out.write_text(json.dumps(_report(args, confusion, detector, sets, results, seconds, started)))
    return _report(args, confusion, detector, sets, results, seconds, started)


def _report(args: argparse.Namespace, confusion: dict, detector: dict, sets: dict, results: dict, seconds: dict,
            started: float) -> dict:
    return {
        "benchmark": "ablate_reldn", "dataset": "synth with confusion scenes", "task": "predcls", "split": "test",
        "images": args.images, "data_seed": args.data_seed, "confusion": confusion, "epochs": args.epochs,
        "batch_size": args.batch_size, "seeds": args.seeds, "val_metric": f"R@{args.val_k}", "threads": args.threads,
        "detector": detector, "set_images": {k: int(len(v)) for k, v in sets.items()},
        "results": results, "train_seconds": seconds, "total_seconds": round(time.time() - started, 1),
        "paper": {k: {"L0": a, "L0+L1+L2+L3": b} for k, (a, b) in PAPER.items()},
    }


def markdown(report: dict) -> str:
    cols = ["AP holds", "AP points at", "partner_accuracy", "wrong_partner_fp", "R@1", "R@2"]
    lines = []
    for kind in ("instance", "proximal"):
        lines += [f"\n{kind} set ({report['set_images'][kind]} test images), mean ± sd over seeds {report['seeds']}:",
                  "| row | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
        for row, sets in report["results"].items():
            m = sets[kind]
            lines.append(f"| {row} | " + " | ".join(f"{100 * m[c]['mean']:.1f} ± {100 * m[c]['sd']:.1f}" for c in cols)
                         + " |")
        chance = report["results"]["L0"][kind]["partner_chance"]["mean"]
        lines.append(f"\nchance partner accuracy: {100 * chance:.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=800, help="synthetic images to render")
    parser.add_argument("--instance-fraction", type=float, default=0.45)
    parser.add_argument("--proximal-fraction", type=float, default=0.45)
    parser.add_argument("--epochs", type=int, default=2, help="reldn epochs, every row")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=[0, 1, 2])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--val-k", type=int, default=20, help="the validation R@K logged after the last epoch (20, 50 or 100)")
    parser.add_argument("--detector-minutes", type=float, default=1.5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a busy machine extra threads only spin against each other)")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes")
    parser.add_argument("--workspace", type=Path, default=None, help="keep the workspace here (default: temporary)")
    parser.add_argument("--reuse", action="store_true",
                        help="with --workspace: keep its dataset, detector and finished runs (continue a cut run)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here (after every row)")
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.workspace is not None:
        report = run(args, args.workspace)
    else:
        with tempfile.TemporaryDirectory(prefix="sgtool-ablate-reldn-") as tmp:
            report = run(args, Path(tmp))
    print(json.dumps(report))
    if args.out is not None:
        args.out.write_text(json.dumps(report))
    if not args.json_only:
        print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
