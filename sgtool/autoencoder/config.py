"""The auto-encoder's settings: each field declares its help and range (`sgtool train --head ae --help`)."""
from __future__ import annotations

from dataclasses import dataclass

from sgtool.autoencoder.losses import RECON_LOSSES
from sgtool.config import option
from sgtool.errors import SgtoolError


@dataclass
class AEConfig:
    max_nodes: int = option(4, "Node slots of the auto-encoder.", min=2, max=16)
    supervised: bool = option(False, "Train the encoder on ground truth (the baseline).")
    seeds: int = option(1, "Train this many seeds (--seed, +1, ...) into one run.", min=1)
    epochs: int = option(10, "Training epochs.", min=1)
    batch_size: int = option(32, "Images per batch (at least 2: batch norm).", min=2)
    lr: float = option(2e-3, "Adam learning rate (positive).", flag=False)
    minutes: float = option(0.0, "Stop after this many minutes of training (0: no budget).", min=0, flag=False)
    train_images: int = option(0, "Use only the first N training images (0: all).", min=0, flag=False)
    resolution: int = option(64, "The network's working resolution (the canvas is average-pooled to it).",
                             choices=(64, 128), flag=False)
    width: int = option(24, "Encoder channels.", min=1, flag=False)
    aux_weight: float = option(1.0, "Lambda of the auxiliary overlap loss (0: off).", min=0, flag=False)
    recon: str = option("msssim", "Reconstruction loss.", choices=RECON_LOSSES, flag=False)
    loss_on: str = option("refined", "Which drawing the loss compares.", choices=("refined", "coarse"), flag=False)
    sigma_start: float = option(1.5, "Line template profile at the start, pixels at the working resolution.", flag=False)
    sigma_end: float = option(0.7, "Line template profile at the end.", flag=False)
    log_every: int = option(25, "One log record every N steps.", min=1, flag=False)
    threads: int = option(0, "torch CPU threads (0: torch's choice).", min=0, flag=False)

    def validate(self) -> None:
        """What a declared range cannot say (the ranges themselves: `check_options`)."""
        if not self.lr > 0:
            raise SgtoolError(f"lr must be positive, not {self.lr}.", "Try --set lr=0.002.")
        if not (self.sigma_start > 0 and self.sigma_end > 0):
            raise SgtoolError("sigma_start and sigma_end must be positive.", "Try 1.5 and 0.7.")
