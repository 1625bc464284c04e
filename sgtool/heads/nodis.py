"""NODIS: neural ODE layers for scene graphs.

Paper: Yuren Cong, Hanno Ackermann, Wentong Liao, Michael Ying Yang and Bodo Rosenhahn,
"NODIS: Neural Ordinary Differential Scene Understanding", ECCV 2020 (code: github.com/yrcong/NODIS).
docs/methods/nodis.md maps each equation to the code and lists every deviation.

Objects (eq. 7):  x_u = FC([visual ROI vector of the box (when the head has visual features), box geometry,
                            class distribution of the object source])
          class distribution: PredCls the one-hot GT label; SGCls the detector's box classifier
          (`ObjectPredictions.class_scores`); SGDet the detection's score on its label; training: the frozen
          detector's distributions of the GT boxes (`DetectorClassDistributions`, as the official code), or,
          with no detector attached (spatial features), the GT one-hot corrupted (`label_noise`).
          O-ODE: dh/dt = BiLSTM(h) over each image's objects in random order;  h_u = odeint(O-ODE, x_u, [0, t_end])
          object logits = Linear(h_u) (+ log of the class distribution: `detector_skip`, on): the labels and
          scores returned in SGCls / SGDet (`labels_objects`).
Pairs (eq. 8):    visual part   v = [ROI(s), ROI(o), ROI(union)] (when visual) + box geometry of s, o, union
                                    + RelDN spatial (22) + conv(2 x S x S pair masks)
                  semantic part e = [emb(l_s), emb(l_o)] (learned class embeddings: the language prior),
                                    l = the O-ODE classifier's labels in SGCls / SGDet, the GT labels in
                                    PredCls and in training (the paper's teacher forcing)
          front end: fc   FC(v) || FC(e) (two separate layers)
                     gcn  ReLU(A [v, e] W), A = 0.8 on the diagonal, 0.2 spread over the row (each image's pairs)
                     lstm BiLSTM(v) || BiLSTM(e) over each image's pairs in random order
          P-ODE: dp/dt = BiLSTM(p) over each image's pairs in random order;  p = odeint(P-ODE, front_end, [0, t_end])
          logits = Linear(ReLU(Linear(p))) (+ log p(predicate | l_s, l_o) of the training split if `freq_bias`, off)
Both ODE functions restart their LSTM from a zero state at every evaluation: f(t, x) depends on x alone.
`ode`: none | object | pair | both: which ODEs run; a switched-off ODE is the identity (h = x).
Both ODEs: dopri5, atol = rtol = 0.01 (torchdiffeq); `adjoint` uses odeint_adjoint. All images of a batch are
solved as one state (padded, packed sequences); `predict` writes the image-weighted mean NFE of each ODE
into the predictions' meta.
Loss: cross entropy on predicates + `object_loss` x cross entropy on objects (GT targets).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, ClassVar

import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sgtool.config import check_options, how_to_set, option
from sgtool.data.graphs import SceneGraphs
from sgtool.data.predictions import Predictions
from sgtool.errors import SgtoolError
from sgtool.features.spatial import SPATIAL_DIM, pair_masks
from sgtool.flags import flag
from sgtool.heads import ObjectPredictions, TrainableHead, TrainData, VisualHeadConfig, register_head
from sgtool.heads._pairs import cap_boxes
from sgtool.heads._relbatch import (
    OBJECT_GEOMETRY_DIM, NetworkHelpers, RelBatch, VisualSource, assemble, predict_batches, train_batches,
)

FRONT_ENDS = ("fc", "gcn", "lstm")
SKIP_FLOOR = 1e-4  # the smallest class probability the detector skip passes on (log: -9.2)
ODE_MODES = ("none", "object", "pair", "both")


@dataclass
class NodisConfig(VisualHeadConfig):
    t_end: float = option(1.5, "integrate both ODEs over [0, t_end] (the paper: 1.5)")
    atol: float = option(0.01, "dopri5 absolute tolerance", flag=False)
    rtol: float = option(0.01, "dopri5 relative tolerance", flag=False)
    front_end: str = option("fc", "P-ODE front end: fc (two FC layers), gcn (fixed adjacency), lstm (pairs in random order)",
                            choices=FRONT_ENDS)
    ode: str = option("both", "which neural ODEs run (a switched-off one is the identity): none, object, pair or both",
                      choices=ODE_MODES)
    freq_bias: bool = option(False, "add the training split's log frequency prior log p(predicate | subject, object class) "
                                    "to the predicate logits (neither the paper nor its code has it)", flag=False)
    label_noise: float = option(0.3, "training without a detector only (spatial features): chance that an object's "
                                     "stand-in class distribution peaks on a wrong class", min=0.0, max=1.0, flag=False)
    adjoint: bool = option(False, "solve with torchdiffeq.odeint_adjoint (memory O(1) in the solver's depth)", flag=False)
    hidden: int = option(128, "width of the object state and of each half of the pair state", min=1, flag=False)
    embed: int = option(32, "class embedding size (the semantic vectors)", min=1, flag=False)
    mask_size: int = option(32, "side of the 2 x S x S pair masks fed to the spatial conv", min=4, flag=False)
    bg_ratio: float = option(3.0, "training: unannotated pairs sampled per annotated pair of an image", min=0.0, flag=False)
    object_loss: float = option(1.0, "weight of the object cross entropy", min=0.0, flag=False)
    detector_skip: bool = option(True, "add log of the object source's class distribution to the object logits: the "
                                       "O-ODE refines the detector's scores instead of relearning them", flag=False)
    max_boxes: int = option(64, "SGDet: detections kept per image (highest scores) before pairing (the official "
                                "code's max_per_img)", min=2, flag=False)

    def validate(self) -> None:
        super().validate()
        checks = [
            (self.t_end > 0, f"{flag('t_end')} must be positive, not {self.t_end}.", f"Use e.g. {how_to_set(NodisConfig, 't_end', 1.5)}."),
            (self.atol > 0 and self.rtol > 0, f"atol and rtol must be positive, not {self.atol} and {self.rtol}.",
             f"Use {how_to_set(NodisConfig, 'atol', 0.01)} {how_to_set(NodisConfig, 'rtol', 0.01)}."),
        ]
        for ok, message, hint in checks:
            if not ok:
                raise SgtoolError(message, hint)
        check_options(self)

    @property
    def object_ode_on(self) -> bool:
        return self.ode in ("object", "both")

    @property
    def pair_ode_on(self) -> bool:
        return self.ode in ("pair", "both")


# ---------------------------------------------------------------- object class distributions

def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), num_classes), np.float32)
    out[np.arange(len(labels)), labels] = 1
    return out


def noisy_distributions(labels: np.ndarray, num_classes: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Training input in place of a detector's class distribution: with chance `noise` the peak sits on
    a wrong foreground class; its mass is drawn from U(0.5, 1), the rest spread over the other columns
    with Dirichlet(1) weights. Never the clean one-hot of the GT label (unless noise = 0 and mass 1)."""
    n = len(labels)
    wrong = (labels - 1 + rng.integers(1, max(num_classes - 1, 2), n)) % max(num_classes - 1, 1) + 1
    peak = np.where(rng.random(n) < noise, wrong, labels)
    mass = rng.uniform(0.5, 1.0, n)
    rest = rng.gamma(1.0, size=(n, num_classes))
    rest[np.arange(n), peak] = 0
    rest = rest / np.maximum(rest.sum(1, keepdims=True), 1e-12) * (1 - mass)[:, None]
    rest[np.arange(n), peak] = mass
    return rest.astype(np.float32)


