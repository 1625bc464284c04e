"""What the one training loop (`engine/loop.py`) drives to train the detector: its loop settings, its
batches (the order drawn from the loop's checkpointed generator), its loss, its per-step learning rate
(`step_lr`, set by the loop's schedule) and its state (the weights and everything `detect/api.py` needs to
load them: spec, vocabulary, dataset, config, seed)."""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from sgtool.data.prepared import PreparedDataset
from sgtool.detect.config import DetectorConfig
from sgtool.detect.data import SplitImages, train_batches
from sgtool.detect.model import DetectorSpec
from sgtool.trainee import LoopSettings, Trainee


def lr_factor(step: int, total: int, warmup: int, elapsed: float, budget: float | None) -> float:
    """Linear warm-up, then cosine decay to 2% over the steps (or the time budget, whichever ends first)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if budget:
        progress = max(progress, elapsed / budget)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class DetectorTrainee(Trainee):
    """The detector as a trainable of the loop: name, config, model, phases, batches, loss, state."""

    name = "detector"

    def __init__(self, config: DetectorConfig, spec: DetectorSpec, prepared: PreparedDataset, seed: int,
                 model: torch.nn.Module, device: str) -> None:
        self.detector_config, self.spec, self.prepared, self.seed, self.model = config, spec, prepared, seed, model
        # AdamW, clipping, no per-epoch schedule (the lr follows the steps and the time budget: step_lr),
        # validation = the latest epoch
        self.config = LoopSettings(config.lr, config.epochs, config.grad_clip, config.weight_decay, "adamw",
                                   amp=str(device).startswith("cuda"))
        self.images = SplitImages(prepared.path, prepared.graphs.split_subset("train"))
        self.device, self.total = device, config.epochs  # optimiser steps (this rank's): set by the stage

    def step_lr(self, step: int, seconds: float) -> float:
        config = self.detector_config
        return config.lr * lr_factor(step, self.total, config.warmup_steps, seconds, config.time_budget)

    def phases(self) -> list[tuple[str, int]]:
        return [("train", self.detector_config.epochs)]

    def batches(self, split: Any, shuffle: bool, rng: np.random.Generator) -> Any:
        """One epoch: order and flips from a seed drawn from the loop's generator (part of last.pt)."""
        epoch_seed = int(rng.integers(2**31))
        return train_batches(self.images, self.detector_config.batch_size, epoch_seed, 0, self.detector_config.flip)

    def loss(self, batch: tuple[list[torch.Tensor], list[dict]]) -> dict[str, torch.Tensor]:
        images = [im.to(self.device, non_blocking=True) for im in batch[0]]
        targets = [{k: v.to(self.device) for k, v in t.items()} for t in batch[1]]
        parts = self.model(images, targets)
        return {"loss": sum(parts.values()), **parts}

    def state_dict(self) -> dict[str, Any]:
        vocab = self.prepared.vocab
        return {"spec": self.spec.as_dict(),
                "vocabulary": {"objects": list(vocab.objects), "predicates": list(vocab.predicates)},
                "dataset": self.prepared.name, "config": asdict(self.detector_config), "seed": self.seed,
                "model": self.model.state_dict()}
