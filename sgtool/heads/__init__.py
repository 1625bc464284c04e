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
from sgtool.config import check_options, how_to_set, option
from sgtool.errors import SgtoolError
from sgtool.flags import flag, setting
from sgtool.kinds import RELATION_FLAGS, EntryPoint, RunKind, register_kind, unregister_kind
from sgtool.tasks import TASKS  # noqa: F401 (re-exported)

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("none", "step", "cosine")
FEATURE_MODES = ("auto", "spatial", "visual")


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
    # PredCls: the labels are the ground truth and must be kept. SGCls / SGDet: they are the object
    # source's guess, and a head with `labels_objects` returns its own labels and scores instead.
    labels_given: bool = True
    class_scores: np.ndarray | None = None  # (N, C + 1) the source's class distribution (SGCls / SGDet), column 0 = background

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
    """Settings every head accepts; a head extends it with its own (dataclass subclass, fields declared
    with `option(...)`: `sgtool train` makes a flag of each `flag=True` one, the rest take `--set`)."""

    epochs: int = option(10, "Training epochs (heads with nothing to optimise ignore it).", min=1)
    batch_size: int = option(8, "Images per batch.", min=1)
    # the training loop's settings (trainable heads; statistical heads ignore them)
    lr: float = option(1e-3, "Peak learning rate (positive).", flag=False)
    weight_decay: float = option(0.0, "Weight decay.", min=0, flag=False)
    optimizer: str = option("adam", "Optimiser (sgd: momentum 0.9).", choices=OPTIMIZERS, flag=False)
    schedule: str = option("none", "Learning-rate schedule, stepped once per epoch.", choices=SCHEDULES, flag=False)
    step_size: int = option(0, "step schedule: decay every N epochs (0: a third of the phase's epochs).", min=0, flag=False)
    gamma: float = option(0.1, "step schedule: decay factor, in (0, 1].", flag=False)
    grad_clip: float = option(0.0, "Max gradient norm (0: no clipping).", min=0, flag=False)
    val_metric: str = option("mR@50", "The best checkpoint is the epoch with the highest value of this metric.", flag=False)
    val_every: int = option(1, "Validate every N epochs (and always after a phase's last epoch).", min=1, flag=False)
    deterministic: bool = option(False, "CUDA: deterministic kernels only (CPU runs are deterministic anyway).", flag=False)
    amp: bool = option(False, "CUDA: bfloat16 mixed precision in the forward pass.", flag=False)
    max_steps: int = option(0, "Stop training after this many optimiser steps (0: no limit).", min=0, flag=False)
    minutes: float = option(0.0, "Stop training after this many minutes (0: no limit).", min=0, flag=False)
    tensorboard: bool = option(False, "Also write TensorBoard event files to <run>/tensorboard (needs tensorboard).",
                               flag=False)

    def validate(self) -> None:
        """What a declared range cannot say (the ranges themselves: `check_options`)."""
        checks = [
            (self.lr > 0, f"lr must be positive, not {self.lr}", f"Use {how_to_set(HeadConfig, 'lr', 0.001)}."),
            (0 < self.gamma <= 1, f"gamma must be in (0, 1], not {self.gamma}", f"Use {how_to_set(HeadConfig, 'gamma', 0.1)}."),
        ]
        for ok, message, hint in checks:
            if not ok:
                raise SgtoolError(f"The setting {message}.", hint)


@dataclass
class VisualHeadConfig(HeadConfig):
    """Settings of a head that can take a detector's ROI features (reldn, tensor, nodis, iwsl)."""

    features: str = option("auto", "auto: a detector's ROI features when one fits the dataset, else spatial.",
                           choices=FEATURE_MODES, flag=False)


class VisualInputs:
    """What a head that can take ROI features shares: `attach_visual` a source (the train stage does it,
    `engine/visual.py`), `wants_visual` when building a network, `uses_visual` once it is built."""

    name: ClassVar[str]
    config: VisualHeadConfig
    model: Any
    visual_source: Any = None  # a sgtool.features.source.VisualSource
    # True: features=auto on a dataset with images needs a detector (the head's paper model), and
    # the pixel-free variant is only chosen explicitly (features=spatial)
    pixels_by_default: ClassVar[bool] = False

    def attach_visual(self, source: Any) -> None:
        """Give the head ROI features (needed for features=visual, used by auto); a network built afterwards uses them."""
        self.visual_source = source

    def wants_visual(self) -> bool:
        """Whether a new network gets visual inputs (features=visual, or auto with a source attached)."""
        if self.config.features == "visual" and self.visual_source is None:
            raise SgtoolError(f"The {self.name} head was asked for visual features, but no detector features are available.",
                              f"Train a detector with `sgtool train-detector`, or use {setting('features', 'spatial')}.")
        return self.config.features != "spatial" and self.visual_source is not None

    def uses_visual(self) -> bool:
        """Whether the built network takes ROI vectors (then batches and predict need the source)."""
        if self.model is None:
            raise SgtoolError(f"The {self.name} head has no network yet.", "Train it or load its checkpoint first.")
        dim = int(self.model.visual_dim)
        if dim and self.visual_source is None:
            raise SgtoolError(f"This {self.name} network uses visual features, and no detector features are attached.",
                              "Run it where the detector run it was trained with is available (its run names it).")
        return bool(dim)


