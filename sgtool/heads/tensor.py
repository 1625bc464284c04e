"""The low-rank tensor head (Hwang et al., CVPR 2018, "Tensorize, Factorize and Regularize").

Per candidate box pair: features -> MLP trunk -> three branches emitting R score vectors for
subject classes, predicates and object classes. φ = exp(score) defines a rank-R non-negative CP
decomposition of p(subject, predicate, object | pair); its likelihood (`sgtool.losses.tensor`)
never builds the S×P×O tensor.

    phase "triplet"  (config.epochs)      annotated pairs, loss = factored_nll
    phase "sel"      (config.sel_epochs)  X_sel (was this pair annotated?) on balanced annotated /
                                          unannotated pairs, binary cross entropy, triplet network frozen

Inference: p(pred | s, o, pair) ∝ y(s, pred, o) · ψ_u(s, o, pred) over the real predicates, with
ψ_u the +1-smoothed triplet prior (`priors["triplet_prior"]`, stored [s, o, p]); the predictions'
distribution per pair is [1 − P(sel), P(sel) · p(pred | s, o, pair)], so the graph-constrained
triplet score is P(boxes) · P(triplet | pair) · P(sel | pair) (P(boxes): the object scores, 1 in PredCls).

Inputs ("spatial", the pixel-free variant): RelDN's 22 spatial numbers of the pair (in the frame
of the image's box extent) + learned class embeddings of the subject and object labels. The
"visual" variant concatenates the subject, object and union ROI vectors of a trained detector's
frozen backbone (a `VisualSource` attached with `attach_visual` before `build`, layer-normalised)
to those inputs of the trunk; "auto" uses it when a source is attached, else the spatial variant.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgtool.data.graphs import SceneGraphs, ordered_pairs
from sgtool.data.predictions import Predictions
from sgtool.config import option
from sgtool.errors import SgtoolError
from sgtool.features.source import VisualSource
from sgtool.features.spatial import SPATIAL_DIM
from sgtool.heads import ObjectPredictions, TrainableHead, TrainData, VisualHeadConfig, VisualInputs, register_head
from sgtool.heads._pairs import pair_inputs, random_rank, score_all_pairs
from sgtool.losses.tensor import factored_nll, predicate_log_probs

K_CHOICES = ("1", "10", "free")
PHASES = ("triplet", "sel")
_CHUNK_PAIRS = 100_000  # candidate pairs scored at once in predict
_FEATURE_CLIP = 10.0  # spatial numbers are clipped to ±this (degenerate boxes give huge ratios)
_PRIOR_FLOOR = 1e-12


@dataclass
class TensorConfig(VisualHeadConfig):
    epochs: int = 10  # epochs of the triplet phase
    batch_size: int = 16  # images per batch
    lr: float = 1e-3
    grad_clip: float = 20.0  # the paper's gradient-norm clip
    rank: int = option(5, "Rank R of the CP decomposition (the number of rank-1 factors; the paper uses 5).", min=1)
    k: str = option("free", "Predictions per pair for the k-metrics.", choices=K_CHOICES)
    hidden: int = option(128, "Trunk width.", min=1, flag=False)
    class_embedding: int = option(32, "Label embedding size (0: spatial numbers only).", min=0, flag=False)
    sel_epochs: int = option(2, "Epochs of the X_sel phase (0: no X_sel, P(sel) = 1).", min=0, flag=False)
    sel_hidden: int = option(64, "Width of the X_sel network.", min=1, flag=False)
    use_prior: bool = option(True, "Multiply by the triplet prior ψ_u at inference.", flag=False)
    max_boxes: int = option(80, "Detections kept per image (SGDet) before pairing.", min=2, flag=False)

    def validate(self) -> None:
        super().validate()
        self.k = str(self.k).lower()
        if self.k not in K_CHOICES:
            raise SgtoolError(f"--k must be 1, 10 or free, not '{self.k}'.", "Use --k free.")


# ---------------------------------------------------------------- the network

class TensorNet(nn.Module):
    """Trunk + subject / predicate / object branches (R vectors each) + the X_sel head."""

    def __init__(self, num_objects: int, num_predicates: int, config: TensorConfig, visual_dim: int = 0) -> None:
        super().__init__()
        c, p, r, h, e = num_objects, num_predicates, config.rank, config.hidden, config.class_embedding
        self.rank, self.num_objects, self.num_predicates, self.visual_dim = r, c, p, visual_dim
        self.embed = nn.Embedding(c, e) if e else None
        self.visual_norm = nn.LayerNorm(3 * visual_dim) if visual_dim else None  # subject, object, union ROI vectors
        self.trunk = nn.Sequential(nn.Linear(SPATIAL_DIM + 2 * e + 3 * visual_dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.subject, self.predicate, self.object = nn.Linear(h, r * c), nn.Linear(h, r * p), nn.Linear(h, r * c)
        self.sel = nn.Sequential(nn.Linear(h, config.sel_hidden), nn.ReLU(), nn.Linear(config.sel_hidden, 1))
        self.register_buffer("log_prior", torch.zeros(c, c, p))  # log ψ_u, [s, o, p]
        self.register_buffer("sel_trained", torch.zeros((), dtype=torch.bool))

    def triplet_modules(self) -> list[nn.Module]:
        return [m for m in (self.embed, self.visual_norm, self.trunk, self.subject, self.predicate, self.object)
                if m is not None]

    def features(self, batch: dict[str, Tensor]) -> Tensor:
        parts = [batch["spatial"].clamp(-_FEATURE_CLIP, _FEATURE_CLIP)]
        if self.embed is not None:
            parts += [self.embed(batch["subj_label"]), self.embed(batch["obj_label"])]
        if self.visual_norm is not None:
            parts.append(self.visual_norm(torch.cat([batch["subject"], batch["object"], batch["union"]], dim=1)))
        return self.trunk(torch.cat(parts, dim=1))

    def factors(self, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, R, S), (B, R, P), (B, R, O) scores; φ = exp(score)."""
        b, r = len(hidden), self.rank
        return (self.subject(hidden).view(b, r, -1), self.predicate(hidden).view(b, r, -1),
                self.object(hidden).view(b, r, -1))


