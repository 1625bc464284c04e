"""`sgtool train --head ae`: the image -> graph -> image auto-encoder's own short training stage.

The auto-encoder is an image-level model, not a relation head, so it has its own loop here:
Adam, a fixed number of epochs or a time budget (`--set minutes=M`), the edge template's
line width annealed from sigma_start to sigma_end over the first half of training, a progress
bar with the loss and the ETA, one log record every `log_every` steps.

<ws>/runs/<run>/ config.yaml, run.json, checkpoints/model-seed<S>.pt, log.jsonl, metrics.json,
predictions/{val,test}.h5 (the first seed) and predictions/seed<S>/{val,test}.h5 (every seed).
`--seeds N` trains N models (seeds S, S+1, ...) into one run; `sgtool eval` reports their mean ± std.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from sgtool import __version__, atomic
from sgtool.autoencoder.data import LineDrawings, load_split, to_pixels
from sgtool.autoencoder.losses import RECON_LOSSES, self_supervised_loss, supervised_loss
from sgtool.autoencoder.model import GraphAutoEncoder
from sgtool.config import build, merge, parse_overrides, read_yaml, resolve_device
from sgtool.data.predictions import Predictions, vocabulary_fingerprint, write_predictions
from sgtool.data.prepared import PreparedDataset, load_prepared
from sgtool.data.graphs import offsets_from_counts
from sgtool.errors import SgtoolError
from sgtool.ui import SILENT, Reporter
from sgtool.workspace import Workspace

HEAD = "ae"
NODE_BOX = 4.0  # side of the box written around each predicted node, pixels


@dataclass
class AEConfig:
    max_nodes: int = 4
    supervised: bool = False
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    minutes: float = 0.0  # stop after this many minutes of training (0: no budget)
    train_images: int = 0  # use only the first N training images (0: all)
    resolution: int = 64  # the network's working resolution (the canvas is average-pooled to it)
    width: int = 24  # encoder channels
    aux_weight: float = 1.0  # lambda of the auxiliary overlap loss (0: off)
    recon: str = "msssim"  # msssim | ssim
    loss_on: str = "refined"  # refined | coarse
    sigma_start: float = 1.5  # line template profile, pixels at the working resolution
    sigma_end: float = 0.7
    log_every: int = 25
    threads: int = 0  # torch CPU threads (0: torch's choice)

    def validate(self) -> None:
        checks = [
            (self.max_nodes >= 2, f"--max-nodes must be at least 2 (a graph needs two nodes for an edge), not {self.max_nodes}.",
             "The Simple Shape dataset needs --max-nodes 4 or more."),
            (self.max_nodes <= 16, f"--max-nodes must be at most 16, not {self.max_nodes}.", "Try --max-nodes 4."),
            (self.epochs >= 1, f"--epochs must be at least 1, not {self.epochs}.", "Pass a positive number of epochs."),
            (self.batch_size >= 2, f"--batch-size must be at least 2 (batch norm), not {self.batch_size}.", "Try 32."),
            (self.lr > 0, f"lr must be positive, not {self.lr}.", "Try --set lr=0.002."),
            (self.minutes >= 0, f"minutes must be 0 or more, not {self.minutes}.", "Use --set minutes=20."),
            (self.resolution in (64, 128), f"resolution must be 64 or 128, not {self.resolution}.", "Use --set resolution=64."),
            (self.recon in RECON_LOSSES, f"recon must be one of {', '.join(RECON_LOSSES)}, not '{self.recon}'.", "Use msssim."),
            (self.loss_on in ("refined", "coarse"), f"loss_on must be refined or coarse, not '{self.loss_on}'.", "Use refined."),
            (self.sigma_start > 0 and self.sigma_end > 0, "sigma_start and sigma_end must be positive.", "Try 1.5 and 0.7."),
        ]
        for ok, message, hint in checks:
            if not ok:
                raise SgtoolError(message, hint)


@dataclass
class AETrainResult:
    run: str
    path: Path
    dataset: str
    seeds: list[int]
    metrics: dict[str, float]
    minutes: float
    stuck_seeds: list[int] = field(default_factory=list)  # seeds that found no validation edge at all


# ---------------------------------------------------------------- options

def check_options(head: str, max_nodes: int | None, supervised: bool | None, seeds: int | None) -> None:
    """--max-nodes, --supervised and --seeds belong to the ae head only."""
    if head != HEAD:
        given = [name for name, v in (("--max-nodes", max_nodes), ("--supervised", supervised), ("--seeds", seeds)) if v]
        if given:
            raise SgtoolError(f"{given[0]} is an option of the ae head, not of the {head} head.",
                              "Pass --head ae, or leave it out.")


def ae_config(config_path: Path | None, overrides: list[str], explicit: dict[str, Any]) -> AEConfig:
    settings = merge(read_yaml(config_path) if config_path else {}, parse_overrides(overrides))
    settings.update({k: v for k, v in explicit.items() if v is not None})
    config = build(AEConfig, settings)
    config.validate()
    return config


# ---------------------------------------------------------------- the loop

def sigma_at(config: AEConfig, progress: float) -> float:
    t = min(1.0, progress / 0.5)
    return config.sigma_start + (config.sigma_end - config.sigma_start) * t


def as_batch(data: LineDrawings, index: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(data.images[index]).to(device, torch.float32)[:, None] / 255.0


def step_loss(model: GraphAutoEncoder, config: AEConfig, data: LineDrawings, index: np.ndarray, sigma: float,
              device: str) -> dict[str, torch.Tensor]:
    image = as_batch(data, index, device)
    out = model(image, sigma)
    if config.supervised:
        return supervised_loss(out, [data.points[i] for i in index], [data.edges[i] for i in index])
    return self_supervised_loss(out, image, kind=config.recon, on=config.loss_on, aux_weight=config.aux_weight)


def batch_indices(n: int, batch_size: int, epochs: int, rng: np.random.Generator) -> Iterator[tuple[int, np.ndarray]]:
    """(epoch, image indices) of every full batch, reshuffled each epoch."""
    for epoch in range(epochs):
        order = rng.permutation(n)
        for b in range(max(1, n // batch_size)):
            yield epoch, order[b * batch_size:(b + 1) * batch_size]


def optimise(model: GraphAutoEncoder, optimiser: torch.optim.Optimizer, loss: torch.Tensor) -> bool:
    """One update; a non-finite loss is skipped (False)."""
    if not torch.isfinite(loss):
        return False
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimiser.step()
    return True


def fit(model: GraphAutoEncoder, data: LineDrawings, config: AEConfig, seed: int, device: str,
        reporter: Reporter = SILENT, echo: Callable[[dict], None] | None = None) -> list[dict]:
    """Train in place until the epochs or the time budget end; returns the log records (also passed to echo)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    total = max(1, len(data) // config.batch_size) * config.epochs
    budget = config.minutes * 60
    start, log, step = time.time(), [], 0
    model.train()
    with reporter.progress() as bar:
        task = bar.add_task(f"train ae (seed {seed})", total=total, status="")
        for epoch, index in batch_indices(len(data), config.batch_size, config.epochs, np.random.default_rng(seed)):
            elapsed = time.time() - start
            if budget and elapsed >= budget:
                break
            progress = max(step / total, elapsed / budget if budget else 0.0)
            parts = step_loss(model, config, data, index, sigma_at(config, progress), device)
            step += optimise(model, optimiser, parts["loss"])
            # the bar follows whichever ends first: the epochs or the time budget
            bar.update(task, completed=max(step, int(total * elapsed / budget)) if budget else step,
                       status=f"loss {parts['loss'].item():.4f}")
            if step % config.log_every == 0:
                log.append({"event": "train", "seed": seed, "epoch": epoch, "step": step,
                            "seconds": round(time.time() - start, 1),
                            **{k: round(float(v.detach()), 5) for k, v in parts.items()}})
                if echo:
                    echo(log[-1])
    log.append({"event": "trained", "seed": seed, "steps": step, "seconds": round(time.time() - start, 1)})
    return log


@torch.no_grad()
def infer(model: GraphAutoEncoder, data: LineDrawings, sigma: float, device: str, batch: int = 64,
          keep: tuple[str, ...] = ("coords", "edge_prob")) -> dict[str, np.ndarray]:
    """Model outputs for every image of the split, as numpy arrays."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keep}
    for lo in range(0, len(data), batch):
        out = model(as_batch(data, np.arange(lo, min(lo + batch, len(data))), device), sigma)
        for k in keep:
            parts[k].append(out[k].cpu().numpy())
    return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in parts.items()}


def to_predictions(data: LineDrawings, coords: np.ndarray, edge_prob: np.ndarray, pairs: np.ndarray) -> Predictions:
    """Nodes as 'node' objects (small boxes around the points), every slot pair scored for 'connected'."""
    n_img, k = coords.shape[:2]
    xy = to_pixels(coords.reshape(-1, 2), data.canvas)
    half = NODE_BOX / 2
    boxes = np.concatenate([xy - half, xy + half], 1).astype(np.float32)
    base = np.repeat(np.arange(n_img) * k, len(pairs))
    rel_pairs = np.tile(pairs, (n_img, 1)) + base[:, None]
    p = edge_prob.reshape(-1).astype(np.float32)
    return Predictions(
        image_ids=data.graphs.image_ids, box_offsets=offsets_from_counts(np.full(n_img, k, np.int64)), boxes=boxes,
        labels=np.ones(n_img * k, np.int64), scores=np.ones(n_img * k, np.float32),
        pair_offsets=offsets_from_counts(np.full(n_img, len(pairs), np.int64)), pairs=rel_pairs.astype(np.int64),
        rel_scores=np.stack([1 - p, p], 1))


# ---------------------------------------------------------------- the stage

def train_autoencoder(ws: Workspace, *, dataset: str | None = None, name: str | None = None,
                      epochs: int | None = None, batch_size: int | None = None, max_nodes: int | None = None,
                      supervised: bool | None = None, seeds: int | None = None, config_path: Path | None = None,
                      overrides: list[str] | None = None, seed: int = 0, device: str = "auto",
                      reporter: Reporter = SILENT) -> AETrainResult:

    config = ae_config(config_path, overrides or [], {"epochs": epochs, "batch_size": batch_size,
                                                       "max_nodes": max_nodes, "supervised": supervised or None})
    n_seeds = 1 if seeds is None else seeds
    if n_seeds < 1:
        raise SgtoolError(f"--seeds must be at least 1, not {n_seeds}.", "Pass how many seeds to train.")
    prepared = load_prepared(ws, dataset)
    device = resolve_device(device)
    kind = "supervised" if config.supervised else "ae"
    splits = {s: load_split(prepared, s, config.resolution, config.train_images if s == "train" else 0)
              for s in ("train", "val", "test")}
    if len(splits["train"]) < config.batch_size:
        raise SgtoolError(f"The train split of '{prepared.name}' holds {len(splits['train'])} images, fewer than "
                          f"one batch of {config.batch_size}.", "Prepare more images or lower --batch-size.")
    run = ws.claim_run_name(name, f"{kind}-{prepared.name}-k{config.max_nodes}")
    ws.check_writable()
    seed_list = [seed + i for i in range(n_seeds)]
    settings = {"run": run, "head": HEAD, "dataset": prepared.name, "task": "sgdet", "seed": seed, "seeds": seed_list,
                "device": device, "options": asdict(config), "sgtool_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    reporter.info(f"Training the {'supervised ' if config.supervised else ''}auto-encoder (max {config.max_nodes} "
                  f"nodes) on '{prepared.name}' as run {run}, seeds {seed_list}.")
    start, threads = time.time(), torch.get_num_threads()
    try:
        torch.set_num_threads(config.threads or threads)
        with atomic.atomic_directory(ws.run_dir(run)) as staging:
            metrics, per_seed = _fill_run(staging, splits, prepared, config, settings, device, reporter)
    finally:
        torch.set_num_threads(threads)
    ws.set_latest("run", run)
    stuck = [s for s, m in zip(seed_list, per_seed) if m["recall"] == 0]
    return AETrainResult(run, ws.run_dir(run), prepared.name, seed_list, metrics, (time.time() - start) / 60, stuck)


def _fill_run(staging: Path, splits: dict[str, LineDrawings], prepared: PreparedDataset, config: AEConfig,
              settings: dict, device: str, reporter: Reporter) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Train every seed into staging; the mean validation P / R / F1 and each seed's."""
    from sgtool.autoencoder.evaluate import score_split

    log: list[dict] = []
    per_seed = []
    for s in settings["seeds"]:
        torch.manual_seed(s)
        model = GraphAutoEncoder(config.max_nodes, config.width).to(device)
        log.extend(fit(model, splits["train"], config, s, device, reporter))
        save_model(staging / "checkpoints" / f"model-seed{s}.pt", model, config)
        for split in ("val", "test"):
            predictions = predict(model, splits[split], config, device)
            predictions.meta = {"dataset": prepared.name, "split": split, "task": "sgdet", "head": HEAD,
                                "run": settings["run"], "seed": s, "num_images": len(splits[split]),
                                "vocabulary_fingerprint": vocabulary_fingerprint(prepared.vocab)}
            write_predictions(staging / "predictions" / f"seed{s}" / f"{split}.h5", predictions)
            if s == settings["seeds"][0]:
                write_predictions(staging / "predictions" / f"{split}.h5", predictions)
            if split == "val":
                per_seed.append(score_split(splits[split], predictions))
    metrics = {k: float(np.mean([m[k] for m in per_seed])) for k in per_seed[0]}
    log.append({"event": "val", "metrics": metrics, "per_seed": per_seed})
    atomic.write_text(staging / "config.yaml", yaml.safe_dump(settings, sort_keys=False))
    atomic.write_json(staging / "run.json", {k: settings[k] for k in ("run", "head", "dataset", "task", "seed", "seeds")})
    atomic.write_text(staging / "log.jsonl", "".join(json.dumps({"time": time.time(), **r}) + "\n" for r in log))
    atomic.write_json(staging / "metrics.json", {"split": "val", "task": "point-graph", "metrics": metrics,
                                                 "per_seed": per_seed})
    return metrics, per_seed


def predict(model: GraphAutoEncoder, data: LineDrawings, config: AEConfig, device: str) -> Predictions:
    out = infer(model, data, config.sigma_end, device)
    return to_predictions(data, out["coords"], out["edge_prob"], model.pairs.cpu().numpy())


def save_model(path: Path, model: GraphAutoEncoder, config: AEConfig) -> None:
    with atomic.atomic_path(path) as tmp:
        torch.save({"head": HEAD, "config": asdict(config), "state": model.state_dict()}, tmp)


def load_model(path: Path) -> tuple[GraphAutoEncoder, AEConfig]:
    if not path.exists():
        raise SgtoolError(f"No auto-encoder checkpoint at {path}.", "Train the run again.")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    config = build(AEConfig, saved["config"])
    model = GraphAutoEncoder(config.max_nodes, config.width)
    model.load_state_dict(saved["state"])
    return model.eval(), config


def show_ae_train(result: AETrainResult, as_json: bool = False) -> None:
    from sgtool import ui

    payload = {"run": result.run, "path": str(result.path), "head": HEAD, "dataset": result.dataset,
               "seeds": result.seeds, "minutes": round(result.minutes, 2), "val_metrics": result.metrics,
               "stuck_seeds": result.stuck_seeds}
    if result.stuck_seeds:
        ui.err.print(f"Warning: seed(s) {', '.join(map(str, result.stuck_seeds))} found no edge on the validation "
                     "split: training did not leave its starting plateau (a blank drawing). Train longer "
                     "(--set minutes=...) or with another --seed.", highlight=False)
    ui.show_run(payload, as_json, f"Run {result.run} (ae on {result.dataset}, {len(result.seeds)} seed(s), "
                f"{result.minutes:.1f} min): validation triplets", result.metrics, ("precision", "recall", "f1"))