class RelationHead(ABC):
    """The interface of every relation head."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[HeadConfig]] = HeadConfig
    tasks: ClassVar[tuple[str, ...]] = TASKS
    trainable: ClassVar[bool] = True  # False: nothing to optimise, epochs are ignored
    # True: in SGCls / SGDet (objects.labels_given is False) `predict` returns the head's own object
    # labels and scores in its Predictions (the paper's model predicts them); PredCls keeps the GT labels.
    labels_objects: ClassVar[bool] = False
    # A head that labels objects and reads the detector's class distribution (objects.class_scores) in
    # SGCls gets the detector's classified GT boxes; one that labels them from the boxes alone (False)
    # gets the GT boxes without labels, and needs no detector for its objects.
    reads_class_scores: ClassVar[bool] = False

    def __init__(self, config: HeadConfig, num_object_classes: int, num_predicate_classes: int) -> None:
        self.config = config
        self.num_object_classes = num_object_classes
        self.num_predicate_classes = num_predicate_classes

    @abstractmethod
    def predict(self, objects: ObjectPredictions, reporter: Any = None) -> Predictions:
        """Score candidate pairs of the given objects; full predicate distribution per pair."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """What the head learned, as arrays, for a checkpoint."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""


class StatisticalHead(RelationHead):
    """A head with nothing to optimise: `fit` reads what it needs (counts, priors) in one pass."""

    trainable: ClassVar[bool] = False

    @abstractmethod
    def fit(self, data: TrainData, reporter: Any) -> list[dict]:
        """Learn from data.train; return log records (one dict per event)."""


class TrainableHead(RelationHead):
    """A head with a network: the engine's one training loop drives it through these methods.

    `build` makes the network (`self.model`, a torch.nn.Module) from the vocabulary and priors;
    `batches` yields training or validation batches of a split; `loss` returns a dict of scalar
    tensors whose "loss" entry is optimised (the others are logged). Heads never import the engine.
    A head trained in stages (e.g. a second phase with part of the network frozen) overrides
    `phases` and `begin_phase`; `batches` and `loss` then follow the current phase.
    """

    trainable: ClassVar[bool] = True
    model: Any = None

    def phases(self) -> list[tuple[str, int]]:
        """Training phases and their epochs, in order; the loop makes a fresh optimiser for each."""
        return [("train", self.config.epochs)]

    def begin_phase(self, phase: str) -> None:
        """Called before a phase's first epoch (and on resume): freeze or unfreeze parameters here."""

    def random_state(self) -> dict[str, Any]:
        """Every random generator the head owns (e.g. a torch.Generator's get_state()), for the
        checkpoint, so that a resumed run is exact; {} when it owns none."""
        return {}

    def set_random_state(self, state: dict[str, Any]) -> None:
        """Restore what `random_state` returned (called on resume, after `build`)."""

    @abstractmethod
    def build(self, data: TrainData) -> Any:
        """Create self.model (and whatever it needs from data.vocab / data.priors); return it."""

    @abstractmethod
    def batches(self, graphs: SceneGraphs, *, shuffle: bool, rng: np.random.Generator) -> Any:
        """Iterate over batches of the split for `loss` (PredCls ground truth, sampled pairs)."""

    @abstractmethod
    def loss(self, batch: Any) -> dict[str, Any]:
        """Scalar tensors; "loss" is minimised."""


# ---------------------------------------------------------------- registry

_REGISTRY: dict[str, type[RelationHead]] = {}


def register_head(name: str) -> Callable[[type[RelationHead]], type[RelationHead]]:
    """Register a head under `name`, and with it its run kind (trained, evaluated and run on images by the
    relation-head stages, named here by entry point so that heads never import the engine)."""
    def decorate(cls: type[RelationHead]) -> type[RelationHead]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"Two relation heads are registered as '{name}'.")
        cls.name = name
        _REGISTRY[name] = cls
        register_kind(relation_kind(cls))
        return cls

    return decorate


def unregister_head(name: str) -> None:
    """Forget a head and its kind (a test's toy head once the test is over)."""
    _REGISTRY.pop(name, None)
    unregister_kind(name)


def relation_kind(head: type[RelationHead]) -> RunKind:
    trainable = issubclass(head, TrainableHead)
    return RunKind(
        name=head.name, config=head.Config, summary=(head.__doc__ or "").strip().splitlines()[0],
        train=EntryPoint("sgtool.engine.train:train_request"), show_train=EntryPoint("sgtool.engine.train:show_train"),
        evaluate=EntryPoint("sgtool.eval.run_eval:evaluate_run"), show_eval=EntryPoint("sgtool.eval.report:show_eval"),
        resume=EntryPoint("sgtool.engine.train:resume_train") if trainable else None,
        retask=EntryPoint("sgtool.engine.train:retask_request"),
        predict=EntryPoint("sgtool.engine.predict:predict_images"),
        run_flags=RELATION_FLAGS, labels_objects=bool(getattr(head, "labels_objects", False)))


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
                          f"Pass one of them to {flag('head')}.")
    return _REGISTRY[name]


def make_config(head: type[RelationHead], settings: dict) -> HeadConfig:
    """The head's config from a settings dict (names checked, types coerced), validated."""
    from sgtool.config import build

    config = build(head.Config, settings)
    config.validate()
    check_options(config)
    return config


def config_dict(config: HeadConfig) -> dict:
    return dataclasses.asdict(config)
