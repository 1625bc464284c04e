"""Table 4 of Dupty, Zhang, Lee (AAAI 2020) for the tensor head: `benchmarks/results/ablate_tensor_<part>.json`.

Phrase classification (GT boxes; subject, predicate and object labels predicted jointly, the head
labelling the objects itself), on

    synth  the synthetic dataset with its multimodal subset (look-alike actors with distinct roles),
           reported on the whole test split and on the subset's test images alone; once pixel-free
           (box masks + deltas) and once with pixels (ROI features of a detector the script trains for
           --detector-epochs epochs on the same images, cached once): ablate_tensor_synth_spatial / _visual
    vrd    the VRD annotations (annotation-only, so pixel-free), from --vrd (default ../shared/data/vrd):
           ablate_tensor_vrd

Rows: rank 1..5 without prior and X_sel; rank 5 + X_sel; rank 5 + X_sel + prior. Columns:
free-k R@50 / R@100 and k=1 R@50 / R@100 (the evaluator's kfree-R@K on the head's k=free output,
and k1-R@K: the best triplet per box pair; micro recall over the split). Every row: --seeds seeds,
mean ± sample sd; the same triplet-phase optimiser steps in every row (X_sel rows add the X_sel phase,
which trains only the X_sel classifier); one checkpoint rule for every row: the epoch with the best val
free-k R@50, then free k picked from the grid on val. Welch's t-test resolves the paper's three orderings.

    nice -n 10 python benchmarks/ablate_tensor.py
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from sgtool.data.graphs import SceneGraphs
from sgtool.data.synth import prepare_synth
from sgtool.data.synth_multimodal import multimodal_images
from sgtool.engine.loop import run_loop
from sgtool.engine.objects import unlabelled_gt_objects
from sgtool.engine.train_detector import train_detector
from sgtool.engine.visual import visual_source
from sgtool.eval import evaluate
from sgtool.heads import TrainData, make_config
from sgtool.heads.tensor import TensorHead
from sgtool.priors import compute_priors
from sgtool.workspace import Workspace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import summarise, welch, write_result  # noqa: E402

ROWS: list[tuple[str, dict]] = [
    *[(f"Rank-{r}", {"rank": r, "sel": False, "prior": False}) for r in range(1, 6)],
    ("w/ X_sel", {"rank": 5, "sel": True, "prior": False}),
    ("w/ X_sel & prior", {"rank": 5, "sel": True, "prior": True}),
]
SOURCES = ["sgtool/heads/tensor.py", "sgtool/heads/__init__.py", "sgtool/engine/loop.py", "sgtool/engine/objects.py",
           "sgtool/eval", "sgtool/priors.py", "sgtool/data/synth.py", "sgtool/data/synth_multimodal.py"]
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


def paper_rows(dataset: str) -> dict:
    return {row: dict(zip(COLUMNS, (v / 100 for v in values))) for row, values in PAPER[dataset].items()}


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
            folder: Path, visual) -> dict:
    head = TensorHead(make_config(TensorHead, settings), *shape)
    if visual is not None:
        head.attach_visual(visual)
    num_p = shape[1]
    run_loop(head, data, folder, lambda: phrase_metrics(head, data.val, num_p, ks=(50,), per_pair=(None,)))

    def measure(ks_per_pair: list[int]) -> dict[int, float]:
        metrics = phrase_metrics(head, data.val, num_p, ks=(50,), per_pair=tuple(ks_per_pair))
        return {k: metrics[f"k{k}-R@50"] for k in ks_per_pair}

    head.select_k(measure)
    out = {"free_k": head.triplets_per_pair()}
    for name, graphs in tests.items():
        metrics = phrase_metrics(head, graphs, num_p)
        out[name] = {c: metrics[c] for c in COLUMNS}
    return out


def ablate(name: str, data_for_seed, tests: dict[str, SceneGraphs], shape: tuple[int, int], base: dict,
           seeds: int, tmp: Path, visual=None) -> dict:
    """{test split: {row: {column: summary over seeds}}} plus each row's free k per seed."""
    runs: dict[str, list[dict]] = {}
    for label, settings in ROWS:
        runs[label] = []
        for seed in range(seeds):
            folder = tmp / f"{name}-{label.replace('/', '').replace(' ', '')}-{seed}"
            runs[label].append(run_one(data_for_seed(seed), tests, shape, {**base, **settings}, folder, visual))
            print(f"{name} {label} seed {seed}: " + json.dumps({t: runs[label][-1][t] for t in tests}), file=sys.stderr)
    numbers = {test: {label: {c: summarise([r[test][c] for r in rs]) for c in COLUMNS} for label, rs in runs.items()}
               for test in tests}
    numbers["free_k"] = {label: {"seeds": [r["free_k"] for r in rs]} for label, rs in runs.items()}
    return numbers


ORDERINGS = (("Rank-5", "Rank-1"), ("w/ X_sel", "Rank-5"), ("w/ X_sel & prior", "w/ X_sel"))


def orderings(numbers: dict, test: str) -> dict:
    """The paper's orderings on free-k R@50: Welch's t-test of the better row's seeds against the other's."""
    rows = numbers[test]
    return {f"{a} > {b}": welch(rows[a]["kfree-R@50"]["values"], rows[b]["kfree-R@50"]["values"])
            for a, b in ORDERINGS}


