"""Every relation head in PredCls, SGCls and SGDet: `benchmarks/results/heads_table_<features>.json`.

Self-contained: renders the synthetic dataset into a scratch workspace, trains the tiny detector for
--detector-epochs epochs, then trains each head in PredCls (on ground-truth pairs, as every task trains
it) for --epochs epochs and scores the same weights in SGCls and SGDet (`train --from RUN --task T`:
the detector's classified GT boxes, the GT boxes alone for a head that labels objects from boxes, the
detections), each run scored by `sgtool eval` on the test split. --features picks the heads' input:
`spatial` (pixel-free: box masks and deltas) and/or `visual` (the detector's ROI features). Budgets are
epochs of a fixed dataset, so the same seeds give the same numbers on any machine.

With --vrd PATH (the original VRD JSON, annotation-only, no images) it writes `heads_table_vrd.json`
instead: PredCls only, pixel-free, on VRD's whole train (less --vrd-val) and test splits.

    nice python benchmarks/heads_table.py --features spatial,visual --seeds 3
    nice python benchmarks/heads_table.py --vrd ../shared/data/vrd --seeds 3
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from sgtool.data.synth import prepare_synth
from sgtool.engine.train import retask, train
from sgtool.engine.train_detector import train_detector
from sgtool.eval.run_eval import run_eval
from sgtool.heads import TrainableHead, get_head
from sgtool.workspace import Workspace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import summarise, write_result  # noqa: E402

HEADS = ("freq", "tensor", "reldn", "nodis", "iwsl")
TASKS = ("predcls", "sgcls", "sgdet")
METRICS = ("R@20", "R@50", "R@100", "mR@20", "mR@50", "mR@100")
SOURCES = ["sgtool/heads", "sgtool/engine/train.py", "sgtool/engine/loop.py", "sgtool/engine/objects.py",
           "sgtool/engine/visual.py", "sgtool/engine/train_detector.py", "sgtool/detect", "sgtool/features",
           "sgtool/eval", "sgtool/priors.py", "sgtool/data/synth.py"]


def head_metrics(ws: Workspace, head: str, dataset: str, tasks: tuple[str, ...], epochs: int, seed: int,
                 detector: str | None, features: str) -> dict[str, dict[str, float]]:
    """Train in PredCls, score the same weights in the other tasks (`train --from`), `eval` each on test."""
    head_cls = get_head(head)
    options: dict = {"epochs": epochs} if issubclass(head_cls, TrainableHead) else {}
    if "features" in head_cls.Config.__dataclass_fields__:
        options["overrides"] = [f"features={features}"]
    trained = train(ws, head=head, dataset=dataset, task="predcls", seed=seed, device="cpu", detector=detector,
                    **options)
    out = {}
    for task in tasks:
        run = trained.run if task == "predcls" else retask(ws, trained.run, task=task, detector=detector).run
        metrics = run_eval(ws, run=run, split="test").result.metrics
        out[task] = {m: metrics[m] for m in METRICS}
    return out


def table(per_seed: list[dict], heads: list[str], tasks: tuple[str, ...]) -> dict:
    """{task: {head: {metric: summary over seeds}}}: one rendered table per task."""
    return {task: {head: {m: summarise([run[head][task][m] for run in per_seed]) for m in METRICS}
                   for head in heads} for task in tasks}


def synth_tables(args, heads: list[str], tmp: Path) -> None:
    ws = Workspace(tmp / "ws")
    prepare_synth(ws, images=args.images, seed=0, name="heads", workers=1)
    detector = train_detector(ws, dataset="heads", epochs=args.detector_epochs, batch_size=8, seed=0,
                              device="cpu").run
    for features in args.features.split(","):
        per_seed = [{head: head_metrics(ws, head, "heads", TASKS, args.epochs, seed, detector, features)
                     for head in heads} for seed in range(args.seeds)]
        budgets = {"images": args.images, "detector_epochs": args.detector_epochs, "head_epochs": args.epochs,
                   "features": features, "threads": args.threads}
        write_result(f"heads_table_{features}", budgets=budgets, seeds=list(range(args.seeds)),
                     numbers=table(per_seed, heads, TASKS), sources=SOURCES,
                     notes="Each head trained in PredCls; SGCls and SGDet score the same weights (train --from). "
                           "Test split; one detector (seed 0) for every head and seed.")


def vrd_table(args, heads: list[str], tmp: Path) -> None:
    from sgtool.data.vrd import prepare_vrd

    ws = Workspace(tmp / "ws")
    prepared = prepare_vrd(ws, args.vrd, name="vrd", val=args.vrd_val, seed=0)
    dataset = prepared.name
    per_seed = [{head: head_metrics(ws, head, dataset, ("predcls",), args.epochs, seed, None, "spatial")
                 for head in heads} for seed in range(args.seeds)]
    budgets = {"vrd_val_images": args.vrd_val, "head_epochs": args.epochs, "features": "spatial",
               "threads": args.threads}
    write_result("heads_table_vrd", budgets=budgets, seeds=list(range(args.seeds)),
                 numbers=table(per_seed, heads, ("predcls",)),
                 sources=[s for s in SOURCES if "detect" not in s and "synth" not in s] + ["sgtool/data/vrd.py"],
                 notes="VRD annotations only (no images): PredCls, pixel-free, test split.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="synthetic images (train/val/test split inside)")
    parser.add_argument("--detector-epochs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2, help="head training epochs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--heads", default=",".join(HEADS))
    parser.add_argument("--features", default="spatial,visual", help="comma list of spatial | visual")
    parser.add_argument("--vrd", type=Path, default=None, help="VRD JSON folder: write heads_table_vrd instead")
    parser.add_argument("--vrd-val", type=int, default=200, help="VRD training images carved out as val")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    heads = args.heads.split(",")
    with tempfile.TemporaryDirectory(prefix="sgtool-heads-table-") as tmp:
        if args.vrd is not None:
            vrd_table(args, heads, Path(tmp))
        else:
            synth_tables(args, heads, Path(tmp))


if __name__ == "__main__":
    main()
