"""What the one training loop (`engine/loop.py`) drives to train the auto-encoder (Lu & Dubbelman,
"Image-Graph-Image Translation via Auto-Encoding"): its loop settings, batches, loss, state and per-step
learning rate (`step_lr`, which the loop's schedule sets), and `AEClock`, the clock hook that gives each step
its line width and (paper baseline) frozen attention, writes a log record every `log_every` steps and ends
training at the step budget or the time cap.

Adam (beta = (0.6, 0.9)), gradients clipped at norm 5, the learning rate / 10 after `lr_drop_at` of
training, the edge template's line width annealed from sigma_start to sigma_end over the first half.
Progress is the larger of steps / step budget and seconds / time cap, so a time cap keeps the shape.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from sgtool.autoencoder.config import AEConfig
from sgtool.autoencoder.data import LineDrawings
from sgtool.autoencoder.inference import HEAD, as_batch
from sgtool.autoencoder.losses import paper_heatmap_loss, self_supervised_loss, supervised_loss
from sgtool.autoencoder.model import GraphAutoEncoder
from sgtool.engine.hooks import Clock
from sgtool.trainee import LoopSettings, Trainee

GRAD_CLIP = 5.0


def total_steps(config: AEConfig, n: int) -> int:
    """The step budget: `steps`, or `epochs` full passes over n images."""
    return config.steps or max(1, n // config.batch_size) * config.epochs


def sigma_at(config: AEConfig, progress: float) -> float:
    t = min(1.0, progress / 0.5)
    return config.sigma_start + (config.sigma_end - config.sigma_start) * t


def freezes_attention(config: AEConfig) -> bool:
    return config.supervised and config.baseline == "paper"


def freeze_attention(model: GraphAutoEncoder, frozen: bool) -> None:
    """The paper baseline's second stage: the node attention fixed (no gradient, batch norm in eval mode)."""
    model.encoder.requires_grad_(not frozen)
    model.encoder.train(not frozen)


def step_loss(model: GraphAutoEncoder, config: AEConfig, data: LineDrawings, index: np.ndarray, sigma: float,
              device: str, frozen: bool = False) -> dict[str, torch.Tensor]:
    image = as_batch(data, index, device)
    if freezes_attention(config) and not frozen:  # the baseline's first stage: the attention alone
        heat = paper_heatmap_loss(model.encoder(image)[0], [data.points[i] for i in index], config.heat_sigma,
                                  config.heat_scale)
        return {"loss": heat, "heatmap": heat.detach()}
    out = model(image, sigma)
    if config.supervised:
        return supervised_loss(out, [data.points[i] for i in index], [data.edges[i] for i in index],
                               config.baseline, frozen, config.heat_sigma, config.heat_scale)
    return self_supervised_loss(out, image, kind=config.recon, on=config.loss_on, aux_weight=config.aux_weight,
                                aux=config.aux)


class AETrainee(Trainee):
    """The auto-encoder as a trainable of the loop: one phase of enough epochs for the step budget."""

    name = HEAD

    def __init__(self, ae: AEConfig, model: GraphAutoEncoder, data: LineDrawings, device: str) -> None:
        self.ae, self.model, self.data, self.device = ae, model, data, device
        self.per_epoch = max(1, len(data) // ae.batch_size)  # full batches only (batch norm)
        self.total = total_steps(ae, len(data))
        self.config = LoopSettings(ae.learning_rate, math.ceil(self.total / self.per_epoch), GRAD_CLIP,
                                   betas=(ae.beta1, ae.beta2))
        self.sigma, self.frozen = ae.sigma_start, False

    def phases(self) -> list[tuple[str, int]]:
        return [("train", self.config.epochs)]

    def batches(self, split: Any, shuffle: bool, rng: np.random.Generator) -> Any:
        """One epoch: the image indices of every full batch, reshuffled from the loop's generator."""
        order, size = rng.permutation(len(self.data)), self.ae.batch_size
        return (order[b * size:(b + 1) * size] for b in range(self.per_epoch))

    def loss(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        return step_loss(self.model, self.ae, self.data, index, self.sigma, self.device, self.frozen)

    def state_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.ae), "model": self.model.state_dict()}

    def progress(self, step: int, seconds: float) -> float:
        """How far training is: the larger of steps / step budget and seconds / time cap."""
        cap = self.ae.minutes * 60
        return max(step / self.total, seconds / cap if cap else 0.0)

    def step_lr(self, step: int, seconds: float) -> float:
        """The paper's learning rate, / 10 after `lr_drop_at` of training."""
        return self.ae.learning_rate * (0.1 if self.progress(step, seconds) >= self.ae.lr_drop_at else 1.0)


class AEClock(Clock):
    """The seconds trained (every session, in its state). Before each step: the line width and the baseline's
    frozen attention at this point of training. After it: a log record every `log_every` steps, and the stop
    at the step budget or the time cap. The seed's last record says how many steps it took."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed

    def before_train(self, loop: Any) -> None:
        super().before_train(loop)
        if self.done(loop):  # resumed after the last step
            loop.stopped = True

    def done(self, loop: Any) -> bool:
        cap = loop.head.ae.minutes * 60
        return loop.state.step >= loop.head.total or bool(cap and self.seconds >= cap)

    def before_step(self, loop: Any) -> None:
        head, ae = loop.head, loop.head.ae
        head.sigma = sigma_at(ae, head.progress(loop.state.step, self.elapsed()))
        head.frozen = freezes_attention(ae) and loop.state.step >= ae.freeze_attention_epochs * head.per_epoch
        if head.frozen:
            freeze_attention(head.model, True)  # again each step: the loop puts the model in train mode per epoch

    def after_step(self, loop: Any, terms: dict[str, Any]) -> None:
        super().after_step(loop, terms)
        if loop.state.step % loop.head.ae.log_every == 0:
            loop.log.append({"event": "train", "seed": self.seed, "epoch": loop.state.epoch + 1, "step": loop.state.step,
                             "lr": loop.optimizer.param_groups[0]["lr"], "seconds": round(self.seconds, 1),
                             **{k: round(float(v.detach()), 5) for k, v in terms.items() if k != "grad_norm"}})
        if self.done(loop):
            loop.stopped = True

    def after_epoch(self, loop: Any, record: dict) -> None:
        record["seed"] = self.seed  # the run's log holds every seed's epochs

    def after_train(self, loop: Any) -> None:
        freeze_attention(loop.head.model, False)
        loop.log.append({"event": "trained", "seed": self.seed, "steps": loop.state.step,
                         "seconds": round(self.seconds, 1)})
