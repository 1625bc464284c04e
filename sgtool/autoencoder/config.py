"""The auto-encoder's settings: each field declares its help and range (`sgtool train --head ae --help`).

The defaults are the paper's (Lu & Dubbelman, "Image-Graph-Image Translation via Auto-Encoding"):
the Eq. 5 auxiliary loss, the image-only edge classifier, the MSE + matched cross-entropy baseline with
its attention frozen after 2 epochs, Adam beta = (0.6, 0.9), batch 128, 30 epochs with the learning
rate / 10 for the last third. The drop is a fraction of the training, so a step budget
(`--set steps=N`, the CPU scaling) keeps its shape. Today's earlier forms are named options.
"""
from __future__ import annotations

from dataclasses import dataclass

from sgtool.autoencoder.losses import AUX_LOSSES, BASELINES, RECON_LOSSES
from sgtool.autoencoder.model import EDGE_INPUTS, ENCODERS
from sgtool.config import option
from sgtool.errors import SgtoolError
from sgtool.flags import flag, setting

PAPER_LR = {"ae": 5e-4, "supervised": 3e-4}  # the paper's initial learning rates


@dataclass
class AEConfig:
    max_nodes: int = option(4, "Node slots of the auto-encoder.", min=2, max=16)
    supervised: bool = option(False, "Train the encoder on ground truth (the baseline).")
    seeds: int = option(1, f"Train this many seeds ({flag('seed')}, +1, ...) into one run.", min=1)
    epochs: int = option(30, f"Training epochs (the paper: 30; its baseline 15), unless {setting('steps', 'N')}.", min=1)
    steps: int = option(0, "Optimiser steps per seed; the primary budget (0: the epochs decide).", min=0, flag=False)
    batch_size: int = option(128, "Images per batch (the paper: 128; at least 2: batch norm).", min=2)
    lr: float = option(0.0, "Adam learning rate (0: the paper's, 5e-4, or 3e-4 for the baseline).", min=0, flag=False)
    beta1: float = option(0.6, "Adam beta1 (the paper: 0.6).", min=0, max=0.999, flag=False)
    beta2: float = option(0.9, "Adam beta2 (the paper: 0.9).", min=0, max=0.9999, flag=False)
    lr_drop_at: float = option(2 / 3, "Fraction of training after which the learning rate is divided by 10 "
                               "(the paper: 20 of 30 epochs; 1: never).", min=0, max=1, flag=False)
    minutes: float = option(0.0, "A time cap per seed, in minutes (0: none); steps or epochs end training first "
                            "otherwise.", min=0, flag=False)
    plateau_restarts: int = option(0, "Retrain a seed that ends on the blank-drawing plateau with the next unused "
                                   "seed, at most N times.", min=0, flag=False)
    train_images: int = option(0, "Use only the first N training images (0: all).", min=0, flag=False)
    resolution: int = option(64, "The network's working resolution (the canvas is average-pooled to it).",
                             choices=(64, 128), flag=False)
    width: int = option(24, "Encoder channels.", min=1, flag=False)
    encoder: str = option("coordconv-dilated", "Node encoder: ours (CoordConv channels, dilated blocks) or the "
                          "same without either (plain).", choices=ENCODERS, flag=False)
    refiner_sharpen: bool = option(True, "Refiner: add the fixed sharpening path sigmoid(8 (coarse - 0.5)) that "
                                   "its layers correct (ours), or not (the paper's three layers alone).", flag=False)
    aux: str = option("paper", "Auxiliary loss: Eq. 5 on max-normalised maps (paper) or the pairwise shared "
                      "mass (overlap).", choices=AUX_LOSSES, flag=False)
    aux_weight: float = option(1.0, "Lambda of the auxiliary loss (0: off).", min=0, flag=False)
    edge_input: str = option("image", "What the edge classifier pools: the image only (the paper) or the image "
                             "and the candidate segment (image+segment).", choices=EDGE_INPUTS, flag=False)
    baseline: str = option("paper", "Supervised loss: MSE heat map + matched cross entropy, attention frozen "
                           "(paper: the raw channel sum vs heat_scale x Gaussians of heat_sigma), or KL heat map + L1 coordinates + cross entropy (strong).",
                           choices=BASELINES, flag=False)
    heat_sigma: float = option(1.0, "Paper baseline: sigma of the ground-truth Gaussians, in attention-map cells "
                               "(chosen on validation: docs/methods/ae.md).", min=0.1, flag=False)
    heat_scale: float = option(4.0, "Paper baseline: the peak of each ground-truth Gaussian (the raw channel sum "
                               "of the attention is compared with it; chosen on validation with heat_sigma).", min=0.0,
                               flag=False)
    freeze_attention_epochs: float = option(2.0, "Paper baseline: epochs of node-attention training, after which "
                                            "it is frozen and only the edge classifier learns.", min=0, flag=False)
    recon: str = option("msssim", "Reconstruction loss.", choices=RECON_LOSSES, flag=False)
    loss_on: str = option("refined", "Which drawing the loss compares.", choices=("refined", "coarse"), flag=False)
    sigma_start: float = option(1.5, "Line template profile at the start, pixels at the working resolution.", flag=False)
    sigma_end: float = option(0.7, "Line template profile at the end.", flag=False)
    log_every: int = option(25, "One log record every N steps.", min=1, flag=False)
    threads: int = option(0, "torch CPU threads (0: torch's choice).", min=0, flag=False)

    def validate(self) -> None:
        """What a declared range cannot say (the ranges themselves: `check_options`)."""
        if not (self.sigma_start > 0 and self.sigma_end > 0):
            raise SgtoolError("sigma_start and sigma_end must be positive.", "Try 1.5 and 0.7.")

    @property
    def learning_rate(self) -> float:
        return self.lr or PAPER_LR["supervised" if self.supervised else "ae"]
