"""The detector's training settings, stored in its run's config.yaml and checkpoints; each field declares
its help and range (the flags of `sgtool train-detector`)."""
from __future__ import annotations

from dataclasses import dataclass

from sgtool.config import option

ARCHS = ("tiny", "mobilenet-v3-fpn", "resnet50-fpn")


@dataclass
class DetectorConfig:
    arch: str = option("tiny", "Architecture (tiny: the CPU default, 128-px images).", choices=ARCHS)
    epochs: int = option(12, "Training epochs.", min=1)
    batch_size: int = option(8, "Images per batch.", min=1)
    lr: float = option(2e-3, "Peak AdamW learning rate.")
    weight_decay: float = option(1e-4, "AdamW weight decay.", min=0, flag=False)
    warmup_steps: int = option(100, "Linear warm-up steps of the learning rate.", min=0, flag=False)
    flip: bool = option(True, "Random horizontal flips while training.", flag=False)
    min_size: int | None = option(None, "Resize: shorter side (None: the architecture's default).", flag=False)
    max_size: int | None = option(None, "Resize: longer side at most (None: the architecture's default).", flag=False)
    weights: str | None = option(None, "Local weights file to start from; nothing is downloaded.")
    time_budget: float | None = option(None, "Seconds of training; the lr schedule follows the budget.")
    tiny_channels: int = option(32, "Channels of the tiny backbone.", min=1, flag=False)
    grad_clip: float = option(10.0, "Max gradient norm.", min=0, flag=False)
