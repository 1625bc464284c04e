"""The `train-detector` stage: Faster R-CNN on a prepared dataset's images, then COCO mAP on its test split.

<ws>/runs/<run>/ config.yaml, checkpoints/last.pt (every epoch, for --resume), checkpoints/model.pt (final),
                 log.jsonl, coco/gt_test.json, coco/dt_test.json, metrics.json

The run folder exists while training so a killed run can be resumed from its last epoch; a run that
fails before its first checkpoint is removed again. Bad input is refused before anything is written.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from sgtool import __version__, atomic
from sgtool.config import resolve_device
from sgtool.data.prepared import PreparedDataset, load_prepared
from sgtool.data.sgg_h5 import Vocabulary
from sgtool.detect.api import CHECKPOINT_FORMAT, LATEST_KIND, Detector, read_checkpoint
from sgtool.detect.config import DetectorConfig
from sgtool.detect.coco import detections_to_coco, evaluate_coco, gt_to_coco, write_coco
from sgtool.detect.data import SplitImages, num_batches, require_images, train_batches
from sgtool import distributed
from sgtool.detect.model import DEFAULT_SIZES, DetectorSpec, build_model, check_arch, load_weights, read_state_dict
from sgtool.errors import SgtoolError
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
    if value is not None and not value > 0:
        raise SgtoolError(f"{name} must be greater than 0, not {value}.", f"For example {name} {example}.")


def _check_options(epochs: int | None, batch_size: int | None, lr: float | None, time_budget: float | None,
                   threads: int | None = None) -> None:
    _check_positive("--epochs", epochs, "12")
    _check_positive("--batch-size", batch_size, "8")
    _check_positive("--lr", lr, "0.002")
    _check_positive("--time-budget", time_budget, "15")
    _check_positive("--threads", threads, "1")
    if lr is not None and not math.isfinite(lr):
        raise SgtoolError(f"--lr must be a finite number, not {lr}.", "For example --lr 0.002.")


def _check_splits(prepared: PreparedDataset) -> None:
    train = prepared.graphs.split_subset("train")
    if train.num_images == 0 or len(train.labels) == 0:
        raise SgtoolError(f"The dataset '{prepared.name}' has no training images with objects.",
                          "Prepare a dataset whose train split holds annotated boxes.")


# ---------------------------------------------------------------- the stage

DETECTOR_OPTIONS = ("dataset", "arch", "epochs", "batch_size", "lr", "weights", "name", "time_budget")


def train_detector(ws: Workspace, *, resume: str | None = None, seed: int = 0, device: str = "auto",
                   threads: int | None = None, reporter: Reporter = SILENT, **options: object) -> DetectorResult:
    """Train (or resume) a detector run and evaluate it on the test split with COCOeval.

    `options`: dataset, arch, epochs, batch_size, lr, weights (a path), name and time_budget (in minutes:
    training stops after it and the lr schedule decays over it); None or left out means the default.
    """
    unknown = sorted(set(options) - set(DETECTOR_OPTIONS))
    if unknown:
        raise TypeError(f"train_detector() got unexpected options {unknown}")
    dataset, arch, epochs, batch_size, lr, weights, name, time_budget = (options.get(k) for k in DETECTOR_OPTIONS)
    if arch is not None:
        check_arch(arch)
    _check_options(epochs, batch_size, lr, time_budget, threads)
    device = distributed.setup(resolve_device(device))  # under torchrun: join the process group
    reporter = reporter if distributed.is_main() else SILENT
    if threads:
        torch.set_num_threads(threads)
    if resume is not None:
        state = _resume_state(ws, resume, dataset, arch, epochs, weights, name, time_budget)
    else:
        state = _new_state(ws, dataset, arch or "tiny", epochs, batch_size, lr, weights, name, time_budget, seed)
    ws.check_writable()
    return _run(ws, state, device, reporter)


@dataclass
class _State:
    run: str
    prepared: PreparedDataset
    config: DetectorConfig
    spec: DetectorSpec
    seed: int
    checkpoint: dict | None  # what --resume continues from
    model: torch.nn.Module | None = None  # a new run's initialised model (with --weights loaded)


def _new_state(ws: Workspace, dataset: str | None, arch: str, epochs: int | None, batch_size: int | None,
               lr: float | None, weights: Path | None, name: str | None, time_budget: float | None, seed: int) -> _State:
    prepared = load_prepared(ws, dataset)
    require_images(prepared)
    _check_splits(prepared)
    given = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weights": str(weights) if weights else None,
             "time_budget": time_budget * 60 if time_budget else None}
    config = DetectorConfig(arch=arch, **{k: v for k, v in given.items() if v is not None})
    if weights:
        read_state_dict(weights)  # a file that is not a checkpoint fails here, before anything is built
    run = distributed.broadcast(ws.claim_run_name(name, f"detector-{arch}-{prepared.name}",
                                                  f"Pick another --name, or continue it with --resume {name}.")
                                if distributed.is_main() else None)
    min_size, max_size = DEFAULT_SIZES[arch]
    spec = DetectorSpec(arch, len(prepared.vocab.objects), config.min_size or min_size, config.max_size or max_size,
                        tiny_channels=config.tiny_channels)
    torch.manual_seed(seed)
    model = build_model(spec)
    if weights:
        load_weights(model, weights)
    return _State(run, prepared, config, spec, seed, None, model)


def _resume_state(ws: Workspace, run: str, dataset: str | None, arch: str | None, epochs: int | None,
                  weights: Path | None, name: str | None, time_budget: float | None) -> _State:
    if weights is not None or name is not None:
        raise SgtoolError("--resume continues a run as it was; it takes neither --weights nor --name.",
                          "Leave those out, or start a new run without --resume.")
    path = ws.require_run(run) / "checkpoints" / "last.pt"
    if not path.is_file():
        raise SgtoolError(f"The run '{run}' holds no detector checkpoint to resume from.",
                          "Resume a run made by `sgtool train-detector`.")
    checkpoint = read_checkpoint(path)
    config = DetectorConfig(**checkpoint["config"])
    if arch is not None and arch != config.arch:
        raise SgtoolError(f"The run '{run}' trains the {config.arch} architecture, not {arch}.", "Leave out --arch.")
    if dataset is not None and dataset != checkpoint["dataset"]:
        raise SgtoolError(f"The run '{run}' trains on '{checkpoint['dataset']}', not '{dataset}'.", "Leave out --dataset.")
    prepared = load_prepared(ws, checkpoint["dataset"])
    require_images(prepared)
    if list(checkpoint["vocabulary"]["objects"]) != list(prepared.vocab.objects):
        raise SgtoolError(f"The dataset '{prepared.name}' changed its object vocabulary since run '{run}' started.",
                          "Start a new run instead of resuming.")
    if epochs is not None:
        config.epochs = epochs
    if checkpoint["epoch"] >= config.epochs:
        raise SgtoolError(f"The run '{run}' has already trained {checkpoint['epoch']} of {config.epochs} epochs.",
                          f"Pass --epochs {checkpoint['epoch'] + 1} or more to train it longer.")
    if time_budget is not None:
        config.time_budget = checkpoint["train_seconds"] + time_budget * 60
    elif config.time_budget and checkpoint["train_seconds"] >= config.time_budget:
        raise SgtoolError(f"The run '{run}' has used its whole time budget ({config.time_budget / 60:g} minutes).",
                          "Pass --time-budget MINUTES to train it longer.")
    return _State(run, prepared, config, DetectorSpec(**checkpoint["spec"]), int(checkpoint["seed"]), checkpoint)


def _run(ws: Workspace, state: _State, device: str, reporter: Reporter) -> DetectorResult:
    run_dir = ws.run_dir(state.run)
    fresh, main = state.checkpoint is None, distributed.is_main()  # only rank 0 writes
    if not fresh and main:
        atomic.remove_leftovers(run_dir)  # temp files of writes a kill interrupted
    try:
        if fresh and main:
            settings = _settings(state, device)
            atomic.write_text(run_dir / "config.yaml", yaml.safe_dump(settings, sort_keys=False))
            atomic.write_json(run_dir / "run.json", {k: settings[k] for k in ("run", "head", "dataset", "task", "arch", "seed")})
        model = _fit(run_dir, state, device, reporter)
    except BaseException:
        if fresh and main and not (run_dir / "checkpoints" / "last.pt").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if not main:  # rank 0 evaluates and writes; the others wait for its metrics
        metrics = distributed.broadcast(None)
        return DetectorResult(state.run, run_dir, state.prepared.name, state.config.arch, state.config.epochs, metrics)
    detector = Detector(model, state.spec, state.prepared.vocab, state.run, device)
    metrics = evaluate_detector(detector, state.prepared, run_dir, reporter)
    log = _read_log(run_dir)
    metrics["train_images_per_s"] = _mean_rate(log)
    atomic.write_json(run_dir / "metrics.json", {"split": metrics.pop("split"), "task": "det", "metrics": metrics})
    ws.set_latest(LATEST_KIND, state.run)
    distributed.broadcast(metrics)
    return DetectorResult(state.run, run_dir, state.prepared.name, state.config.arch, state.config.epochs, metrics)


def _settings(state: _State, device: str) -> dict:
    return {"run": state.run, "head": "detector", "task": "det", "arch": state.config.arch,
            "dataset": state.prepared.name, "seed": state.seed, "device": device, "options": asdict(state.config),
            "spec": state.spec.as_dict(), "sgtool_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


# ---------------------------------------------------------------- training

def _lr_factor(step: int, total: int, warmup: int, elapsed: float, budget: float | None) -> float:
    """Linear warm-up, then cosine decay to 2% over the steps (or the time budget, whichever ends first)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if budget:
        progress = max(progress, elapsed / budget)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _fit(run_dir: Path, state: _State, device: str, reporter: Reporter) -> torch.nn.Module:
    config, checkpoint = state.config, state.checkpoint
    torch.manual_seed(state.seed)
    model = state.model if state.model is not None else build_model(state.spec)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=device == "cuda")
    epoch, step, seconds, log = 0, 0, 0.0, []
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(checkpoint["scaler"])
        epoch, step, seconds, log = checkpoint["epoch"], checkpoint["step"], checkpoint["train_seconds"], checkpoint["log"]
    images = SplitImages(state.prepared.path, state.prepared.graphs.split_subset("train"))
    per_epoch = distributed.sharded_count(num_batches(len(images), config.batch_size))  # steps (global batches)
    if per_epoch == 0:
        raise SgtoolError(f"The {len(images)} training images make fewer batches than the {distributed.world_size()} "
                          "processes.", "Use a smaller --batch-size or fewer processes.")
    ddp = distributed.wrap_model(model)  # averages the gradients over the ranks under torchrun
    total = per_epoch * config.epochs
    reporter.info(f"Training the {config.arch} detector on '{state.prepared.name}' ({len(images)} images) as run "
                  f"{state.run}" + (f", resuming after epoch {epoch}." if epoch else "."))
    first_step, first_seconds = step, seconds
    with reporter.progress() as bar:
        task = bar.add_task("train-detector", total=total, completed=step, status="")
        while epoch < config.epochs and not (config.time_budget and seconds >= config.time_budget):
            started = time.perf_counter()
            losses: dict[str, list[float]] = {}
            shard = (distributed.rank(), distributed.world_size())
            for batch, targets in train_batches(images, config.batch_size, state.seed, epoch, config.flip, shard=shard):
                factor = _lr_factor(step, total, config.warmup_steps, seconds + time.perf_counter() - started,
                                    config.time_budget)
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * factor
                parts = _train_step(ddp, optimizer, scaler, batch, targets, device, config.grad_clip)
                for key, value in parts.items():
                    losses.setdefault(key, []).append(value)
                step += 1
                elapsed = seconds + time.perf_counter() - started
                left = config.time_budget - elapsed if config.time_budget else None
                bar.update(task, completed=step, total=_expected_steps(step, total, first_step, elapsed - first_seconds, left),
                           status=f"epoch {epoch + 1}/{config.epochs} loss {parts['loss']:.3f}")
                if distributed.any_rank(bool(config.time_budget) and seconds + time.perf_counter() - started >= config.time_budget):
                    break  # decided on every rank together
            took = time.perf_counter() - started
            seconds += took
            epoch += 1
            partial = len(losses["loss"]) < per_epoch  # the time budget ended it early
            log.append({"time": time.time(), "event": "epoch", "epoch": epoch, "partial": partial, "step": step,
                        "seconds": round(took, 3),
                        "images_per_s": round(len(losses["loss"]) * config.batch_size * distributed.world_size() / max(took, 1e-9), 2),
                        "lr": optimizer.param_groups[0]["lr"], **{k: float(np.mean(v)) for k, v in losses.items()}})
            if distributed.is_main():
                _save_checkpoint(run_dir / "checkpoints" / "last.pt", model, optimizer, scaler, state, epoch, step,
                                 seconds, log)
                atomic.write_text(run_dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in log))
        bar.update(task, total=step)  # a budget that ended training early: the bar ends full
    if distributed.is_main():
        _save_final(run_dir / "checkpoints" / "model.pt", model, state, epoch)
    return model


