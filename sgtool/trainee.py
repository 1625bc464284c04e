"""What the one training loop (`engine/loop.py`) needs of a trainable that is not a relation head (the
detector, the auto-encoder): its loop settings under HeadConfig's names, and a base class for the parts of
the trainee interface they share (the weights in the state, no generator of their own).
It sits below both detect/ and autoencoder/, so a trainee declares what it is without the engine; the stages
that train them (engine/train_detector.py, autoencoder/train.py) call the loop, and autoencoder/trainee.py
imports the engine's hooks for its clock (`AEClock`)."""
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
    schedule: str = "none"  # a trainee with its own per-step lr defines `step_lr(step, seconds)` instead
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
    """Shared by the detector's and the auto-encoder's trainees: `model` and `device` set by the subclass, which
    adds name, config, phases, batches, loss, step_lr and state_dict (holding "model"). The seconds trained are
    the clock hook's state, not the trainee's."""

    model: torch.nn.Module
    device: str

    def begin_phase(self, phase: str) -> None:
        self.model.to(self.device)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])

    def random_state(self) -> dict:
        return {}  # no generator of its own: the loop's checkpoint holds every RNG it draws from

    def set_random_state(self, state: dict) -> None:
        pass