# ---------------------------------------------------------------- pairs and inputs

def selection_pairs(graphs: SceneGraphs, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(subj, obj, selected) per image: every annotated pair once, and as many random unannotated pairs."""
    n = max(len(graphs.labels), 1)
    pos = np.unique(graphs.relations.pairs[:, 0] * n + graphs.relations.pairs[:, 1])
    image, subj, obj = ordered_pairs(graphs.box_offsets)
    free = ~np.isin(subj * n + obj, pos)
    image, subj, obj = image[free], subj[free], obj[free]
    budget = np.bincount(graphs.image_of_box()[pos // n], minlength=graphs.num_images)
    keep = random_rank(image, rng) < budget[image]
    selected = np.concatenate([np.ones(len(pos), np.float32), np.zeros(int(keep.sum()), np.float32)])
    return np.concatenate([pos // n, subj[keep]]), np.concatenate([pos % n, obj[keep]]), selected


# ---------------------------------------------------------------- the head

@register_head("tensor")
class TensorHead(VisualInputs, TrainableHead):
    """Low-rank CP decomposition of p(subject, predicate, object | pair), × ψ_u, × p(X_sel | pair)."""

    Config = TensorConfig

    def __init__(self, config: TensorConfig, num_object_classes: int, num_predicate_classes: int) -> None:
        super().__init__(config, num_object_classes, num_predicate_classes)
        self.model: TensorNet | None = None
        self.visual_source: VisualSource | None = None
        self.phase = PHASES[0]

    # ------------------------------------------------------------ setup
    def _with_visual(self, inputs: dict[str, Tensor], image_ids: np.ndarray, box_offsets: np.ndarray,
                     boxes: np.ndarray, subj: np.ndarray, obj: np.ndarray) -> dict[str, Tensor]:
        if self.uses_visual():
            inputs.update(self.visual_source(image_ids, box_offsets, boxes, np.stack([subj, obj], 1)))
        return inputs

    def _new_model(self, visual_dim: int = 0) -> TensorNet:
        return TensorNet(self.num_object_classes, self.num_predicate_classes, self.config, visual_dim)

    def build(self, data: TrainData) -> TensorNet:
        prior = np.asarray(data.priors["triplet_prior"], dtype=np.float64)
        shape = (self.num_object_classes, self.num_object_classes, self.num_predicate_classes)
        if prior.shape != shape:
            raise SgtoolError(f"The triplet prior has shape {prior.shape}, which does not fit the vocabulary {shape}.",
                              "Run `sgtool prepare` for this dataset again.")
        self.model = self._new_model(int(self.visual_source.dim) if self.wants_visual() else 0)
        self.model.log_prior.copy_(torch.from_numpy(np.log(np.maximum(prior, _PRIOR_FLOOR))).float())
        self.model.to(data.device)
        return self.model

    def _require_model(self) -> TensorNet:
        if self.model is None:
            raise SgtoolError("The tensor head has no network yet.", "Train it or load its checkpoint first.")
        return self.model

    def _device(self) -> torch.device:
        return self._require_model().log_prior.device

    def phases(self) -> list[tuple[str, int]]:
        return [("triplet", self.config.epochs)] + ([("sel", self.config.sel_epochs)] if self.config.sel_epochs else [])

    def begin_phase(self, phase: str) -> None:
        """triplet: train everything but X_sel; sel: train X_sel only, the triplet network frozen."""
        model = self._require_model()
        self.phase = phase
        for module in model.triplet_modules():
            module.requires_grad_(phase == "triplet")
        model.sel.requires_grad_(phase == "sel")
        if phase == "sel":
            model.sel_trained.fill_(True)

    # ------------------------------------------------------------ training
    def batches(self, graphs: SceneGraphs, *, shuffle: bool, rng: np.random.Generator) -> list[dict[str, Tensor]]:
        """Batches of batch_size images (with relations): annotated pairs (triplet phase), or annotated
        and as many unannotated pairs (sel phase)."""
        order = rng.permutation(graphs.num_images) if shuffle else np.arange(graphs.num_images)
        order = order[graphs.relations.counts()[order] > 0]
        size = self.config.batch_size
        return [self.make_batch(graphs.select(np.sort(order[i:i + size])), rng) for i in range(0, len(order), size)]

    def make_batch(self, graphs: SceneGraphs, rng: np.random.Generator) -> dict[str, Tensor]:
        if self.phase == "sel":
            subj, obj, selected = selection_pairs(graphs, rng)
            batch = self._with_visual(pair_inputs(graphs.box_offsets, graphs.boxes, graphs.labels, subj, obj),
                                      graphs.image_ids, graphs.box_offsets, graphs.boxes, subj, obj)
            batch["selected"] = torch.from_numpy(selected)
            return batch
        rels = graphs.relations
        subj, obj = rels.pairs[:, 0], rels.pairs[:, 1]
        batch = self._with_visual(pair_inputs(graphs.box_offsets, graphs.boxes, graphs.labels, subj, obj),
                                  graphs.image_ids, graphs.box_offsets, graphs.boxes, subj, obj)
        batch["target"] = torch.stack([batch["subj_label"], torch.from_numpy(rels.predicates.astype(np.int64)),
                                       batch["obj_label"]], dim=1)
        return batch

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        model = self._require_model()
        batch = {k: v.to(self._device()) for k, v in batch.items()}
        if self.phase == "sel":
            with torch.no_grad():
                hidden = model.features(batch)
            logits = model.sel(hidden).squeeze(1)
            accuracy = ((logits > 0).float() == batch["selected"]).float().mean()
            return {"loss": F.binary_cross_entropy_with_logits(logits, batch["selected"]), "sel_accuracy": accuracy}
        return {"loss": factored_nll(*model.factors(model.features(batch)), batch["target"])}

    # ------------------------------------------------------------ prediction
    @torch.no_grad()
    def distribution(self, inputs: dict[str, Tensor]) -> Tensor:
        """(M, P) [1 − P(sel), P(sel) · p(pred | s, o, pair) ∝ y · ψ_u] for prepared pair inputs."""
        model = self._require_model()
        was_training = model.training
        model.eval()
        try:
            inputs = {k: v.to(self._device()) for k, v in inputs.items()}
            hidden = model.features(inputs)
            s, o = inputs["subj_label"], inputs["obj_label"]
            log_p = predicate_log_probs(*model.factors(hidden), s, o)[:, 1:]
            if self.config.use_prior:
                log_p = log_p + model.log_prior[s, o, 1:]
            sel = model.sel(hidden).squeeze(1).sigmoid() if bool(model.sel_trained) else torch.ones_like(log_p[:, 0])
            return torch.cat([(1 - sel)[:, None], sel[:, None] * log_p.softmax(-1)], dim=1).float().cpu()
        finally:
            model.train(was_training)

    def predict(self, objects: ObjectPredictions, reporter: Any = None) -> Predictions:
        return score_all_pairs(objects, self.config.max_boxes, self.num_predicate_classes, self._score_pairs,
                               _CHUNK_PAIRS)

    def _score_pairs(self, objects: ObjectPredictions, image: np.ndarray, subj: np.ndarray, obj: np.ndarray) -> np.ndarray:
        inputs = self._with_visual(pair_inputs(objects.box_offsets, objects.boxes, objects.labels, subj, obj),
                                   objects.image_ids, objects.box_offsets, objects.boxes, subj, obj)
        return self.distribution(inputs).numpy()

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        model = self._require_model()
        return {"model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                "features": "visual" if model.visual_dim else "spatial", "visual_dim": model.visual_dim}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        model = self._new_model(int(state.get("visual_dim", 0)))
        try:
            model.load_state_dict(state["model"])
        except (KeyError, RuntimeError) as exc:
            raise SgtoolError("The tensor checkpoint does not fit this head's settings (rank, sizes) or vocabulary.",
                              "Load it with the settings and dataset it was trained with.") from exc
        self.model = model