def source_distributions(objects: ObjectPredictions, num_classes: int) -> np.ndarray:
    """(N, C) the O-ODE's class input at inference: one-hot GT (PredCls), the detector's box classifier
    (SGCls), or the detection's score on its label and the rest on background (SGDet)."""
    if objects.labels_given:
        return one_hot(objects.labels, num_classes)
    if objects.class_scores is not None:
        scores = np.asarray(objects.class_scores, np.float32)
        if scores.shape != (len(objects.labels), num_classes):
            raise SgtoolError(f"The object source gives {scores.shape[1]}-column class scores; this NODIS head "
                              f"knows {num_classes} classes.", "Use a detector trained on this dataset.")
        return scores
    out = one_hot(objects.labels, num_classes) * objects.scores[:, None]
    out[:, 0] += 1 - objects.scores
    return out


class DetectorClassDistributions:
    """The frozen detector's class distribution of given boxes (softmax of its box classifier, column 0 =
    background): the O-ODE's training input, as in the official code. Images come by id from `image`
    (the visual source's); results are kept per (image id, boxes), so each image is classified once."""

    def __init__(self, detector: Any, image: Callable[[int], torch.Tensor]) -> None:
        self.detector, self.image = detector, image
        self.cache: dict[tuple[int, bytes], np.ndarray] = {}

    def __call__(self, image_ids: np.ndarray, box_offsets: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes, np.float32)
        keys = [(int(i), boxes[a:b].tobytes()) for i, a, b in zip(image_ids, box_offsets[:-1], box_offsets[1:])]
        missing = [n for n, key in enumerate(keys) if key not in self.cache]
        if missing:
            probs = self.detector.classify_boxes(
                [self.image(keys[n][0]) for n in missing],
                [torch.from_numpy(boxes[box_offsets[n]:box_offsets[n + 1]]) for n in missing])
            for n, p in zip(missing, probs):
                self.cache[keys[n]] = p.numpy().astype(np.float32)
        return np.concatenate([self.cache[key] for key in keys]) if keys else np.zeros((0, 0), np.float32)


