"""Layers more than one head builds from."""
from __future__ import annotations

from torch import nn


def two_hidden_layer_mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """Two hidden fully connected ReLU layers, then the output layer (the tensor head's branches, RelDN's
    spatial and visual modules)."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, outputs))
