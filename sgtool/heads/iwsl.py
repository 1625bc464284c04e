"""IWSL (Liu, Bober, Kittler, "Importance Weighted Structure Learning for Scene Graph Generation", TPAMI 2023).

The scene graph of an image is a conditional random field over object nodes z_i (C classes, column 0
unused) and predicate nodes z_ij (P classes, column 0 = no relation), scored by

    log s(x, z) = sum_i theta_i(z_i) + sum_ij theta_ij(z_ij)                                 unary (MLPs on features)
                + sum_i g_obj(z_i) + sum_ij g_pred(z_ij)                                     global context: MLP on the
                                                                                             union of all boxes + mean object feature
                + sum_ij [A_ij(z_i, z_ij) + B_ij(z_j, z_ij)]                                 object-predicate (subject / object role)
                + sum_ij O_ij(z_i, z_j)                                                      object-object

with the pairwise tables low rank and feature dependent: A_ij(a, b) = sum_r u_ij,r E_a,r F_b,r (u_ij from an MLP
on the pair's features, E, F learnt), likewise B and O. Every term is linear in each node's one-hot, so a
relaxed assignment y (points of the simplices) is scored by the same formula.

Variational distribution: per node a Gumbel-Softmax (concrete) q_pi; a sample is
y = softmax((log pi + g) / tau), g ~ Gumbel(0, 1), and its log density on the simplex (K classes) is

    log q(y; pi, tau) = log Gamma(K) + (K - 1) log tau + sum_k (log pi_k - (tau + 1) log y_k)
                        - K logsumexp_k (log pi_k - tau log y_k)

(Jang et al. 2017 / Maddison et al. 2017; the density IWSL's Eq. 16 uses). Per image the s-sample importance
weighted lower bound of log Z(x) is

    L_s = log (1/s) sum_j s(x, y_j) / q(y_j) = logsumexp_j (log s(x, y_j) - log q(y_j)) - log s,

L_1 being the one-sample ELBO estimate. pi maximises L_s over the simplices by entropic mirror descent
(exponentiated gradient): pi <- pi * exp(eta_i grad_pi L_s) / normaliser, eta_i = gamma / sqrt(i), stopping when
|Delta L_s| < epsilon (mean per image) or after M iterations; the Gumbel noise is fixed during one descent.

Learning: surrogate logits of node n for class k, phi_n(k) = log s(x, z) - L_s with z = (pi elsewhere, e_k at n),
then log-softmax and cross entropy against the annotation (objects and sampled predicate pairs).
Temperature annealing per training step t: tau_t = max(tau_0 exp(-beta t), tau_min).
Prediction: the predicate distribution of a pair is softmax(phi_ij) after the descent with `samples` draws (50).
Optional bi-level resampling for the long tail (`resample`, as in BGNN, Li et al. CVPR 2021): image-level
repeat factors r_i from threshold t, instance-level drop rate gamma_d (see `repeat_factors`, `instance_filter`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sgtool.data.graphs import SceneGraphs, owner_of_rows
from sgtool.data.predictions import Predictions
from sgtool.config import option
from sgtool.errors import SgtoolError
from sgtool.features.spatial import SPATIAL_DIM
from sgtool.heads import ObjectPredictions, TrainableHead, TrainData, VisualHeadConfig, register_head
from sgtool.heads._relbatch import (
    OBJECT_GEOMETRY_DIM, NetworkHelpers, RelationFilter, RelBatch, VisualSource, assemble, predict_batches, train_batches,
)


@dataclass
class IwslConfig(VisualHeadConfig):
    samples: int = option(50, "Importance samples s at inference.", min=1)
    train_samples: int = 5  # s while training
    emd_iters: int = 10  # M, mirror descent iterations at most
    emd_step: float = 0.1  # gamma: step gamma / sqrt(i)
    emd_tol: float = 1e-3  # epsilon: stop when |Delta L_s| (mean per image) is below it
    tau: float = 1.0  # initial Gumbel-Softmax temperature
    tau_min: float = 0.5
    tau_decay: float = 1e-4  # beta
    hidden: int = 128
    embed: int = 32
    rank: int = 8  # rank of the pairwise potential tables
    bg_ratio: float = 3.0  # unannotated pairs sampled per annotated pair of an image (training)
    object_loss: float = 1.0
    relabel: bool = False  # replace given labels / scores by the inferred object marginals (SGCls)
    resample: bool = False  # bi-level resampling of the training images (long tail)
    repeat_thresh: float = 0.07  # t: image repeat factor max_c max(1, sqrt(t / f_c))
    drop_rate: float = 0.7  # gamma_d: instance drop rate

    def validate(self) -> None:
        super().validate()
        checks = [
            (self.samples >= 1, f"--samples must be at least 1, not {self.samples}.", "Use e.g. --samples 50."),
            (self.train_samples >= 1, f"train_samples must be at least 1, not {self.train_samples}.",
             "Use --set train_samples=5."),
            (self.emd_iters >= 0, f"emd_iters must not be negative, not {self.emd_iters}.", "Use --set emd_iters=10."),
            (self.emd_step > 0 and self.emd_tol >= 0, "emd_step must be positive and emd_tol not negative.",
             "Use --set emd_step=0.1 --set emd_tol=0.001."),
            (0 < self.tau_min <= self.tau, f"Temperatures need 0 < tau_min <= tau, not {self.tau_min} and {self.tau}.",
             "Use --set tau=1 --set tau_min=0.5."),
            (self.tau_decay >= 0, f"tau_decay must not be negative, not {self.tau_decay}.", "Use --set tau_decay=0.0001."),
            (min(self.hidden, self.embed, self.rank) >= 1, "hidden, embed and rank must be at least 1.",
             "Use --set rank=8."),
            (self.bg_ratio >= 0, f"bg_ratio must not be negative, not {self.bg_ratio}.", "Use --set bg_ratio=3."),
            (0 < self.repeat_thresh <= 1 and 0 <= self.drop_rate <= 1,
             "repeat_thresh must be in (0, 1] and drop_rate in [0, 1].", "Use --set repeat_thresh=0.07 --set drop_rate=0.7."),
        ]
        for ok, message, hint in checks:
            if not ok:
                raise SgtoolError(message, hint)


def temperature(step: int, tau: float, tau_min: float, beta: float) -> float:
    """tau_t = max(tau_0 exp(-beta t), tau_min)."""
    return max(tau * math.exp(-beta * step), tau_min)


# ---------------------------------------------------------------- Gumbel-Softmax and the bound

def sample_concrete(log_pi: torch.Tensor, tau: float, samples: int, generator: torch.Generator | None = None,
                    noise: torch.Tensor | None = None) -> torch.Tensor:
    """(S, ..., K) log y of Gumbel-Softmax samples y = softmax((log pi + g) / tau)."""
    if noise is None:
        noise = gumbel_noise((samples, *log_pi.shape), generator, log_pi.device)
    return F.log_softmax((log_pi + noise) / tau, dim=-1)


def gumbel_noise(shape: Sequence[int], generator: torch.Generator | None, device: Any = "cpu") -> torch.Tensor:
    u = torch.rand(tuple(shape), generator=generator).clamp(1e-10, 1 - 1e-7)
    return (-torch.log(-torch.log(u))).to(device)


def concrete_log_density(log_y: torch.Tensor, log_pi: torch.Tensor, tau: float) -> torch.Tensor:
    """log q(y; pi, tau) of each point (last dim = the K classes), from log y (see the module docstring)."""
    k = log_y.shape[-1]
    a = log_pi - tau * log_y
    return (math.lgamma(k) + (k - 1) * math.log(tau) + (log_pi - (tau + 1) * log_y).sum(-1)
            - k * torch.logsumexp(a, dim=-1))


def importance_bound(log_weights: torch.Tensor) -> torch.Tensor:
    """L_s = logsumexp_j w_j - log s from (s, ...) log importance weights log s(x, y_j) - log q(y_j)."""
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


def entropic_mirror_ascent(objective: Callable[[list[torch.Tensor]], torch.Tensor], log_pis: list[torch.Tensor],
                           step: float, iters: int, tol: float) -> tuple[list[torch.Tensor], list[float]]:
    """Maximise objective(pis) over products of simplices (last dim): pi <- pi exp(eta_i grad) / Z, eta_i = step/sqrt(i).

    Works on log pi (the normaliser is a log-softmax). Returns the final log pis and the objective's history
    (value at each iterate); stops when the change is below tol. The best iterate is returned (with a
    fixed Gumbel noise the objective is deterministic, so this only guards against a too large step)."""
    current = [lp.detach() for lp in log_pis]
    history: list[float] = []
    best: tuple[float, list[torch.Tensor]] = (-math.inf, current)
    for i in range(1, iters + 2):
        with torch.enable_grad():
            pis = [lp.exp().requires_grad_(True) for lp in current]
            value = objective(pis)
            grads = torch.autograd.grad(value, pis, allow_unused=True) if i <= iters else None
        history.append(float(value.detach()))
        if history[-1] > best[0]:
            best = (history[-1], current)
        if grads is None or (len(history) > 1 and abs(history[-1] - history[-2]) < tol):
            break
        eta = step / math.sqrt(i)
        current = [F.log_softmax(lp + (eta * g).clamp(-30, 30) if g is not None else lp, dim=-1)
                   for lp, g in zip(current, grads)]
    return best[1], history


# ---------------------------------------------------------------- potentials

@dataclass
class Potentials:
    """Everything log s(x, z) needs for one batch (see the module docstring)."""

    object_unary: torch.Tensor  # (N, C), global context included
    predicate_unary: torch.Tensor  # (M, P), global context included
    u_subject: torch.Tensor  # (M, r)  A_ij weights
    u_object: torch.Tensor  # (M, r)  B_ij weights
    w_pair: torch.Tensor  # (M, r)  O_ij weights
    tables: dict[str, torch.Tensor]  # E_s, F_s (subject role), E_o, F_o (object role), G_s, G_o (object-object): (K, r)
    pairs: torch.Tensor  # (M, 2)
    box_image: torch.Tensor  # (N,)
    pair_image: torch.Tensor  # (M,)
    num_images: int

    def detach(self) -> "Potentials":
        t = {k: v.detach() for k, v in self.tables.items()}
        return Potentials(self.object_unary.detach(), self.predicate_unary.detach(), self.u_subject.detach(),
                          self.u_object.detach(), self.w_pair.detach(), t, self.pairs, self.box_image,
                          self.pair_image, self.num_images)

    def log_score(self, y_obj: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        """(S, I) log s(x, y) per image for (S, N, C) and (S, M, P) relaxed (or one-hot) assignments."""
        s, o, t = self.pairs[:, 0], self.pairs[:, 1], self.tables
        nodes = (y_obj * self.object_unary).sum(-1)
        edges = (y_pred * self.predicate_unary).sum(-1)
        edges = edges + (self.u_subject * (y_obj[:, s] @ t["E_s"]) * (y_pred @ t["F_s"])).sum(-1)
        edges = edges + (self.u_object * (y_obj[:, o] @ t["E_o"]) * (y_pred @ t["F_o"])).sum(-1)
        edges = edges + (self.w_pair * (y_obj[:, s] @ t["G_s"]) * (y_obj[:, o] @ t["G_o"])).sum(-1)
        return _per_image(nodes, self.box_image, self.num_images) + _per_image(edges, self.pair_image, self.num_images)

    def local_logits(self, pi_obj: torch.Tensor, pi_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C), (M, P): the part of log s that depends on a node's class, the other nodes at pi."""
        s, o, t = self.pairs[:, 0], self.pairs[:, 1], self.tables
        pred = (self.predicate_unary + (self.u_subject * (pi_obj[s] @ t["E_s"])) @ t["F_s"].T
                + (self.u_object * (pi_obj[o] @ t["E_o"])) @ t["F_o"].T)
        to_subject = (self.u_subject * (pi_pred @ t["F_s"])) @ t["E_s"].T + (self.w_pair * (pi_obj[o] @ t["G_o"])) @ t["G_s"].T
        to_object = (self.u_object * (pi_pred @ t["F_o"])) @ t["E_o"].T + (self.w_pair * (pi_obj[s] @ t["G_s"])) @ t["G_o"].T
        obj = self.object_unary.index_add(0, s, to_subject).index_add(0, o, to_object)
        return obj, pred