# ---------------------------------------------------------------- per-image sequences

class ImageSequences:
    """The rows of a batch (objects or pairs) as one sequence per image, in a given random order:
    `run(lstm, x)` packs a flat (R, D) tensor into padded per-image sequences, runs the LSTM and
    returns its outputs in the rows' original order. Images never see each other's rows."""

    def __init__(self, image: torch.Tensor, num_images: int, order_noise: torch.Tensor) -> None:
        order = np.lexsort((order_noise.cpu().numpy(), image.cpu().numpy()))
        self.order = torch.from_numpy(order).to(image.device)
        sorted_image = image[self.order]
        lengths = torch.bincount(sorted_image, minlength=num_images)
        self.position = torch.arange(len(image), device=image.device) - (torch.cumsum(lengths, 0) - lengths)[sorted_image]
        used = lengths > 0
        self.sequence = (torch.cumsum(used.long(), 0) - 1)[sorted_image]  # index among the non-empty images
        self.lengths = lengths[used].cpu()
        self.max_length = int(self.lengths.max()) if len(self.lengths) else 0

    def run(self, lstm: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
        """The (bidirectional) LSTM over each image's rows from a zero state; (R, output size)."""
        width = lstm.hidden_size * (2 if lstm.bidirectional else 1)
        if len(x) == 0:
            return x.new_zeros(0, width)
        padded = x.new_zeros(len(self.lengths), self.max_length, x.shape[1])
        padded[self.sequence, self.position] = x[self.order]
        packed = nn.utils.rnn.pack_padded_sequence(padded, self.lengths, batch_first=True, enforce_sorted=False)
        out, _ = nn.utils.rnn.pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=self.max_length)
        result = x.new_empty(len(x), width)
        result[self.order] = out[self.sequence, self.position]
        return result


# ---------------------------------------------------------------- ODE functions and the solve

