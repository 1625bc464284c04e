"""Relation heads: one file per head, found by name through the registry.

A head is a class registered with `@register_head("name")` in its own module of this package.
Every head follows `RelationHead`: `fit` learns from the training split (the frequency baseline
just reads the priors), `predict` scores candidate pairs of given objects and returns
`Predictions`, and `state_dict` / `load_state_dict` move what it learned to and from a checkpoint.

Heads receive objects (boxes, labels, scores) from an `ObjectSource`: ground truth in PredCls,
an object classifier in SGCls and a detector in SGDet, so a head never cares where they came from.
"""
from __future__ import annotations

import dataclasses
import importlib
from abc import ABC, abstractmethod
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from sgtool.data.graphs import SceneGraphs
from sgtool.data.predictions import Predictions
from sgtool.data.sgg_h5 import Vocabulary
from sgtool.errors import SgtoolError

TASKS = ("predcls", "sgcls", "sgdet")


# ---------------------------------------------------------------- what heads receive

@dataclass
class ObjectPredictions:
    """Objects of many images (ragged): the boxes a head relates, with labels and scores."""

    image_ids: np.ndarray  # (I,) int64
    box_offsets: np.ndarray  # (I + 1,) int64
    boxes: np.ndarray  # (N, 4) float32 xyxy pixels
    labels: np.ndarray  # (N,) int64, 1-based
    scores: np.ndarray  # (N,) float32
    detected: bool = False  # from a detector (SGDet): capped at the head's max boxes per image

    @property
    def num_images(self) -> int:
        return int(len(self.image_ids))


class ObjectSource(Protocol):
    """Where a task's objects come from: `source(graphs) -> ObjectPredictions`."""

    def __call__(self, graphs: SceneGraphs) -> ObjectPredictions: ...


def gt_objects(graphs: SceneGraphs) -> ObjectPredictions:
    """PredCls: the ground-truth boxes and labels, each with score 1."""
    return ObjectPredictions(graphs.image_ids, graphs.box_offsets, graphs.boxes, graphs.labels,
                             np.ones(len(graphs.labels), dtype=np.float32))


@dataclass
class TrainData:
    """What `fit` gets: the training split, the validation split, the vocabulary and the priors."""

    train: SceneGraphs
    val: SceneGraphs
    vocab: Vocabulary
    priors: dict[str, np.ndarray]
    device: str = "cpu"
    seed: int = 0


@dataclass
class HeadConfig:
    """Settings every head accepts; a head extends it with its own (dataclass subclass)."""

    epochs: int = 10
    batch_size: int = 8

    def validate(self) -> None:
        if self.epochs < 1:
            raise SgtoolError(f"--epochs must be at least 1, not {self.epochs}.", "Pass a positive number of epochs.")
        if self.batch_size < 1:
            raise SgtoolError(f"--batch-size must be at least 1, not {self.batch_size}.", "Pass a positive batch size.")


class RelationHead(ABC):
    """The interface of every relation head."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[HeadConfig]] = HeadConfig
    tasks: ClassVar[tuple[str, ...]] = TASKS
    trainable: ClassVar[bool] = True  # False: nothing to optimise, epochs are ignored

    def __init__(self, config: HeadConfig, num_object_classes: int, num_predicate_classes: int) -> None:
        self.config = config
        self.num_object_classes = num_object_classes
        self.num_predicate_classes = num_predicate_classes

    @abstractmethod
    def fit(self, data: TrainData, reporter: Any) -> list[dict]:
        """Learn from data.train (validate on data.val); return log records (one dict per step/epoch)."""

    @abstractmethod
    def predict(self, objects: ObjectPredictions, reporter: Any = None) -> Predictions:
        """Score candidate pairs of the given objects; full predicate distribution per pair."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """What the head learned, as arrays, for a checkpoint."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""


# ---------------------------------------------------------------- registry

_REGISTRY: dict[str, type[RelationHead]] = {}


def register_head(name: str) -> Callable[[type[RelationHead]], type[RelationHead]]:
    def decorate(cls: type[RelationHead]) -> type[RelationHead]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"Two relation heads are registered as '{name}'.")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _head_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def available_heads() -> list[str]:
    """Names of every registered head (imports each head module of this package once)."""
    for module in _head_modules():
        importlib.import_module(f"{__name__}.{module}")
    return sorted(_REGISTRY)


def get_head(name: str) -> type[RelationHead]:
    if name not in _REGISTRY and name in _head_modules():
        importlib.import_module(f"{__name__}.{name}")
    if name not in _REGISTRY:
        raise SgtoolError(f"Unknown relation head '{name}' (known heads: {', '.join(available_heads())}).",
                          "Pass one of them to --head.")
    return _REGISTRY[name]


def make_config(head: type[RelationHead], settings: dict) -> HeadConfig:
    """The head's config from a settings dict (names checked, types coerced), validated."""
    from sgtool.config import build

    config = build(head.Config, settings)
    config.validate()
    return config


def config_dict(config: HeadConfig) -> dict:
    return dataclasses.asdict(config)
