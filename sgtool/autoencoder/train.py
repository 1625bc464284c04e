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
from sgtool.autoencoder.config import AEConfig
from sgtool.autoencoder.data import LineDrawings, load_split
from sgtool.autoencoder.inference import HEAD, as_batch, load_model, predict, save_model  # noqa: F401 (re-exported)
from sgtool.autoencoder.losses import self_supervised_loss, supervised_loss
from sgtool.autoencoder.model import GraphAutoEncoder
from sgtool.config import build, check_options, merge, parse_overrides, read_yaml, resolve_device
from sgtool.data.predictions import vocabulary_fingerprint, write_predictions
from sgtool.data.prepared import PreparedDataset, load_prepared
from sgtool.errors import SgtoolError
from sgtool.ui import SILENT, Reporter
from sgtool.workspace import Workspace



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

def ae_config(config_path: Path | None, overrides: list[str], explicit: dict[str, Any]) -> AEConfig:
    """Defaults < --config YAML < --set overrides < the flags given (--max-nodes, --epochs, ...), checked."""
    settings = merge(read_yaml(config_path) if config_path else {}, parse_overrides(overrides))
    settings.update({k: v for k, v in explicit.items() if v is not None})
    config = build(AEConfig, settings)
    config.validate()
    check_options(config)
    return config


# ---------------------------------------------------------------- the loop

def sigma_at(config: AEConfig, progress: float) -> float:
    t = min(1.0, progress / 0.5)
    return config.sigma_start + (config.sigma_end - config.sigma_start) * t


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


# ---------------------------------------------------------------- the stage

def train_autoencoder(ws: Workspace, *, dataset: str | None = None, name: str | None = None,
                      config_path: Path | None = None, overrides: list[str] | None = None, seed: int = 0,
                      device: str = "auto", reporter: Reporter = SILENT, **options: Any) -> AETrainResult:
    """Train `seeds` auto-encoders into one run; `options` are AEConfig fields (max_nodes, epochs, ...)."""
    config = ae_config(config_path, overrides or [], options)
    n_seeds = config.seeds
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