class CountedODE(nn.Module, ABC):
    """An ODE right-hand side that counts its evaluations (nfe)."""

    def __init__(self) -> None:
        super().__init__()
        self.nfe = 0

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.derivative(x)

    @abstractmethod
    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """dx/dt at x."""


class SequenceODE(CountedODE):
    """dx/dt = BiLSTM(x): a bidirectional LSTM over each image's sequence (objects for the O-ODE, pairs
    for the P-ODE), from a zero state at every evaluation, so f depends on x alone (autonomous).
    `sequences` (an ImageSequences) is set once per forward pass; the state width stays `dim` (even)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError("SequenceODE needs an even state width (two LSTM directions)")
        self.lstm = nn.LSTM(dim, dim // 2, batch_first=True, bidirectional=True)
        self.sequences: ImageSequences | None = None

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        if self.sequences is None:
            raise RuntimeError("SequenceODE: set `sequences` before solving")
        return self.sequences.run(self.lstm, x)


def solve(func: CountedODE, x0: torch.Tensor, t_end: float, atol: float, rtol: float,
          adjoint: bool) -> tuple[torch.Tensor, int]:
    """x(t_end) from x(0) = x0 with dopri5, and the forward solve's number of function evaluations."""
    import torchdiffeq

    if len(x0) == 0:
        return x0, 0
    t = torch.tensor([0.0, t_end], dtype=x0.dtype, device=x0.device)
    func.nfe = 0
    if adjoint:
        out = torchdiffeq.odeint_adjoint(func, x0, t, rtol=rtol, atol=atol, method="dopri5",
                                         adjoint_params=tuple(func.parameters()))
    else:
        out = torchdiffeq.odeint(func, x0, t, rtol=rtol, atol=atol, method="dopri5")
    return out[-1], func.nfe


# ---------------------------------------------------------------- front ends of the P-ODE

