"""`sgtool train --head ae`: the image -> graph -> image auto-encoder's own short training stage.

Paper: Lu & Dubbelman, "Image-Graph-Image Translation via Auto-Encoding" (docs/methods/ae.md).
The auto-encoder is an image-level model, not a relation head, so it has its own loop here: Adam
(beta = (0.6, 0.9)), a step budget (`--set steps=N`, else the epochs) with a time cap
(`--set minutes=M`), the learning rate / 10 after `lr_drop_at` of training, the paper baseline's
attention frozen after `freeze_attention_epochs` epochs, the edge template's line width annealed from
sigma_start to sigma_end over the first half, a progress bar, one log record every `log_every` steps.

A seed that ends on the blank-drawing plateau (no validation edge found) is named; with
`--set plateau_restarts=N` it is retrained with the next unused seed, at most N times per run.

<ws>/runs/<run>/ config.yaml, run.json, checkpoints/model-seed<S>.pt, log.jsonl, metrics.json,
predictions/{val,test}.h5 (the first seed) and predictions/seed<S>/{val,test}.h5 (every seed).
`--seeds N` trains N models (seeds S, S+1, ...) into one run; `sgtool eval` reports their mean ± std.
"""
from __future__ import annotations

import itertools
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
from sgtool.autoencoder.inference import HEAD, as_batch, load_model, model_for, predict, save_model  # noqa: F401 (re-exported)
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
    seeds: list[int]  # the seeds finally trained (a restarted seed replaced by its successor)
    metrics: dict[str, float]
    minutes: float
    stuck_seeds: list[int] = field(default_factory=list)  # seeds kept although they found no validation edge
    restarts: int = 0  # seeds retrained because they ended on the plateau
    plateau_seeds: list[int] = field(default_factory=list)  # the seeds that were replaced


def on_plateau(val_scores: dict[str, float]) -> bool:
    """A model still drawing a blank canvas finds no validation edge at all."""
    return val_scores["recall"] == 0


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


def freezes_attention(config: AEConfig) -> bool:
    return config.supervised and config.baseline == "paper"


def step_loss(model: GraphAutoEncoder, config: AEConfig, data: LineDrawings, index: np.ndarray, sigma: float,
              device: str, frozen: bool = False) -> dict[str, torch.Tensor]:
    image = as_batch(data, index, device)
    out = model(image, sigma)
    if config.supervised:
        return supervised_loss(out, [data.points[i] for i in index], [data.edges[i] for i in index],
                               config.baseline, frozen)
    return self_supervised_loss(out, image, kind=config.recon, on=config.loss_on, aux_weight=config.aux_weight,
                                aux=config.aux)


