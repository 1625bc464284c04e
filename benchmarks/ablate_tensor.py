"""Table 4 of Dupty, Zhang, Lee (AAAI 2020) for the tensor head: one JSON object on stdout, markdown on stderr.

Phrase classification (GT boxes; subject, predicate and object labels predicted jointly, the head
labelling the objects itself), pixel-free variant (box masks + deltas, no ROI features), on

    synth  the synthetic dataset with its multimodal subset (look-alike actors with distinct roles),
           reported on the whole test split and on the subset's test images alone
    vrd    the VRD annotations (annotation-only), from --vrd (default ../shared/data/vrd)

Rows: rank 1..5 without prior and X_sel; rank 5 + X_sel; rank 5 + X_sel + prior. Columns:
free-k R@50 / R@100 and k=1 R@50 / R@100 (the evaluator's kfree-R@K on the head's k=free output,
and k1-R@K: the best triplet per box pair; micro recall over the split). Every row: --seeds seeds,
mean ± sd; the same triplet-phase optimiser steps in every row (X_sel rows add the X_sel phase,
which trains only the X_sel classifier); model selection on val free-k R@50 (best epoch, then
free k from the grid, both on val).

    nice -n 10 python benchmarks/ablate_tensor.py > ablate_tensor.json
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

from sgtool.data.graphs import SceneGraphs
from sgtool.data.synth import prepare_synth
from sgtool.data.synth_multimodal import multimodal_images
from sgtool.engine.loop import run_loop
from sgtool.engine.objects import unlabelled_gt_objects
from sgtool.eval import evaluate
from sgtool.heads import TrainData, make_config
from sgtool.heads.tensor import TensorHead
from sgtool.priors import compute_priors
from sgtool.workspace import Workspace

ROWS: list[tuple[str, dict]] = [
    *[(f"Rank-{r}", {"rank": r, "sel": False, "prior": False}) for r in range(1, 6)],
    ("w/ X_sel", {"rank": 5, "sel": True, "prior": False}),
    ("w/ X_sel & prior", {"rank": 5, "sel": True, "prior": True}),
]
COLUMNS = ("kfree-R@50", "kfree-R@100", "k1-R@50", "k1-R@100")
PAPER = {  # Table 4 of the paper: free-k R@50, R@100, k=1 R@50, R@100
    "VG150": {"Rank-1": (37.35, 44.49, 32.16, 34.30), "Rank-2": (42.53, 47.52, 33.64, 35.26),
              "Rank-3": (41.89, 48.35, 33.89, 35.31), "Rank-4": (41.74, 48.22, 33.29, 35.14),
              "Rank-5": (42.71, 48.95, 32.21, 35.35), "w/ X_sel": (46.25, 53.05, 34.57, 36.57),
              "w/ X_sel & prior": (47.54, 54.69, 35.60, 37.68)},
    "VRD": {"Rank-1": (39.01, 46.3, 31.12, 33.04), "Rank-2": (41.29, 51.58, 33.43, 35.16),
            "Rank-3": (40.28, 49.5, 32.46, 34.96), "Rank-4": (39.63, 49.64, 32.03, 33.52),
            "Rank-5": (40.47, 50.75, 32.59, 34.06), "w/ X_sel": (42.89, 52.47, 33.51, 35.78),
            "w/ X_sel & prior": (44.02, 53.99, 34.14, 36.07)},
}


def subsample(graphs: SceneGraphs, split: str, limit: int, seed: int) -> SceneGraphs:
    part = graphs.split_subset(split)
    if limit and part.num_images > limit:
        part = part.select(np.sort(np.random.default_rng(seed).choice(part.num_images, limit, replace=False)))
    return part


def phrase_metrics(head: TensorHead, graphs: SceneGraphs, num_predicates: int, ks=(50, 100),
                   per_pair=(1, 10, None)) -> dict[str, float]:
    predictions = head.predict(unlabelled_gt_objects(graphs))
    return evaluate(graphs, predictions, task="sgcls", num_predicates=num_predicates, ks=ks,
                    top_k_per_pair=per_pair).metrics


def run_one(data: TrainData, tests: dict[str, SceneGraphs], shape: tuple[int, int], settings: dict,
            folder: Path) -> dict:
    head = TensorHead(make_config(TensorHead, settings), *shape)
    num_p = shape[1]
    started = time.time()
    run_loop(head, data, folder, lambda: phrase_metrics(head, data.val, num_p, ks=(50,), per_pair=(None,)))
    def measure(ks_per_pair: list[int]) -> dict[int, float]:
        metrics = phrase_metrics(head, data.val, num_p, ks=(50,), per_pair=tuple(ks_per_pair))
        return {k: metrics[f"k{k}-R@50"] for k in ks_per_pair}

    grid = head.select_k(measure)
    out = {"free_k": head.triplets_per_pair(), "val_free_k_grid": grid, "seconds": round(time.time() - started, 1)}
    for name, graphs in tests.items():
        metrics = phrase_metrics(head, graphs, num_p)
        out[name] = {c: metrics[c] for c in COLUMNS}
    return out


def table(dataset: str, rows: dict, test: str, paper: str | None) -> str:
    head = "| row | " + " | ".join(COLUMNS) + (" | paper " + paper + " (same columns)" if paper else "") + " |"
    lines = [head, "| --- " * (len(COLUMNS) + 1 + bool(paper)) + "|"]
    for label, stats in rows.items():
        cells = [f"{100 * stats[test][c]['mean']:.2f} ± {100 * stats[test][c]['sd']:.2f}" for c in COLUMNS]
        ref = [" / ".join(f"{v:.2f}" for v in PAPER[paper][label])] if paper else []
        lines.append(f"| {label} | " + " | ".join(cells + ref) + " |")
    return f"{dataset} ({test})\n" + "\n".join(lines)


def summarise(runs: list[dict], tests: list[str]) -> dict:
    out = {}
    for test in tests:
        out[test] = {c: {"mean": float(np.mean([r[test][c] for r in runs])),
                         "sd": float(np.std([r[test][c] for r in runs], ddof=1)) if len(runs) > 1 else 0.0,
                         "seeds": [r[test][c] for r in runs]} for c in COLUMNS}
    out["free_k"] = [r["free_k"] for r in runs]
    out["seconds"] = [r["seconds"] for r in runs]
    return out


def ablate(name: str, data_for_seed, tests: dict[str, SceneGraphs], shape: tuple[int, int], base: dict,
           seeds: int, tmp: Path) -> dict:
    rows = {}
    for label, settings in ROWS:
        runs = []
        for seed in range(seeds):
            data = data_for_seed(seed)
            runs.append(run_one(data, tests, shape, {**base, **settings}, tmp / f"{name}-{label}-{seed}"))
            print(f"{name} {label} seed {seed}: " + json.dumps({t: runs[-1][t] for t in tests}), file=sys.stderr)
        rows[label] = summarise(runs, list(tests))
    return rows


def synth_part(ws: Workspace, args, tmp: Path) -> dict:
    prepared = prepare_synth(ws, images=args.synth_images, seed=0, workers=1, multimodal=args.multimodal)
    graphs = prepared.graphs
    shape = (prepared.vocab.num_object_classes, prepared.vocab.num_predicate_classes)
    train, val, test = (graphs.split_subset(s) for s in ("train", "val", "test"))
    chosen = multimodal_images(0, graphs.num_images, args.multimodal)[graphs.split == 2]
    tests = {"test": test, "test_multimodal": test.select(np.flatnonzero(chosen))}
    priors = compute_priors(train, *shape)
    rows = ablate("synth", lambda seed: TrainData(train, val, prepared.vocab, priors, "cpu", seed), tests, shape,
                  {**args.base, "epochs": args.synth_epochs}, args.seeds, tmp)
    rank1, rank5 = rows["Rank-1"]["test_multimodal"]["kfree-R@50"], rows["Rank-5"]["test_multimodal"]["kfree-R@50"]
    gap = rank5["mean"] - rank1["mean"]
    claim = {"rank1": rank1["mean"], "rank5": rank5["mean"], "gap": gap, "sd_rank1": rank1["sd"],
             "sd_rank5": rank5["sd"], "holds": bool(gap > 2 * max(rank1["sd"], rank5["sd"]))}
    return {"images": args.synth_images, "multimodal_share": args.multimodal,
            "splits": {"train": train.num_images, "val": val.num_images, "test": test.num_images,
                       "test_multimodal": tests["test_multimodal"].num_images},
            "epochs": args.synth_epochs, "rows": rows, "claim_rank5_beats_rank1_by_2sd_on_multimodal": claim}


def vrd_part(ws: Workspace, args, tmp: Path) -> dict:
    from sgtool.data.vrd import prepare_vrd

    prepared = prepare_vrd(ws, args.vrd, val=args.vrd_val, seed=0)
    graphs = prepared.graphs
    shape = (prepared.vocab.num_object_classes, prepared.vocab.num_predicate_classes)
    train = subsample(graphs, "train", args.vrd_train, 0)
    val, test = subsample(graphs, "val", 0, 0), subsample(graphs, "test", args.vrd_test, 0)
    priors = compute_priors(train, *shape)
    rows = ablate("vrd", lambda seed: TrainData(train, val, prepared.vocab, priors, "cpu", seed), {"test": test},
                  shape, {**args.base, "epochs": args.vrd_epochs}, args.seeds, tmp)
    return {"source": str(args.vrd), "splits": {"train": train.num_images, "val": val.num_images,
                                                "test": test.num_images},
            "epochs": args.vrd_epochs, "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth-images", type=int, default=600)
    parser.add_argument("--multimodal", type=float, default=0.5, help="share of synthetic images in the multimodal subset")
    parser.add_argument("--synth-epochs", type=int, default=4)
    parser.add_argument("--vrd", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "vrd")
    parser.add_argument("--vrd-train", type=int, default=600, help="training images drawn from VRD's train split")
    parser.add_argument("--vrd-val", type=int, default=80, help="VRD training images carved out as val")
    parser.add_argument("--vrd-test", type=int, default=150, help="test images drawn from VRD's test split")
    parser.add_argument("--vrd-epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: on a busy machine more only spin)")
    parser.add_argument("--skip", choices=("synth", "vrd"), default=None)
    args = parser.parse_args(argv)
    args.base = {"features": "spatial", "batch_size": 16, "sel_epochs": 2, "k_grid": "1,2,3,5,10,20"}
    torch.set_num_threads(args.threads)
    started = time.time()
    result = {"benchmark": "ablate_tensor", "task": "phrase classification (sgcls, GT boxes)",
              "features": "spatial (pixel-free: box masks + deltas)", "seeds": args.seeds, "threads": args.threads,
              "head_settings": args.base, "paper": PAPER}
    with tempfile.TemporaryDirectory(prefix="sgtool-ablate-tensor-") as tmp:
        ws = Workspace(Path(tmp) / "ws")
        if args.skip != "synth":
            result["synth"] = synth_part(ws, args, Path(tmp))
        if args.skip != "vrd":
            result["vrd"] = vrd_part(ws, args, Path(tmp))
    result["seconds"] = round(time.time() - started, 1)
    tables = []
    if "synth" in result:
        tables += [table("synth", result["synth"]["rows"], "test", "VG150"),
                   table("synth", result["synth"]["rows"], "test_multimodal", None)]
    if "vrd" in result:
        tables.append(table("VRD", result["vrd"]["rows"], "test", "VRD"))
    result["tables_md"] = tables
    print(json.dumps(result, indent=2))
    print("\n\n".join(tables), file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
