"""The detector's side of `train-detector` (the stage itself, which runs the one training loop, is
`engine/train_detector.py`): the checks made before anything is written, a new run's state, the COCO
evaluation on the test split, and the result shown.

<ws>/runs/<run>/ config.yaml, run.json, checkpoints/last.pt (every epoch, for --resume), checkpoints/model.pt (final),
                 log.jsonl, coco/gt_test.json, coco/dt_test.json, metrics.json
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sgtool import distributed
from sgtool.config import MAX_INT
from sgtool.data.prepared import PreparedDataset, load_prepared
from sgtool.detect.api import Detector
from sgtool.detect.config import DetectorConfig
from sgtool.coco import detections_to_coco, evaluate_coco, gt_to_coco, write_coco
from sgtool.detect.data import SplitImages, require_images
from sgtool.detect.model import DEFAULT_SIZES, DetectorSpec, build_model, load_weights, read_state_dict
from sgtool.errors import SgtoolError
from sgtool.flags import flag
from sgtool.ui import SILENT, Reporter
from sgtool.workspace import Workspace



@dataclass
class DetectorResult:
    run: str
    path: Path
    dataset: str
    arch: str
    epochs: int
    metrics: dict = field(default_factory=dict)


# ---------------------------------------------------------------- checks (before anything is written)

def _check_positive(name: str, value: float | None, example: str) -> None:
    if value is not None and not 0 < value <= MAX_INT:  # NaN fails, infinity and 10**30 exceed
        raise SgtoolError(f"{name} must be greater than 0 and finite, not {value}.", f"For example {name} {example}.")


def check_options(epochs: int | None, batch_size: int | None, lr: float | None, time_budget: float | None,
                   threads: int | None = None) -> None:
    _check_positive(flag("epochs"), epochs, "12")
    _check_positive(flag("batch_size"), batch_size, "8")
    _check_positive(flag("lr"), lr, "0.002")
    _check_positive(flag("time_budget"), time_budget, "15")
    _check_positive(flag("threads"), threads, "1")
    if lr is not None and not math.isfinite(lr):
        raise SgtoolError(f"{flag('lr')} must be a finite number, not {lr}.", f"For example {flag('lr')} 0.002.")


def check_splits(prepared: PreparedDataset) -> None:
    train = prepared.graphs.split_subset("train")
    if train.num_images == 0 or len(train.labels) == 0:
        raise SgtoolError(f"The dataset '{prepared.name}' has no training images with objects.",
                          "Prepare a dataset whose train split holds annotated boxes.")


# ---------------------------------------------------------------- a run's state

@dataclass
class DetectorRunState:
    run: str
    prepared: PreparedDataset
    config: DetectorConfig
    spec: DetectorSpec
    seed: int
    checkpoint: dict | None  # the detector state --resume continues from
    model: torch.nn.Module | None = None  # a new run's initialised model (with --weights loaded)
    epochs_done: int = 0


def new_state(ws: Workspace, dataset: str | None, arch: str, epochs: int | None, batch_size: int | None,
               lr: float | None, weights: Path | None, name: str | None, time_budget: float | None, seed: int) -> DetectorRunState:
    prepared = load_prepared(ws, dataset)
    require_images(prepared)
    check_splits(prepared)
    given = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weights": str(weights) if weights else None,
             "time_budget": time_budget * 60 if time_budget else None}
    config = DetectorConfig(arch=arch, **{k: v for k, v in given.items() if v is not None})
    if weights:
        read_state_dict(weights)  # a file that is not a checkpoint fails here, before anything is built
    run = distributed.broadcast(ws.claim_run_name(name, f"detector-{arch}-{prepared.name}",
                                                  f"Pick another {flag('name')}, or continue it with {flag('resume')} {name}.")
                                if distributed.is_main() else None)
    min_size, max_size = DEFAULT_SIZES[arch]
    spec = DetectorSpec(arch, len(prepared.vocab.objects), config.min_size or min_size, config.max_size or max_size,
                        tiny_channels=config.tiny_channels)
    torch.manual_seed(seed)
    model = build_model(spec)
    if weights:
        load_weights(model, weights)
    return DetectorRunState(run, prepared, config, spec, seed, None, model)


# ---------------------------------------------------------------- progress and rates

def mean_rate(log: list[dict]) -> float | None:
    rates = [r["images_per_s"] for r in log if r.get("event") == "epoch"]
    return round(float(np.mean(rates)), 2) if rates else None


# ---------------------------------------------------------------- evaluation

def evaluate_detector(detector: Detector, prepared: PreparedDataset, run_dir: Path, reporter: Reporter = SILENT,
                      split: str | None = None) -> dict:
    """Detect on the test split (val if test is empty), write COCO JSON there, and score it with COCOeval."""
    split = split or ("test" if (prepared.graphs.split == 2).any() else "val")
    graphs = prepared.graphs.split_subset(split)
    images = SplitImages(prepared.path, graphs)
    started = time.perf_counter()
    boxes, labels, scores = [], [], []
    with reporter.progress() as bar:
        task = bar.add_task(f"detect ({split})", total=len(images), status="")
        for start in range(0, len(images), detector.batch_size):
            chunk = [images[i] for i in range(start, min(start + detector.batch_size, len(images)))]
            for det in detector.detect(chunk):
                boxes.append(det.boxes.numpy())
                labels.append(det.labels.numpy())
                scores.append(det.scores.numpy())
            bar.advance(task, len(chunk))
    rate = len(images) / max(time.perf_counter() - started, 1e-9)
    gt_path, dt_path = write_coco(run_dir / "coco", split, gt_to_coco(graphs, prepared.vocab.objects),
                                  detections_to_coco(graphs.image_ids, boxes, labels, scores))
    metrics = evaluate_coco(gt_path, dt_path, prepared.vocab.objects)
    return {"split": split, **metrics, "inference_images_per_s": round(rate, 2), "images": len(images)}


def show_detector(result: DetectorResult, as_json: bool = False) -> None:
    from sgtool import ui

    payload = {"run": result.run, "path": str(result.path), "dataset": result.dataset, "arch": result.arch,
               "epochs": result.epochs, "metrics": result.metrics}
    shown = {"mAP@[.5:.95]": result.metrics["mAP"], **{k: result.metrics[k] for k in ("mAP@.5", "mAP@.75")}}
    ui.show_run(payload, as_json, f"Detector run {result.run} ({result.arch} on {result.dataset}): COCO box AP",
                shown, list(shown))