class FrontEnd(nn.Module):
    """The paper's three pre-processings of (visual, semantic) pair vectors; output 2 x dim."""

    def __init__(self, kind: str, visual_in: int, semantic_in: int, dim: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "fc":
            self.visual = nn.Sequential(nn.Linear(visual_in, dim), nn.ReLU())
            self.semantic = nn.Sequential(nn.Linear(semantic_in, dim), nn.ReLU())
            self.out_dim = 2 * dim
        elif kind == "gcn":
            self.weight = nn.Linear(visual_in + semantic_in, 2 * dim)
            self.out_dim = 2 * dim
        else:
            half = (dim + 1) // 2
            self.visual = nn.LSTM(visual_in, half, batch_first=True, bidirectional=True)
            self.semantic = nn.LSTM(semantic_in, half, batch_first=True, bidirectional=True)
            self.out_dim = 4 * half

    def forward(self, visual: torch.Tensor, semantic: torch.Tensor, pair_image: torch.Tensor, num_images: int,
                sequences: ImageSequences) -> torch.Tensor:
        if self.kind == "fc":
            return torch.cat([self.visual(visual), self.semantic(semantic)], 1)
        if self.kind == "gcn":
            return F.relu(fixed_adjacency_product(self.weight(torch.cat([visual, semantic], 1)), pair_image, num_images))
        return torch.cat([sequences.run(self.visual, visual), sequences.run(self.semantic, semantic)], 1)


def fixed_adjacency_product(x: torch.Tensor, pair_image: torch.Tensor, num_images: int) -> torch.Tensor:
    """A x per image: 0.8 on the diagonal, 0.2 spread evenly over the row's other pairs (1.0 for a lone pair)."""
    total = x.new_zeros(num_images, x.shape[1]).index_add_(0, pair_image, x)[pair_image]
    count = torch.bincount(pair_image, minlength=num_images).to(x.dtype)[pair_image][:, None]
    others = (total - x) / (count - 1).clamp(min=1)
    return torch.where(count > 1, 0.8 * x + 0.2 * others, x)


# ---------------------------------------------------------------- the network

class NodisNet(nn.Module):
    def __init__(self, config: NodisConfig, num_object_classes: int, num_predicate_classes: int,
                 visual_dim: int = 0) -> None:
        super().__init__()
        h, e, c = config.hidden, config.embed, num_object_classes
        self.config, self.visual_dim = config, visual_dim
        state = h + h % 2  # the O-ODE's BiLSTM needs an even width
        self.object_in = nn.Sequential(nn.Linear(visual_dim + OBJECT_GEOMETRY_DIM + c, state), nn.ReLU())
        self.object_ode = SequenceODE(state)
        self.object_classifier = nn.Linear(state, c)
        self.embedding = nn.Embedding(c, e)
        self.mask_conv = nn.Sequential(
            nn.Conv2d(2, 8, 5, stride=2, padding=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, e), nn.ReLU())
        visual_in = 3 * visual_dim + 3 * OBJECT_GEOMETRY_DIM + SPATIAL_DIM + e
        self.front_end = FrontEnd(config.front_end, visual_in, 2 * e, h)
        self.pair_ode = SequenceODE(self.front_end.out_dim)
        self.predicate_classifier = nn.Sequential(nn.Linear(self.front_end.out_dim, h), nn.ReLU(),
                                                  nn.Linear(h, num_predicate_classes))
        self.register_buffer("log_freq", torch.zeros(c, c, num_predicate_classes))
        self.solve_seconds = [0.0, 0.0]  # wall-clock of the O-ODE's and the P-ODE's solves since the last reset

    def _solve(self, func: CountedODE, x0: torch.Tensor, on: bool) -> tuple[torch.Tensor, int]:
        if not on:
            return x0, 0  # the identity bypass of a switched-off ODE
        c = self.config
        started = time.perf_counter()
        out = solve(func, x0, c.t_end, c.atol, c.rtol, c.adjoint)
        self.solve_seconds[func is self.pair_ode] += time.perf_counter() - started  # never in numbers that repeat
        return out

    def objects(self, batch: RelBatch) -> tuple[torch.Tensor, int]:
        """Object logits from [ROI vector, geometry, class distribution] through the O-ODE, and its NFE."""
        parts = [batch.visual["objects"]] if self.visual_dim else []
        parts += [batch.object_geometry(), batch.extra["class_dist"]]
        self.object_ode.sequences = ImageSequences(batch.box_image, batch.num_images, batch.extra["object_order"])
        h, nfe = self._solve(self.object_ode, self.object_in(torch.cat(parts, 1)), self.config.object_ode_on)
        logits = self.object_classifier(h)
        if self.config.detector_skip:
            logits = logits + torch.log(batch.extra["class_dist"].clamp_min(SKIP_FLOOR))
        return logits, nfe

    def pair_inputs(self, batch: RelBatch, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (visual, semantic) vectors of each pair."""
        s, o = batch.pairs[:, 0], batch.pairs[:, 1]
        boxes = batch.boxes.cpu()
        masks = pair_masks(boxes[s.cpu()], boxes[o.cpu()], size=self.config.mask_size).to(batch.device)
        geometry = batch.object_geometry()
        visual = [batch.visual["objects"][s], batch.visual["objects"][o], batch.visual["union"]] if self.visual_dim else []
        visual += [geometry[s], geometry[o], batch.union_geometry(), batch.pair_geometry(), self.mask_conv(masks)]
        return torch.cat(visual, 1), torch.cat([self.embedding(labels[s]), self.embedding(labels[o])], 1)

    def forward(self, batch: RelBatch, own_labels: bool = False) -> dict[str, Any]:
        """own_labels: the pairs embed the O-ODE classifier's labels (SGCls / SGDet inference), else batch.labels."""
        object_logits, object_nfe = self.objects(batch)
        labels = object_logits[:, 1:].argmax(1) + 1 if own_labels else batch.labels
        visual, semantic = self.pair_inputs(batch, labels)
        sequences = ImageSequences(batch.pair_image, batch.num_images, batch.extra["order_noise"])
        self.pair_ode.sequences = sequences
        f = self.front_end(visual, semantic, batch.pair_image, batch.num_images, sequences)
        p, pair_nfe = self._solve(self.pair_ode, f, self.config.pair_ode_on)
        logits = self.predicate_classifier(p)
        if self.config.freq_bias:
            logits = logits + self.log_freq[labels[batch.pairs[:, 0]], labels[batch.pairs[:, 1]]]
        return {"object_logits": object_logits, "labels": labels, "predicate_logits": logits,
                "object_nfe": object_nfe, "pair_nfe": pair_nfe, "pair_state": p}


# ---------------------------------------------------------------- the head

@register_head("nodis")
class NodisHead(NetworkHelpers, TrainableHead):
    """NODIS (Cong et al., ECCV 2020): object and pair features refined by neural ODEs (module docstring)."""

    Config = NodisConfig
    labels_objects: ClassVar[bool] = True
    reads_class_scores: ClassVar[bool] = True  # the O-ODE's input: the detector's class distribution

    def __init__(self, config: NodisConfig, num_object_classes: int, num_predicate_classes: int) -> None:
        super().__init__(config, num_object_classes, num_predicate_classes)
        self.model: NodisNet | None = None
        self.visual_source: VisualSource | None = None  # set by whoever has a detector (SGDet / visual runs)
        self.predict_stats: dict[str, float] = {}
        # (image ids, box offsets, boxes) -> (N, C) class distributions for the O-ODE's training input; by
        # default the frozen detector behind the visual source; None: corrupted GT one-hots (no detector)
        self.class_source: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None

    def build(self, data: TrainData) -> NodisNet:
        torch.manual_seed(data.seed)
        dim = int(self.visual_source.dim) if self.wants_visual() else 0
        self.model = NodisNet(self.config, self.num_object_classes, self.num_predicate_classes, dim).to(data.device)
        self.model.log_freq.copy_(torch.as_tensor(self._log_freq(data)))
        return self.model

    def _log_freq(self, data: TrainData) -> np.ndarray:
        shape = (self.num_object_classes, self.num_object_classes, self.num_predicate_classes)
        log_freq = data.priors.get("log_freq") if data.priors else None
        if log_freq is None:
            from sgtool.priors import compute_priors

            log_freq = compute_priors(data.train, *shape[1:])["log_freq"]
        if tuple(log_freq.shape) != shape:
            raise SgtoolError(f"The priors have shape {tuple(log_freq.shape)}, which does not fit the vocabulary {shape}.",
                              "Run `sgtool prepare` for this dataset again.")
        return np.asarray(log_freq, np.float32)

    def training_class_source(self) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None:
        """Where the O-ODE's training input comes from: `class_source`, else the detector whose backbone
        gives the visual features (then kept as `class_source`), else None (corrupted GT one-hots)."""
        if self.class_source is None and self.model is not None and self.uses_visual():
            detector = getattr(self.visual_source, "detector", None)
            if detector is not None and hasattr(self.visual_source, "image"):
                self.class_source = DetectorClassDistributions(detector, self.visual_source.image)
        return self.class_source

    def batches(self, graphs: SceneGraphs, *, shuffle: bool, rng: np.random.Generator) -> Any:
        source = self.training_class_source()
        for batch in train_batches(graphs, self.config.batch_size, self.config.bg_ratio, shuffle, rng, self._visual()):
            dist = (source(batch.image_ids, batch.box_offsets, batch.boxes.numpy()) if source is not None else
                    noisy_distributions(batch.labels.numpy(), self.num_object_classes, self.config.label_noise, rng))
            if dist.shape != (len(batch.labels), self.num_object_classes):
                raise SgtoolError(f"The class source gives {dist.shape[-1]}-column distributions; this NODIS head "
                                  f"knows {self.num_object_classes} classes.", "Use a detector trained on this dataset.")
            batch.extra["class_dist"] = torch.from_numpy(dist)
            batch.extra["order_noise"] = torch.from_numpy(rng.random(len(batch.pairs)))
            batch.extra["object_order"] = torch.from_numpy(rng.random(len(batch.labels)))
            yield batch

    def loss(self, batch: RelBatch) -> dict[str, Any]:
        batch = batch.to(self._device())
        out = self._require_model()(batch)
        logits = out["predicate_logits"]
        predicate = F.cross_entropy(logits, batch.targets) if len(batch.targets) else logits.sum() * 0
        objects = F.cross_entropy(out["object_logits"], batch.labels)
        nfe = out["object_nfe"] + out["pair_nfe"]
        return {"loss": predicate + self.config.object_loss * objects, "predicate_loss": predicate.detach(),
                "object_loss": objects.detach(), "nfe": torch.tensor(float(nfe)),
                "nfe_object": torch.tensor(float(out["object_nfe"])), "nfe_pair": torch.tensor(float(out["pair_nfe"]))}

    @torch.no_grad()
    def predict(self, objects: ObjectPredictions, reporter: Any = None) -> Predictions:
        """PredCls keeps the given labels; SGCls / SGDet return the O-ODE classifier's labels and scores,
        and never read `objects.labels` beyond the class distribution they come with (SGDet)."""
        model = self._require_model()
        model.eval()
        if objects.detected:
            objects = cap_boxes(objects, self.config.max_boxes)
        own = not objects.labels_given
        dist = source_distributions(objects, self.num_object_classes)
        guess = dist[:, 1:].argmax(1) + 1 if len(dist) else np.zeros(0, np.int64)
        labels = objects.labels.copy() if not own else guess.astype(np.int64)
        scores = objects.scores.astype(np.float32).copy()
        rng = np.random.default_rng(0)  # the sequences' random orders: fixed, so predictions repeat
        results, nfe = [], np.zeros(2)
        for batch in predict_batches(objects.image_ids, objects.box_offsets, objects.boxes, labels, scores,
                                     self.config.batch_size, self._visual()):
            batch.extra = {"class_dist": torch.from_numpy(dist[batch.rows]),
                           "order_noise": torch.from_numpy(rng.random(len(batch.pairs))),
                           "object_order": torch.from_numpy(rng.random(len(batch.labels)))}
            out = model(batch.to(self._device()), own_labels=own)
            results.append((batch, F.softmax(out["predicate_logits"], 1).cpu().numpy()))
            nfe += np.array([out["object_nfe"], out["pair_nfe"]]) * batch.num_images
            if own and len(batch.rows):
                probs = F.softmax(out["object_logits"], 1).cpu()
                chosen = out["labels"].cpu()
                labels[batch.rows] = chosen.numpy()
                scores[batch.rows] = probs[torch.arange(len(chosen)), chosen].numpy()
        per_image = nfe / max(objects.num_images, 1)
        self.predict_stats = {"nfe_object": float(per_image[0]), "nfe_pair": float(per_image[1]),
                              "nfe_per_image": float(per_image.sum()), "images": objects.num_images, "ode": self.config.ode}
        predictions = assemble(objects.image_ids, objects.box_offsets, objects.boxes, labels, scores, results,
                               self.num_predicate_classes)
        predictions.meta = dict(self.predict_stats)
        return predictions

    def state_dict(self) -> dict[str, Any]:
        model = self._require_model()
        return {"model": model.state_dict(), "visual_dim": model.visual_dim}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self._device() if self.model is not None else "cpu"
        self.model = NodisNet(self.config, self.num_object_classes, self.num_predicate_classes,
                              int(state["visual_dim"])).to(device)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise SgtoolError("The NODIS checkpoint does not fit this dataset's vocabulary or these settings.",
                              "Evaluate it on the dataset and with the settings it was trained with.") from exc