def _per_image(values: torch.Tensor, image: torch.Tensor, num_images: int) -> torch.Tensor:
    """(S, rows) -> (S, I) sums per image."""
    return values.new_zeros(values.shape[0], num_images).index_add_(1, image, values)


def log_bound(potentials: Potentials, log_pi_obj: torch.Tensor, log_pi_pred: torch.Tensor, tau: float,
              noise_obj: torch.Tensor, noise_pred: torch.Tensor) -> torch.Tensor:
    """(I,) L_s per image with the given Gumbel noise ((S, N, C) and (S, M, P))."""
    log_y_obj = sample_concrete(log_pi_obj, tau, 0, noise=noise_obj)
    log_y_pred = sample_concrete(log_pi_pred, tau, 0, noise=noise_pred)
    log_q = (_per_image(concrete_log_density(log_y_obj, log_pi_obj, tau), potentials.box_image, potentials.num_images)
             + _per_image(concrete_log_density(log_y_pred, log_pi_pred, tau), potentials.pair_image, potentials.num_images))
    return importance_bound(potentials.log_score(log_y_obj.exp(), log_y_pred.exp()) - log_q)


def infer(potentials: Potentials, tau: float, samples: int, config: IwslConfig,
          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float]]:
    """Entropic mirror descent on L_s from pi = softmax(unary): (log pi_obj, log pi_pred, L_s per image, history)."""
    pot = potentials.detach()
    n, m = pot.object_unary.shape, pot.predicate_unary.shape
    device = pot.object_unary.device
    noise_obj = gumbel_noise((samples, *n), generator, device)
    noise_pred = gumbel_noise((samples, *m), generator, device)

    def objective(pis: list[torch.Tensor]) -> torch.Tensor:
        logs = [p.clamp(min=1e-30).log() for p in pis]
        return log_bound(pot, logs[0], logs[1], tau, noise_obj, noise_pred).sum() / max(pot.num_images, 1)

    start = [F.log_softmax(pot.object_unary, -1), F.log_softmax(pot.predicate_unary, -1)]
    (log_obj, log_pred), history = entropic_mirror_ascent(objective, start, config.emd_step, config.emd_iters,
                                                          config.emd_tol)
    with torch.no_grad():
        bound = log_bound(pot, log_obj, log_pred, tau, noise_obj, noise_pred)
    return log_obj, log_pred, bound, history