def _expected_steps(step: int, total: int, first_step: int, took: float, seconds_left: float | None) -> int:
    """The steps this run will end at: all `total`, or as many as the time budget leaves room for at the
    pace since `first_step` (so the progress bar's ETA follows the budget)."""
    if seconds_left is None or took <= 0:
        return total
    pace = (step - first_step) / took
    return int(min(total, step + max(0.0, seconds_left) * pace))


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                batch: list[torch.Tensor], targets: list[dict], device: str, clip: float) -> dict[str, float]:
    batch = [im.to(device, non_blocking=True) for im in batch]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    with torch.autocast("cuda", dtype=torch.float16, enabled=device == "cuda"):
        parts = model(batch, targets)
    loss = sum(parts.values())
    if not distributed.all_finite(loss):  # on every rank, so that all ranks stop together
        raise SgtoolError(f"The detector's loss became {loss.item()} (training diverged).", "Lower --lr, e.g. --lr 0.0005.")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    scaler.step(optimizer)
    scaler.update()
    return {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in parts.items()}}


def _vocab_dict(vocab: Vocabulary) -> dict:
    return {"objects": list(vocab.objects), "predicates": list(vocab.predicates)}


def _save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                     state: _State, epoch: int, step: int, seconds: float, log: list[dict]) -> None:
    payload = {"format": CHECKPOINT_FORMAT, "version": 1, "spec": state.spec.as_dict(),
               "vocabulary": _vocab_dict(state.prepared.vocab), "dataset": state.prepared.name,
               "config": asdict(state.config), "seed": state.seed, "model": model.state_dict(),
               "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
               "epoch": epoch, "step": step, "train_seconds": seconds, "log": log}
    with atomic.atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _save_final(path: Path, model: torch.nn.Module, state: _State, epoch: int) -> None:
    payload = {"format": CHECKPOINT_FORMAT, "version": 1, "spec": state.spec.as_dict(),
               "vocabulary": _vocab_dict(state.prepared.vocab), "dataset": state.prepared.name, "epoch": epoch,
               "model": model.state_dict()}
    with atomic.atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _read_log(run_dir: Path) -> list[dict]:
    path = run_dir / "log.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.exists() else []


def _mean_rate(log: list[dict]) -> float | None:
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
