"""What the one training loop (`engine/loop.py`) needs of a trainable that is not a relation head (the
detector, the auto-encoder): its loop settings under HeadConfig's names, and a base class for the parts of
the trainee interface they share (weights + seconds trained in the state, no generator of their own).
It sits below both detect/ and autoencoder/, so their trainees need no engine module to declare what they are
(the stages that train them, engine/train_detector.py and autoencoder/train.py, call the loop)."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch


@dataclasses.dataclass
class LoopSettings:
    """The one training loop's settings (HeadConfig's names) for a trainable that is not a relation head
    (the detector, the auto-encoder): what `engine/loop.py` reads from `trainee.config`."""

    lr: float
    epochs: int
    grad_clip: float = 0.0
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | adamw | sgd
    betas: tuple[float, float] = (0.9, 0.999)  # adam / adamw
    schedule: str = "none"  # a trainee with its own per-step lr sets it in a hook
    step_size: int = 0
    gamma: float = 1.0
    val_metric: str = "latest"
    val_every: int = 1
    deterministic: bool = False
    amp: bool = False
    max_steps: int = 0
    minutes: float = 0.0
    tensorboard: bool = False


class Trainee:
    """Shared by the detector's and the auto-encoder's trainees: `model`, `device` and `train_seconds` (every
    session's, so a time budget survives --resume) set by the subclass, which adds name, config, phases,
    batches, loss and state_dict (holding "model" and "train_seconds")."""

    model: torch.nn.Module
    device: str
    train_seconds: float = 0.0

    def begin_phase(self, phase: str) -> None:
        self.model.to(self.device)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.train_seconds = float(state["train_seconds"])

    def random_state(self) -> dict:
        return {}  # no generator of its own: the loop's checkpoint holds every RNG it draws from

    def set_random_state(self, state: dict) -> None:
        pass