def batch_indices(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[tuple[int, np.ndarray]]:
    """(epoch, image indices) of every full batch, reshuffled each epoch, without end."""
    for epoch in itertools.count():
        order = rng.permutation(n)
        for b in range(max(1, n // batch_size)):
            yield epoch, order[b * batch_size:(b + 1) * batch_size]


def total_steps(config: AEConfig, n: int) -> int:
    """The step budget: `steps`, or `epochs` full passes over n images."""
    return config.steps or max(1, n // config.batch_size) * config.epochs


def make_optimiser(model: GraphAutoEncoder, config: AEConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=config.learning_rate, betas=(config.beta1, config.beta2))


def optimise(model: GraphAutoEncoder, optimiser: torch.optim.Optimizer, loss: torch.Tensor) -> bool:
    """One update; a non-finite loss is skipped (False)."""
    if not torch.isfinite(loss):
        return False
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimiser.step()
    return True


def freeze_attention(model: GraphAutoEncoder, frozen: bool) -> None:
    """The paper baseline's second stage: the node attention fixed (no gradient, batch norm in eval mode)."""
    model.encoder.requires_grad_(not frozen)
    model.encoder.train(not frozen)


MAX_SKIPPED = 50  # non-finite losses in a row before a seed gives up


def fit(model: GraphAutoEncoder, data: LineDrawings, config: AEConfig, seed: int, device: str,
        reporter: Reporter = SILENT, echo: Callable[[dict], None] | None = None) -> list[dict]:
    """Train in place for the step budget (or until the time cap); returns the log records (also passed to echo)."""
    optimiser = make_optimiser(model, config)
    total, budget = total_steps(config, len(data)), config.minutes * 60
    freeze_step = config.freeze_attention_epochs * max(1, len(data) // config.batch_size)
    start, log, step, skipped, frozen = time.time(), [], 0, 0, False
    model.train()
    batches = batch_indices(len(data), config.batch_size, np.random.default_rng(seed))
    with reporter.progress() as bar:
        task = bar.add_task(f"train ae (seed {seed})", total=total, status="")
        while step < total and skipped < MAX_SKIPPED:
            elapsed = time.time() - start
            if budget and elapsed >= budget:
                break
            progress = max(step / total, elapsed / budget if budget else 0.0)
            for group in optimiser.param_groups:
                group["lr"] = config.learning_rate * (0.1 if progress >= config.lr_drop_at else 1.0)
            if freezes_attention(config) and not frozen and step >= freeze_step:
                freeze_attention(model, frozen := True)
            epoch, index = next(batches)
            parts = step_loss(model, config, data, index, sigma_at(config, progress), device, frozen)
            done = optimise(model, optimiser, parts["loss"])
            step, skipped = step + done, 0 if done else skipped + 1
            # the bar follows whichever ends first: the step budget or the time cap
            bar.update(task, completed=max(step, int(total * elapsed / budget)) if budget else step,
                       status=f"loss {parts['loss'].item():.4f}")
            if done and step % config.log_every == 0:
                log.append({"event": "train", "seed": seed, "epoch": epoch, "step": step,
                            "lr": optimiser.param_groups[0]["lr"], "seconds": round(time.time() - start, 1),
                            **{k: round(float(v.detach()), 5) for k, v in parts.items()}})
                if echo:
                    echo(log[-1])
    freeze_attention(model, False)
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
    settings = {"run": run, "head": HEAD, "dataset": prepared.name, "task": "sgdet", "seed": seed,
                "seeds": [seed + i for i in range(n_seeds)], "device": device, "options": asdict(config),
                "sgtool_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    reporter.info(f"Training the {'supervised ' if config.supervised else ''}auto-encoder (max {config.max_nodes} "
                  f"nodes) on '{prepared.name}' as run {run}, seeds {settings['seeds']}.")
    start, threads = time.time(), torch.get_num_threads()
    try:
        torch.set_num_threads(config.threads or threads)
        with atomic.atomic_directory(ws.run_dir(run)) as staging:
            metrics, per_seed, replaced = _fill_run(staging, splits, prepared, config, settings, device, reporter)
    finally:
        torch.set_num_threads(threads)
    ws.set_latest("run", run)
    stuck = [s for s, m in zip(settings["seeds"], per_seed) if on_plateau(m)]
    return AETrainResult(run, ws.run_dir(run), prepared.name, settings["seeds"], metrics, (time.time() - start) / 60,
                         stuck, len(replaced), replaced)


def _train_seed(splits: dict[str, LineDrawings], prepared: PreparedDataset, config: AEConfig, settings: dict,
                seed: int, device: str, reporter: Reporter) -> tuple[GraphAutoEncoder, list[dict], dict]:
    """One seed trained; its log and its val / test predictions."""
    torch.manual_seed(seed)
    model = model_for(config).to(device)
    log = fit(model, splits["train"], config, seed, device, reporter)
    predictions = {}
    for split in ("val", "test"):
        predictions[split] = predict(model, splits[split], config, device)
        predictions[split].meta = {"dataset": prepared.name, "split": split, "task": "sgdet", "head": HEAD,
                                   "run": settings["run"], "seed": seed, "num_images": len(splits[split]),
                                   "vocabulary_fingerprint": vocabulary_fingerprint(prepared.vocab)}
    return model, log, predictions


def _fill_run(staging: Path, splits: dict[str, LineDrawings], prepared: PreparedDataset, config: AEConfig,
              settings: dict, device: str, reporter: Reporter) -> tuple[dict[str, float], list[dict], list[int]]:
    """Train every seed into staging (a plateau seed retrained with the next unused seed while restarts
    last); the mean validation P / R / F1, each kept seed's, and the seeds replaced."""
    from sgtool.autoencoder.evaluate import score_split

    log: list[dict] = []
    per_seed, kept, replaced = [], [], []
    queue, next_seed = list(settings["seeds"]), max(settings["seeds"]) + 1
    while queue:
        s = queue.pop(0)
        model, seed_log, predictions = _train_seed(splits, prepared, config, settings, s, device, reporter)
        log.extend(seed_log)
        scores = score_split(splits["val"], predictions["val"])
        if on_plateau(scores) and len(replaced) < config.plateau_restarts:
            log.append({"event": "plateau_restart", "seed": s, "next_seed": next_seed})
            reporter.info(f"Seed {s} ended on the blank-drawing plateau; restarting with seed {next_seed}.")
            replaced.append(s)
            queue.insert(0, next_seed)
            next_seed += 1
            continue
        save_model(staging / "checkpoints" / f"model-seed{s}.pt", model, config)
        for split, p in predictions.items():
            write_predictions(staging / "predictions" / f"seed{s}" / f"{split}.h5", p)
            if not kept:
                write_predictions(staging / "predictions" / f"{split}.h5", p)
        kept.append(s)
        per_seed.append(scores)
    settings.update(seeds=kept, plateau_restarts=len(replaced), plateau_seeds=replaced)
    metrics = {k: float(np.mean([m[k] for m in per_seed])) for k in per_seed[0]}
    log.append({"event": "val", "metrics": metrics, "per_seed": per_seed})
    atomic.write_text(staging / "config.yaml", yaml.safe_dump(settings, sort_keys=False))
    atomic.write_json(staging / "run.json", {k: settings[k] for k in ("run", "head", "dataset", "task", "seed", "seeds")})
    atomic.write_text(staging / "log.jsonl", "".join(json.dumps({"time": time.time(), **r}) + "\n" for r in log))
    atomic.write_json(staging / "metrics.json", {"split": "val", "task": "point-graph", "metrics": metrics,
                                                 "per_seed": per_seed, "seeds": kept, "plateau_restarts": len(replaced),
                                                 "plateau_seeds": replaced})
    return metrics, per_seed, replaced


def show_ae_train(result: AETrainResult, as_json: bool = False) -> None:
    from sgtool import ui

    payload = {"run": result.run, "path": str(result.path), "head": HEAD, "dataset": result.dataset,
               "seeds": result.seeds, "minutes": round(result.minutes, 2), "val_metrics": result.metrics,
               "stuck_seeds": result.stuck_seeds, "plateau_restarts": result.restarts,
               "plateau_seeds": result.plateau_seeds}
    if result.restarts:
        ui.err.print(f"{result.restarts} plateau restart(s): seed(s) {', '.join(map(str, result.plateau_seeds))} "
                     "ended on the blank-drawing plateau and were replaced by the next unused seed(s).", highlight=False)
    if result.stuck_seeds:
        ui.err.print(f"Warning: seed(s) {', '.join(map(str, result.stuck_seeds))} found no edge on the validation "
                     "split: training did not leave its starting plateau (a blank drawing). Train longer "
                     "(--set steps=...), with another --seed, or with --set plateau_restarts=N.", highlight=False)
    ui.show_run(payload, as_json, f"Run {result.run} (ae on {result.dataset}, {len(result.seeds)} seed(s), "
                f"{result.minutes:.1f} min): validation triplets", result.metrics, ("precision", "recall", "f1"))