def synth_visual(ws: Workspace, prepared, args):
    """ROI features of a detector trained here on the same images, pooled and cached once."""
    detector = train_detector(ws, dataset=prepared.name, epochs=args.detector_epochs, batch_size=8, seed=0,
                              device="cpu")
    config = make_config(TensorHead, {"features": "visual"})
    source, _ = visual_source(ws, prepared, TensorHead, config, detector.run, cache=True)
    return source, detector.metrics


def synth_part(ws: Workspace, args, tmp: Path, features: str) -> None:
    prepared = prepare_synth(ws, images=args.synth_images, seed=0, workers=1, multimodal=args.multimodal)
    graphs = prepared.graphs
    shape = (prepared.vocab.num_object_classes, prepared.vocab.num_predicate_classes)
    train, val, test = (graphs.split_subset(s) for s in ("train", "val", "test"))
    chosen = multimodal_images(0, graphs.num_images, args.multimodal)[graphs.split == 2]
    tests = {"test": test, "test_multimodal": test.select(np.flatnonzero(chosen))}
    visual, detector_metrics = synth_visual(ws, prepared, args) if features == "visual" else (None, None)
    priors = compute_priors(train, *shape)
    numbers = ablate(f"synth-{features}", lambda seed: TrainData(train, val, prepared.vocab, priors, "cpu", seed),
                     tests, shape, {**args.base, "features": features, "epochs": args.synth_epochs}, args.seeds,
                     tmp, visual)
    numbers["orderings"] = {test: orderings(numbers, test) for test in tests}
    budgets = {"images": args.synth_images, "multimodal_share": args.multimodal, "epochs": args.synth_epochs,
               "features": features, "head_settings": args.base, "threads": args.threads,
               "splits": {"train": train.num_images, "val": val.num_images, "test": test.num_images,
                          "test_multimodal": tests["test_multimodal"].num_images}}
    if features == "visual":
        budgets.update(detector_epochs=args.detector_epochs, detector_test_map50=detector_metrics.get("mAP@.5"))
    write_result(f"ablate_tensor_synth_{features}", budgets=budgets, seeds=list(range(args.seeds)), numbers=numbers,
                 sources=SOURCES + (["sgtool/detect", "sgtool/features", "sgtool/engine/visual.py"]
                                    if features == "visual" else []),
                 paper={"VG150": paper_rows("VG150")},
                 notes="Phrase classification on GT boxes; the paper's rows are VG150's.")


def vrd_part(ws: Workspace, args, tmp: Path) -> None:
    from sgtool.data.vrd import prepare_vrd

    prepared = prepare_vrd(ws, args.vrd, val=args.vrd_val, seed=0)
    graphs = prepared.graphs
    shape = (prepared.vocab.num_object_classes, prepared.vocab.num_predicate_classes)
    train = subsample(graphs, "train", args.vrd_train, 0)
    val, test = subsample(graphs, "val", 0, 0), subsample(graphs, "test", args.vrd_test, 0)
    priors = compute_priors(train, *shape)
    numbers = ablate("vrd", lambda seed: TrainData(train, val, prepared.vocab, priors, "cpu", seed), {"test": test},
                     shape, {**args.base, "features": "spatial", "epochs": args.vrd_epochs}, args.seeds, tmp)
    numbers["orderings"] = {"test": orderings(numbers, "test")}
    budgets = {"epochs": args.vrd_epochs, "features": "spatial", "head_settings": args.base, "threads": args.threads,
               "splits": {"train": train.num_images, "val": val.num_images, "test": test.num_images}}
    write_result("ablate_tensor_vrd", budgets=budgets, seeds=list(range(args.seeds)), numbers=numbers,
                 sources=SOURCES + ["sgtool/data/vrd.py"], paper={"VRD": paper_rows("VRD")},
                 notes="Phrase classification on GT boxes, VRD annotations only (no images: pixel-free).")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth-images", type=int, default=600)
    parser.add_argument("--multimodal", type=float, default=0.5, help="share of synthetic images in the multimodal subset")
    parser.add_argument("--synth-epochs", type=int, default=4)
    parser.add_argument("--features", default="spatial,visual", help="synth variants: spatial and/or visual")
    parser.add_argument("--detector-epochs", type=int, default=8, help="the visual variant's detector")
    parser.add_argument("--vrd", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "vrd")
    parser.add_argument("--vrd-train", type=int, default=600, help="training images drawn from VRD's train split")
    parser.add_argument("--vrd-val", type=int, default=80, help="VRD training images carved out as val")
    parser.add_argument("--vrd-test", type=int, default=150, help="test images drawn from VRD's test split")
    parser.add_argument("--vrd-epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: on a busy machine more only spin)")
    parser.add_argument("--skip", choices=("synth", "vrd"), default=None)
    args = parser.parse_args(argv)
    args.base = {"batch_size": 16, "sel_epochs": 2, "k_grid": "1,2,3,5,10,20"}
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="sgtool-ablate-tensor-") as tmp:
        ws = Workspace(Path(tmp) / "ws")
        if args.skip != "synth":
            for features in args.features.split(","):
                synth_part(ws, args, Path(tmp), features)
        if args.skip != "vrd":
            vrd_part(ws, args, Path(tmp))


if __name__ == "__main__":
    main()