def surrogate_logits(potentials: Potentials, pi_obj: torch.Tensor, pi_pred: torch.Tensor,
                     bound: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """phi_n(k) = log s(x, z) - L_s, z = pi with node n set to class k (exact: log s is linear per node)."""
    obj, pred = potentials.local_logits(pi_obj, pi_pred)
    total = potentials.log_score(pi_obj[None], pi_pred[None])[0] - bound  # log s(x, pi) - L_s per image
    obj = obj + (total[potentials.box_image] - (pi_obj * obj).sum(-1))[:, None]
    pred = pred + (total[potentials.pair_image] - (pi_pred * pred).sum(-1))[:, None]
    return obj, pred


# ---------------------------------------------------------------- bi-level resampling (long tail)

def repeat_factors(graphs: SceneGraphs, num_predicates: int, thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """(I,) image and (P,) predicate repeat factors: r_c = max(1, sqrt(t / f_c)), f_c the share of images with
    predicate c; r_i = max of r_c over the image's predicates (1 without relations)."""
    present = np.zeros((graphs.num_images, num_predicates), dtype=bool)
    present[owner_of_rows(graphs.relations.offsets), graphs.relations.predicates] = True
    share = present.sum(0) / max(graphs.num_images, 1)
    r_pred = np.ones(num_predicates)
    r_pred[share > 0] = np.maximum(1.0, np.sqrt(thresh / share[share > 0]))
    r_image = np.where(present, r_pred[None, :], 1.0).max(1) if num_predicates else np.ones(graphs.num_images)
    return r_image, r_pred


def resampled_order(r_image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Image-level over-sampling: image i appears floor(r_i) times, once more with probability frac(r_i); shuffled."""
    whole = np.floor(r_image).astype(np.int64)
    counts = whole + (rng.random(len(r_image)) < r_image - whole)
    return rng.permutation(np.repeat(np.arange(len(r_image)), counts))


def instance_filter(r_image: np.ndarray, r_pred: np.ndarray, drop_rate: float) -> RelationFilter:
    """Instance-level under-sampling: a relation of predicate c in image i is dropped with probability
    min(1, gamma_d (r_i - r_c) / r_i), so common predicates of repeated images are thinned out."""
    def keep(sub: SceneGraphs, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        r_i = r_image[images][owner_of_rows(sub.relations.offsets)]
        drop = np.clip(drop_rate * (r_i - r_pred[sub.relations.predicates]) / r_i, 0.0, 1.0)
        return rng.random(len(drop)) >= drop

    return keep


# ---------------------------------------------------------------- the network

def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class IwslNet(nn.Module):
    """Features -> potentials."""

    def __init__(self, config: IwslConfig, num_object_classes: int, num_predicate_classes: int,
                 visual_dim: int = 0) -> None:
        super().__init__()
        h, e, r, c, p = config.hidden, config.embed, config.rank, num_object_classes, num_predicate_classes
        self.visual_dim = visual_dim
        self.embedding = nn.Embedding(c, e)
        self.object_features = _mlp(OBJECT_GEOMETRY_DIM + e + 1 + visual_dim, h, h)
        self.pair_features = _mlp(2 * h + SPATIAL_DIM + OBJECT_GEOMETRY_DIM + visual_dim, h, h)
        self.global_features = _mlp(OBJECT_GEOMETRY_DIM + h, h, h)
        self.object_unary, self.predicate_unary = nn.Linear(h, c), nn.Linear(h, p)
        self.global_object, self.global_predicate = nn.Linear(h, c), nn.Linear(h, p)
        self.pairwise = nn.Linear(h, 3 * r)
        sizes = {"E_s": c, "F_s": p, "E_o": c, "F_o": p, "G_s": c, "G_o": c}
        self.tables = nn.ParameterDict({k: nn.Parameter(torch.randn(n, r) / math.sqrt(r)) for k, n in sizes.items()})

    def forward(self, batch: RelBatch) -> Potentials:
        image, pair_image = batch.box_image, batch.pair_image
        parts = [batch.object_geometry(), self.embedding(batch.labels), batch.scores[:, None]]
        if self.visual_dim:
            parts.append(batch.visual["objects"])
        h = self.object_features(torch.cat(parts, 1))
        s, o = batch.pairs[:, 0], batch.pairs[:, 1]
        pair_parts = [h[s], h[o], batch.pair_geometry(), batch.union_geometry()]
        if self.visual_dim:
            pair_parts.append(batch.visual["union"])
        f = self.pair_features(torch.cat(pair_parts, 1))
        count = torch.bincount(image, minlength=batch.num_images).clamp(min=1)[:, None]
        mean = h.new_zeros(batch.num_images, h.shape[1]).index_add_(0, image, h) / count
        g = self.global_features(torch.cat([batch.scene_geometry(), mean], 1))
        u = self.pairwise(f).chunk(3, dim=1)
        return Potentials(self.object_unary(h) + self.global_object(g)[image],
                          self.predicate_unary(f) + self.global_predicate(g)[pair_image],
                          u[0], u[1], u[2], dict(self.tables.items()), batch.pairs, image, pair_image,
                          batch.num_images)


# ---------------------------------------------------------------- the head

@register_head("iwsl")
class IwslHead(NetworkHelpers, TrainableHead):
    """Importance-weighted structure learning (see the module docstring)."""

    Config = IwslConfig

    def __init__(self, config: IwslConfig, num_object_classes: int, num_predicate_classes: int) -> None:
        super().__init__(config, num_object_classes, num_predicate_classes)
        self.model: IwslNet | None = None
        self.visual_source: VisualSource | None = None
        self.step = 0  # training steps taken (temperature annealing)
        self.generator = torch.Generator().manual_seed(0)
        self.predict_seed = 0  # Gumbel noise of prediction (fixed: the same checkpoint gives the same predictions)
        self.predict_stats: dict[str, float] = {}

    @property
    def tau(self) -> float:
        c = self.config
        return temperature(self.step, c.tau, c.tau_min, c.tau_decay)

    def build(self, data: TrainData) -> IwslNet:
        torch.manual_seed(data.seed)
        self.generator.manual_seed(data.seed)
        dim = int(self.visual_source.dim) if self.wants_visual() else 0
        self.model = IwslNet(self.config, self.num_object_classes, self.num_predicate_classes, dim).to(data.device)
        return self.model

    def batches(self, graphs: SceneGraphs, *, shuffle: bool, rng: np.random.Generator) -> Any:
        c = self.config
        if not (c.resample and shuffle):
            return train_batches(graphs, c.batch_size, c.bg_ratio, shuffle, rng, self._visual())
        r_image, r_pred = repeat_factors(graphs, self.num_predicate_classes, c.repeat_thresh)
        return train_batches(graphs, c.batch_size, c.bg_ratio, shuffle, rng, self._visual(),
                             order=resampled_order(r_image, rng), keep=instance_filter(r_image, r_pred, c.drop_rate))

    def loss(self, batch: RelBatch) -> dict[str, Any]:
        batch = batch.to(self._device())
        potentials = self._require_model()(batch)
        tau = self.tau
        log_obj, log_pred, bound, history = infer(potentials, tau, self.config.train_samples, self.config, self.generator)
        phi_obj, phi_pred = surrogate_logits(potentials, log_obj.exp(), log_pred.exp(), bound)
        predicate = F.cross_entropy(phi_pred, batch.targets) if len(batch.targets) else phi_pred.sum() * 0
        objects = F.cross_entropy(phi_obj, batch.labels)
        if torch.is_grad_enabled():
            self.step += 1
        return {"loss": predicate + self.config.object_loss * objects, "predicate_loss": predicate.detach(),
                "object_loss": objects.detach(), "bound": bound.mean().detach(), "tau": torch.tensor(tau),
                "emd_iters": torch.tensor(float(len(history) - 1))}

    @torch.no_grad()
    def predict(self, objects: ObjectPredictions, reporter: Any = None) -> Predictions:
        model = self._require_model()
        model.eval()
        labels, scores = objects.labels.copy(), objects.scores.astype(np.float32).copy()
        results, bounds = [], []
        generator = torch.Generator().manual_seed(self.predict_seed)
        for batch in predict_batches(objects.image_ids, objects.box_offsets, objects.boxes, objects.labels,
                                     objects.scores, self.config.batch_size, self._visual()):
            potentials = model(batch.to(self._device()))
            log_obj, log_pred, bound, _ = infer(potentials, self.tau, self.config.samples, self.config, generator)
            phi_obj, phi_pred = surrogate_logits(potentials, log_obj.exp(), log_pred.exp(), bound)
            results.append((batch, F.softmax(phi_pred, 1).cpu().numpy()))
            bounds.append(bound.cpu())
            if self.config.relabel and len(batch.rows):
                best, index = F.softmax(phi_obj[:, 1:], 1).cpu().max(1)
                labels[batch.rows], scores[batch.rows] = index.numpy() + 1, best.numpy()
        all_bounds = torch.cat(bounds) if bounds else torch.zeros(0)
        self.predict_stats = {"bound_per_image": float(all_bounds.mean()) if len(all_bounds) else 0.0,
                              "samples": self.config.samples, "tau": self.tau}
        predictions = assemble(objects.image_ids, objects.box_offsets, objects.boxes, labels, scores, results,
                               self.num_predicate_classes)
        predictions.meta = dict(self.predict_stats)
        return predictions

    def random_state(self) -> dict[str, Any]:
        """The head's own Gumbel-noise generator, so that a resumed run draws the same noise."""
        return {"generator": self.generator.get_state()}

    def set_random_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def state_dict(self) -> dict[str, Any]:
        model = self._require_model()
        return {"model": model.state_dict(), "visual_dim": model.visual_dim, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self._device() if self.model is not None else "cpu"
        self.model = IwslNet(self.config, self.num_object_classes, self.num_predicate_classes,
                             int(state["visual_dim"])).to(device)
        self.step = int(state.get("step", 0))
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise SgtoolError("The IWSL checkpoint does not fit this dataset's vocabulary or these settings.",
                              "Evaluate it on the dataset and with the settings it was trained with.") from exc
