"""NODIS (Cong et al., "NODIS: Neural Ordinary Differential Scene Understanding", ECCV 2020).

Objects:  x_i = FC([box geometry, label embedding, score, visual ROI vector?])
          O-ODE: dh/dt = tanh(W_s h_i + W_n mean_{j in image(i)} h_j)   (a one-layer GCN over the image's objects)
          h_i = odeint(O-ODE, x_i, [0, t_end]) -> object classifier (SGCls relabelling; PredCls keeps the labels)
Pairs:    f_ij = [h_i, h_j, union geometry (+ union ROI vector), RelDN spatial (22), conv(pair masks), emb(l_i), emb(l_j)]
          front end: fc (Linear + ReLU) | gcn (pairs sharing a subject / an object exchange messages) |
                     lstm (bidirectional LSTM over each image's pairs)
          P-ODE: dp/dt = W_2 tanh(W_1 p);  p = odeint(P-ODE, front_end(f), [0, t_end])
          logits = Linear(ReLU(Linear(p)))  -> softmax over the P predicate columns (0 = no relation)
Both ODEs: dopri5, atol = rtol = 0.01 (torchdiffeq); `adjoint` uses odeint_adjoint (memory O(1) in depth).
All images of a batch are solved as one state, so every image of the batch sees the same number of
function evaluations (NFE); `loss` returns it ("nfe", O-ODE + P-ODE forward evaluations) and
`predict` keeps the image-weighted average in `self.predict_stats["nfe_per_image"]`.
Loss: cross entropy on predicates (+ `object_loss` x cross entropy on objects).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sgtool.data.graphs import SceneGraphs
from sgtool.data.predictions import Predictions
from sgtool.config import option
from sgtool.errors import SgtoolError
from sgtool.features.spatial import SPATIAL_DIM, pair_masks
from sgtool.heads import ObjectPredictions, TrainableHead, TrainData, VisualHeadConfig, register_head
from sgtool.heads._relbatch import (
    OBJECT_GEOMETRY_DIM, NetworkHelpers, RelBatch, VisualSource, assemble, predict_batches, train_batches,
)

FRONT_ENDS = ("fc", "gcn", "lstm")


@dataclass
class NodisConfig(VisualHeadConfig):
    t_end: float = option(1.5, "Integrate both ODEs over [0, T] (positive).")
    atol: float = 0.01
    rtol: float = 0.01
    front_end: str = option("fc", "P-ODE front end.", choices=FRONT_ENDS)
    adjoint: bool = False  # torchdiffeq.odeint_adjoint instead of odeint
    hidden: int = 128
    embed: int = 32  # class embedding size
    mask_size: int = 32  # side of the 2 x S x S pair masks fed to the spatial conv
    bg_ratio: float = 3.0  # unannotated pairs sampled per annotated pair of an image (training)
    object_loss: float = 1.0  # weight of the object cross entropy
    relabel: bool = False  # replace the given labels / scores by the O-ODE classifier's (SGCls)

    def validate(self) -> None:
        super().validate()
        checks = [
            (self.t_end > 0, f"--t-end must be positive, not {self.t_end}.", "Use e.g. --t-end 1.5."),
            (self.front_end in FRONT_ENDS, f"Unknown NODIS front end '{self.front_end}' (known: {', '.join(FRONT_ENDS)}).",
             "Pass --front-end fc, gcn or lstm."),
            (self.atol > 0 and self.rtol > 0, f"atol and rtol must be positive, not {self.atol} and {self.rtol}.",
             "Use --set atol=0.01 --set rtol=0.01."),
            (self.hidden >= 1 and self.embed >= 1, "hidden and embed must be at least 1.", "Use --set hidden=128."),
            (self.mask_size >= 4, f"mask_size must be at least 4, not {self.mask_size}.", "Use --set mask_size=32."),
            (self.bg_ratio >= 0, f"bg_ratio must not be negative, not {self.bg_ratio}.", "Use --set bg_ratio=3."),
        ]
        for ok, message, hint in checks:
            if not ok:
                raise SgtoolError(message, hint)


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


class ObjectODE(CountedODE):
    """dh/dt = tanh(W_s h + W_n mean of the image's objects): a GCN on the complete graph of each image."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.self_map, self.neighbour_map = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False)
        self.image: torch.Tensor = torch.zeros(0, dtype=torch.int64)
        self.count: torch.Tensor = torch.ones(0)

    def set_graph(self, image: torch.Tensor, num_images: int) -> None:
        self.image = image
        self.count = torch.bincount(image, minlength=num_images).clamp(min=1).to(torch.float32)[:, None]

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.zeros(len(self.count), x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, self.image, x)
        mean = (mean / self.count.to(x.device))[self.image]
        return torch.tanh(self.self_map(x) + self.neighbour_map(mean))


class PairODE(CountedODE):
    """dp/dt = W_2 tanh(W_1 p)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, dim))

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


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
    """fc | gcn | lstm over the pairs of a batch (pairs grouped by image)."""

    def __init__(self, kind: str, in_dim: int, dim: int) -> None:
        super().__init__()
        self.kind = kind
        self.input = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU())
        if kind == "gcn":
            self.self_map, self.neighbour_map = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False)
        elif kind == "lstm":
            self.lstm = nn.LSTM(dim, dim // 2 + dim % 2, batch_first=True, bidirectional=True)
            self.out = nn.Linear(2 * (dim // 2 + dim % 2), dim)

    def forward(self, f: torch.Tensor, pairs: torch.Tensor, pair_image: torch.Tensor, num_objects: int,
                num_images: int) -> torch.Tensor:
        x = self.input(f)
        if self.kind == "gcn":
            return F.relu(self.self_map(x) + self.neighbour_map(_shared_end_mean(x, pairs, num_objects)))
        if self.kind == "lstm":
            return self._lstm(x, pair_image, num_images)
        return x

    def _lstm(self, x: torch.Tensor, pair_image: torch.Tensor, num_images: int) -> torch.Tensor:
        lengths = torch.bincount(pair_image, minlength=num_images)
        starts = torch.cumsum(lengths, 0) - lengths
        position = torch.arange(len(x), device=x.device) - starts[pair_image]
        padded = x.new_zeros(num_images, int(lengths.max()) if len(x) else 0, x.shape[1])
        padded[pair_image, position] = x
        used = lengths > 0
        packed = nn.utils.rnn.pack_padded_sequence(padded[used], lengths[used].cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=padded.shape[1])
        full = out.new_zeros(num_images, padded.shape[1], out.shape[2])
        full[used] = out
        return self.out(full[pair_image, position])


def _shared_end_mean(x: torch.Tensor, pairs: torch.Tensor, num_objects: int) -> torch.Tensor:
    """Per pair: mean of the features of the pairs with the same subject plus those with the same object."""
    out = torch.zeros_like(x)
    for end in (0, 1):
        rows = pairs[:, end]
        total = x.new_zeros(num_objects, x.shape[1]).index_add_(0, rows, x)
        count = torch.bincount(rows, minlength=num_objects).clamp(min=1).to(x.dtype)[:, None]
        out = out + (total / count)[rows]
    return out / 2


# ---------------------------------------------------------------- the network

class NodisNet(nn.Module):
    def __init__(self, config: NodisConfig, num_object_classes: int, num_predicate_classes: int,
                 visual_dim: int = 0) -> None:
        super().__init__()
        h, e = config.hidden, config.embed
        self.config, self.visual_dim = config, visual_dim
        self.embedding = nn.Embedding(num_object_classes, e)
        self.object_in = nn.Sequential(nn.Linear(OBJECT_GEOMETRY_DIM + e + 1 + visual_dim, h), nn.ReLU())
        self.object_ode = ObjectODE(h)
        self.object_classifier = nn.Linear(h, num_object_classes)
        self.mask_conv = nn.Sequential(
            nn.Conv2d(2, 8, 5, stride=2, padding=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, e), nn.ReLU())
        pair_in = 2 * h + OBJECT_GEOMETRY_DIM + visual_dim + SPATIAL_DIM + e + 2 * e
        self.front_end = FrontEnd(config.front_end, pair_in, h)
        self.pair_ode = PairODE(h)
        self.predicate_classifier = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, num_predicate_classes))

    def _solve(self, func: CountedODE, x0: torch.Tensor) -> tuple[torch.Tensor, int]:
        c = self.config
        return solve(func, x0, c.t_end, c.atol, c.rtol, c.adjoint)

    def objects(self, batch: RelBatch) -> tuple[torch.Tensor, int]:
        parts = [batch.object_geometry(), self.embedding(batch.labels), batch.scores[:, None]]
        if self.visual_dim:
            parts.append(batch.visual["objects"])
        self.object_ode.set_graph(batch.box_image, batch.num_images)
        return self._solve(self.object_ode, self.object_in(torch.cat(parts, 1)))

    def pair_features(self, batch: RelBatch, h: torch.Tensor) -> torch.Tensor:
        s, o = batch.pairs[:, 0], batch.pairs[:, 1]
        boxes = batch.boxes.cpu()
        masks = pair_masks(boxes[s.cpu()], boxes[o.cpu()], size=self.config.mask_size).to(batch.device)
        parts = [h[s], h[o], batch.union_geometry()]
        if self.visual_dim:
            parts.append(batch.visual["union"])
        parts += [batch.pair_geometry(), self.mask_conv(masks), self.embedding(batch.labels[s]),
                  self.embedding(batch.labels[o])]
        return torch.cat(parts, 1)

    def forward(self, batch: RelBatch) -> dict[str, Any]:
        h, object_nfe = self.objects(batch)
        f = self.front_end(self.pair_features(batch, h), batch.pairs, batch.pair_image, len(batch.labels),
                           batch.num_images)
        p, pair_nfe = self._solve(self.pair_ode, f)
        return {"object_logits": self.object_classifier(h), "predicate_logits": self.predicate_classifier(p),
                "object_nfe": object_nfe, "pair_nfe": pair_nfe, "pair_state": p}


# ---------------------------------------------------------------- the head

@register_head("nodis")
class NodisHead(NetworkHelpers, TrainableHead):
    """NODIS: object and pair features refined by neural ODEs (see the module docstring)."""

    Config = NodisConfig

    def __init__(self, config: NodisConfig, num_object_classes: int, num_predicate_classes: int) -> None:
        super().__init__(config, num_object_classes, num_predicate_classes)
        self.model: NodisNet | None = None
        self.visual_source: VisualSource | None = None  # set by whoever has a detector (SGDet / visual runs)
        self.predict_stats: dict[str, float] = {}

    def build(self, data: TrainData) -> NodisNet:
        torch.manual_seed(data.seed)
        dim = int(self.visual_source.dim) if self.wants_visual() else 0
        self.model = NodisNet(self.config, self.num_object_classes, self.num_predicate_classes, dim).to(data.device)
        return self.model

    def batches(self, graphs: SceneGraphs, *, shuffle: bool, rng: np.random.Generator) -> Any:
        return train_batches(graphs, self.config.batch_size, self.config.bg_ratio, shuffle, rng, self._visual())

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
        model = self._require_model()
        model.eval()
        labels, scores = objects.labels.copy(), objects.scores.astype(np.float32).copy()
        results, nfe_images = [], 0.0
        for batch in predict_batches(objects.image_ids, objects.box_offsets, objects.boxes, objects.labels,
                                     objects.scores, self.config.batch_size, self._visual()):
            out = model(batch.to(self._device()))
            results.append((batch, F.softmax(out["predicate_logits"], 1).cpu().numpy()))
            nfe_images += (out["object_nfe"] + out["pair_nfe"]) * batch.num_images
            if self.config.relabel and len(batch.rows):
                probs = F.softmax(out["object_logits"][:, 1:], 1).cpu()
                best, index = probs.max(1)
                labels[batch.rows], scores[batch.rows] = index.numpy() + 1, best.numpy()
        self.predict_stats = {"nfe_per_image": nfe_images / max(objects.num_images, 1), "images": objects.num_images}
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

