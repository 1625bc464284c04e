"""GPU check, ready to run on a machine with CUDA: every kind (the detector, each relation head, the ae
auto-encoder) trains a few optimiser steps on the GPU (bfloat16 autocast where the kind has AMP), predicts
and is evaluated on the test split; the loss of the first step on CUDA is compared with the same step on
CPU; with two or more GPUs a 2-process DDP run over NCCL trains the tensor head. Without CUDA the same
steps run on CPU and the JSON says so ("device": "cpu", "cuda": false; no loss comparison, no DDP).

Prints one JSON object (per kind: steps/s, peak GPU memory, loss agreement, test metrics, ok) and writes
it to benchmarks/results/device_check.json.

    python benchmarks/device_check.py --json                                # 64 images, 5 steps per kind
    python benchmarks/device_check.py --json --images 24 --size 64 --shapes 40 --steps 2 --light  # the test's
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from results_io import write_result
from sgtool.data.shapes import prepare_shapes
from sgtool.data.synth import prepare_synth
from sgtool.engine.hooks import read_log
from sgtool.engine.kinds import TrainRequest, get_kind
from sgtool.engine.predict import predict_images
from sgtool.workspace import Workspace

HEADS = ("freq", "tensor", "reldn", "nodis", "iwsl")
HEAD_SETTINGS = {"tensor": ["sel_epochs=0"], "iwsl": ["samples=2"]}  # one phase; few samples
# --light (the CPU test's size): a narrow nodis state and few detections paired per predicted image
LIGHT_SETTINGS = {"tensor": ["max_boxes=8"], "reldn": ["max_boxes=8"], "nodis": ["max_boxes=8", "hidden=16"]}
# bfloat16 keeps 8 bits of mantissa (0.4 % per rounding); a loss after a network's few hundred operations
# stays within a few %. The detector samples its RPN / ROI anchors from the device's generator, so its first
# loss differs by that sampling too.
AMP_RTOL = {"detector": 0.15}
DEFAULT_RTOL = 0.05
SOURCES = ["sgtool/engine", "sgtool/heads", "sgtool/detect", "sgtool/autoencoder", "sgtool/distributed.py",
           "sgtool/features", "sgtool/eval"]


def log_numbers(ws: Workspace, run: str) -> dict:
    """Steps, training seconds (the epochs' own timing, no validation) and the first epoch's mean loss."""
    epochs = [r for r in read_log(ws.run_dir(run) / "log.jsonl") if r.get("event") == "epoch"]
    if not epochs:
        return {"steps": 0, "train_seconds": 0.0, "first_loss": None}
    seconds = sum(float(r["seconds"]) for r in epochs)
    return {"steps": int(epochs[-1]["step"]), "train_seconds": round(seconds, 3),
            "first_loss": float(epochs[0]["train"]["loss"])}


def train(ws: Workspace, kind: str, device: str, name: str, dataset: str, options: dict, overrides: list[str],
          seed: int) -> tuple[object, dict]:
    """One run of `kind` on `device`; the run's result and its numbers (steps/s, peak GPU memory)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    visual = kind in HEADS and kind != "freq"
    request = TrainRequest(kind=kind, dataset=dataset, name=name, options=options, overrides=overrides, seed=seed,
                           device=device, cache_features=visual)
    trained = get_kind(kind).train(ws, request)
    numbers = log_numbers(ws, trained.run)
    numbers["steps_per_s"] = round(numbers["steps"] / numbers["train_seconds"], 3) if numbers["train_seconds"] else None
    numbers["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None
    return trained, numbers


def budget(kind: str, steps: int, train_images: int, one_step: bool, light: bool = False) -> tuple[dict, list[str]]:
    """The options and --set overrides that train `kind` for `steps` optimiser steps (or exactly one step)."""
    if kind == "detector":  # its budget is epochs: one epoch, or one batch of every training image
        return {"epochs": 1, "batch_size": train_images if one_step else 8}, []
    if kind == "ae":
        return {"batch_size": 8}, [f"steps={1 if one_step else steps}", "log_every=1"]
    if kind == "freq":
        return {}, []
    return {"epochs": 1 if one_step else steps, "batch_size": 8}, [f"max_steps={1 if one_step else steps}",
                                                                    "amp=true", *HEAD_SETTINGS.get(kind, []),
                                                                    *(LIGHT_SETTINGS.get(kind, []) if light else [])]


def loss_agreement(ws: Workspace, kind: str, dataset: str, train_images: int, seed: int) -> dict:
    """The first step's loss on CPU and on CUDA (same seed, same batch) and whether they agree within AMP's tolerance."""
    options, overrides = budget(kind, 1, train_images, one_step=True)
    losses = {device: train(ws, kind, device, f"first-step-{kind}-{device}", dataset, options, overrides, seed)[1]
              ["first_loss"] for device in ("cpu", "cuda")}
    rtol = AMP_RTOL.get(kind, DEFAULT_RTOL)
    difference = abs(losses["cuda"] - losses["cpu"]) / max(abs(losses["cpu"]), 1e-12)
    return {**losses, "relative_difference": round(difference, 5), "rtol": rtol, "agree": difference <= rtol}


def evaluate(ws: Workspace, kind: str, trained: object, images: list[Path], device: str, out: Path) -> dict:
    """Test metrics of the run, and for a relation head `sgtool predict` on two images on the device."""
    if kind == "detector":
        return {"metrics": {k: trained.metrics[k] for k in ("mAP", "mAP@.5")}}
    outcome = get_kind(kind).evaluate(ws, trained.run, "test", (), {})
    if kind == "ae":
        return {"metrics": {name: outcome.summary[name]["mean"] for name in ("precision", "recall", "f1")}}
    graphs = predict_images(ws, images, run=trained.run, out=out / kind, device=device)
    return {"metrics": {k: outcome.result.metrics[k] for k in ("R@50", "mR@50")},
            "predicted_graphs": sum(1 for g in graphs if g.graph.is_file())}


def check_kind(ws: Workspace, kind: str, device: str, args: argparse.Namespace, train_images: int,
               out: Path) -> dict:
    """Loss agreement first (on CUDA), then the few-step run on the device, its prediction and evaluation."""
    dataset = "check-shapes" if kind == "ae" else "check"
    started = time.perf_counter()
    agreement = None
    if device == "cuda" and kind != "freq":  # freq takes no optimiser step
        agreement = loss_agreement(ws, kind, dataset, train_images, args.seed)
    options, overrides = budget(kind, args.steps, train_images, one_step=False, light=args.light)
    trained, numbers = train(ws, kind, device, f"check-{kind}", dataset, options, overrides, args.seed)
    images = sorted((ws.root / "data" / "check" / "images").glob("*.png"))[:2]
    scored = evaluate(ws, kind, trained, images, device, out)
    amp = device == "cuda" and kind != "ae"  # the auto-encoder has no AMP path: float32 on the GPU
    loss_ok = numbers["first_loss"] is None or math.isfinite(numbers["first_loss"])
    ok = loss_ok and (kind == "freq" or numbers["steps"] > 0) and (agreement is None or agreement["agree"])
    return {"device": device, "amp": amp, **numbers, "loss_agreement": agreement, **scored, "ok": bool(ok),
            "seconds": round(time.perf_counter() - started, 1)}


def check_ddp(ws: Workspace, args: argparse.Namespace) -> dict:
    """2 processes over NCCL (torchrun) training the tensor head, when this machine has two GPUs."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus < 2:
        return {"ran": False, "reason": f"{gpus} GPU(s): DDP over NCCL needs 2"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "sgtool",
               "-w", str(ws.root), "-q", "--device", "cuda", "train", "--head", "tensor", "--dataset", "check",
               "--epochs", str(args.steps), "--batch-size", "4", "--set", f"max_steps={args.steps}",
               "--set", "sel_epochs=0", "--set", "amp=true", "--name", "check-ddp-nccl"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    numbers = log_numbers(ws, "check-ddp-nccl") if done.returncode == 0 else {}
    return {"ran": True, "backend": "nccl", "returncode": done.returncode, **numbers,
            "ok": done.returncode == 0 and numbers.get("steps", 0) > 0, "stderr_tail": done.stderr[-1500:]}


def run_checks(args: argparse.Namespace, root: Path) -> dict:
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    ws = Workspace(root / "ws")
    prepared = prepare_synth(ws, images=args.images, size=args.size, seed=args.seed, name="check", force=True)
    prepare_shapes(ws, images=args.shapes, seed=args.seed, name="check-shapes", workers=1, force=True)
    train_images = int(prepared.manifest["counts"]["train"]["images"])
    kinds = {}
    for kind in ("detector", *HEADS, "ae"):  # the detector first: the heads take its ROI features
        try:
            kinds[kind] = check_kind(ws, kind, device, args, train_images, root / "predicted")
        except Exception as exc:  # noqa: BLE001 - a check reports every kind, the failing ones with their error
            kinds[kind] = {"device": device, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    ddp = check_ddp(ws, args)
    return {"device": device, "cuda": cuda, "gpus": torch.cuda.device_count() if cuda else 0,
            "gpu": torch.cuda.get_device_name(0) if cuda else None, "torch": torch.__version__,
            "sizes": {"images": args.images, "size": args.size, "shapes": args.shapes, "steps": args.steps,
                      "light": args.light}, "kinds": kinds, "ddp": ddp,
            "ok": all(k["ok"] for k in kinds.values()) and ddp.get("ok", True)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--images", type=int, default=64, help="synthetic images (detector and relation heads)")
    parser.add_argument("--size", type=int, default=128, help="side of the synthetic images, pixels")
    parser.add_argument("--shapes", type=int, default=80, help="Simple Shape drawings (ae)")
    parser.add_argument("--steps", type=int, default=5, help="optimiser steps per kind (the detector: one epoch)")
    parser.add_argument("--light", action="store_true",
                        help="nodis at state width 16 and 8 detections paired per predicted image (the CPU test)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sgtool-device-check-") as tmp:
        result = run_checks(args, Path(tmp))
    write_result("device_check", budgets={"steps_per_kind": args.steps, "detector_epochs": 1}, seeds=[args.seed],
                 numbers=result, sources=SOURCES, argv=["benchmarks/device_check.py", *(argv or sys.argv[1:])])
    if args.json:
        print(json.dumps(result))
    else:
        for kind, row in result["kinds"].items():
            print(f"{kind:9s} {row['device']} ok={row['ok']} steps/s={row.get('steps_per_s')} "
                  f"loss agreement={row.get('loss_agreement')} {row.get('error', '')}")
    return result


if __name__ == "__main__":
    main()
