"""IWSL: Daqi Liu, Miroslaw Bober, Josef Kittler, "Importance Weighted Structure Learning for Scene Graph
Generation", IEEE Transactions on Pattern Analysis and Machine Intelligence (TPAMI), 2023.

The scene graph of an image is a conditional random field over object nodes z_i (C classes, column 0
unused) and predicate nodes z_ij (P classes, column 0 = no relation), scored by (Eq. 3-4)

    log s(x, z) = sum_i theta_i(z_i) + sum_ij theta_ij(z_ij)            unary (MLPs on box geometry and ROI features)
                + sum_i g_obj(z_i) + sum_ij g_pred(z_ij)                global context: MLP on the union of all boxes
                + sum_ij [A_ij(z_i, z_ij) + B_ij(z_j, z_ij)]            object-predicate (subject / object role)
                + sum_ij O_ij(z_i, z_j)                                 object-object

with the pairwise tables low rank and feature dependent: A_ij(a, b) = sum_r u_ij,r E_a,r F_b,r (u_ij from an MLP
on the pair's features, E, F learnt), likewise B and O. No object label is an input: in SGCls / SGDet the
object nodes are inferred (the labels the head returns are its own); in PredCls the given labels are
observed nodes, clamped to their one-hot.

Local log marginal score of node n (Eq. 11-12): log s(x_n, z_n) = l_n . z_n, where l_n collects n's unary
and the messages of its neighbours at their current pi (`Potentials.local_logits`).

Variational distribution: per node a categorical pi, sampled through the Gumbel-Softmax (Eq. 5-6)
y = softmax((log pi + g) / tau), g ~ Gumbel(0, 1), with log q(y) = y . log pi (Eq. 16 with log pi as its logits).
The inference step (Alg. 1 steps 3-7) starts pi at random on the simplex and climbs, per image, one
deterministic function of pi by entropic mirror ascent (Alg. 2) with Armijo steps until a step gains less than
epsilon: `estimator=exact` (default) the bound's expectation in closed form, E_q log s(x, z) + H(q) (the ELBO
of the discrete model; each node's optimum given its neighbours, softmax(l_n), maximises its s-sample bound
for every s); `estimator=sampled` the image's s-sample bound (Eq. 8, 15) with its Gumbel noise drawn once per
inference (common random numbers). Per node L_s^n (Eq. 13-15) is then evaluated at pi*.

Learning (Eq. 17-19): surrogate logits phi_n = l_n(pi*) - L_s^n, log-softmax, cross entropy against the
annotation (objects and sampled predicate pairs), with s = learn_samples. Temperature annealing per training
step t, as Alg. 1 writes it: tau <- max(tau exp(-beta t), tau_min), beta such that tau_min is reached at step
anneal_steps. Prediction: softmax(phi) after the inference with s = samples (docs/methods/iwsl.md).
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

from sgtool.config import how_to_set, option
from sgtool.data.graphs import SceneGraphs, owner_of_rows
from sgtool.data.predictions import Predictions
from sgtool.errors import SgtoolError
from sgtool.features.spatial import SPATIAL_DIM
from sgtool.flags import flag
from sgtool.heads import ObjectPredictions, TrainableHead, TrainData, VisualHeadConfig, register_head
from sgtool.heads._pairs import cap_boxes
from sgtool.heads._relbatch import (
    OBJECT_GEOMETRY_DIM, NetworkHelpers, RelationFilter, RelBatch, VisualSource, assemble, predict_batches, train_batches,
)

@dataclass
class IwslConfig(VisualHeadConfig):
    samples: int = option(50, "Importance samples s of the inference step (prediction; the paper's Table 4 varies it).",
                          min=1, max=100000)
    learn_samples: int = option(100, "Importance samples s of the learning step (training; the paper: 5000-8000).",
                                min=1, max=100000, flag=False)
    estimator: str = option("exact", "What the mirror ascent climbs: 'exact' (the bound's expectation in closed form, "
                                     "the maximiser of every s) or 'sampled' (s fixed Gumbel draws per node).",
                            choices=("exact", "sampled"), flag=False)
    emd_iters: int = option(300, "Mirror descent iterations M at most (0: pi stays at its random start).",
                            min=0, max=10000, flag=False)
    emd_step: float = option(1.0, "Initial mirror descent step eta (Armijo: doubled after a step taken, halved "
                                  "after one refused).", min=1e-8, flag=False)
    emd_tol: float = option(1e-4, "Tolerance epsilon: an image has converged when a step gains less than it.",
                            min=0.0, flag=False)
    tau: float = option(1.0, "Initial Gumbel-Softmax temperature.", min=1e-3, flag=False)
    tau_min: float = option(0.5, "Lowest temperature of the annealing.", min=1e-3, flag=False)
    anneal_steps: int = option(200, "Training steps by which the annealing reaches tau_min (sets beta).", min=1,
                               flag=False)
    hidden: int = option(128, "Width of the potential MLPs.", min=1, flag=False)
    rank: int = option(8, "Rank of the pairwise potential tables.", min=1, flag=False)
    bg_ratio: float = option(3.0, "Unannotated pairs sampled per annotated pair of an image (training).", min=0.0,
                             flag=False)
    object_loss: float = option(1.0, "Weight of the object nodes' cross entropy.", min=0.0, flag=False)
    resample: bool = option(False, "Bi-level resampling of the training images (long tail, as BGNN).", flag=False)
    repeat_thresh: float = option(0.07, "Repeat threshold t: image repeat factor max_c max(1, sqrt(t / f_c)).", min=1e-6, max=1.0,
                                  flag=False)
    drop_rate: float = option(0.7, "Instance drop rate gamma_d of the resampling.", min=0.0, max=1.0, flag=False)
    max_boxes: int = option(12, "Detections kept per image (SGDet) before pairing.", min=2, flag=False)

    def validate(self) -> None:
        super().validate()
        if self.samples < 1:
            raise SgtoolError(f"{flag('samples')} must be at least 1, not {self.samples}.", f"Use e.g. {how_to_set(IwslConfig, 'samples', 50)}.")
        if self.tau_min > self.tau:
            raise SgtoolError(f"Temperatures need 0 < tau_min <= tau, not {self.tau_min} and {self.tau}.",
                              f"Use {how_to_set(IwslConfig, 'tau', 1)} {how_to_set(IwslConfig, 'tau_min', 0.5)}.")


def temperature(step: int, tau: float, tau_min: float, beta: float) -> float:
    """The temperature after `step` updates tau <- max(tau exp(-beta t), tau_min), t = 1..step (Alg. 1, step 10):
    max(tau_0 exp(-beta step (step + 1) / 2), tau_min) in closed form."""
    return max(tau * math.exp(-beta * step * (step + 1) / 2), tau_min)


def annealing_rate(tau: float, tau_min: float, steps: int) -> float:
    """beta with which Alg. 1's annealing reaches tau_min at step `steps`: tau exp(-beta T (T + 1) / 2) = tau_min."""
    return 2 * math.log(tau / tau_min) / (steps * (steps + 1))


# ---------------------------------------------------------------- Gumbel-Softmax and the bound

def sample_concrete(log_pi: torch.Tensor, tau: float, samples: int, generator: torch.Generator | None = None,
                    noise: torch.Tensor | None = None) -> torch.Tensor:
    """(S, ..., K) log y of Gumbel-Softmax samples y = softmax((log pi + g) / tau) (Eq. 6)."""
    if noise is None:
        noise = gumbel_noise((samples, *log_pi.shape), generator, log_pi.device)
    return F.log_softmax((log_pi + noise) / tau, dim=-1)


def gumbel_noise(shape: Sequence[int], generator: torch.Generator | None, device: Any = "cpu") -> torch.Tensor:
    u = torch.rand(tuple(shape), generator=generator).clamp(1e-10, 1 - 1e-7)
    return (-torch.log(-torch.log(u))).to(device)


def random_simplex(shape: Sequence[int], generator: torch.Generator | None, device: Any = "cpu") -> torch.Tensor:
    """log pi of points drawn uniformly on the simplices of the last dim (Dirichlet(1): normalised Exp(1) draws)."""
    u = torch.rand(tuple(shape), generator=generator).clamp(1e-10, 1 - 1e-7)
    return F.log_softmax(torch.log(-torch.log(u)), dim=-1).to(device)


def sample_log_q(y: torch.Tensor, log_pi: torch.Tensor) -> torch.Tensor:
    """log q_pi(y) = y . log pi (Eq. 16 with pi's log-probabilities as its logits: there max and the L1 norm of
    exp cancel), the categorical log-probability, exact at the one-hot corners the samples tend to as tau -> 0."""
    return (y * log_pi).sum(-1)


def importance_bound(log_weights: torch.Tensor) -> torch.Tensor:
    """L_s = logsumexp_j w_j - log s from (s, ...) log importance weights log s(x, y_j) - log q(y_j) (Eq. 15)."""
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


def node_bounds(local: torch.Tensor, log_pi: torch.Tensor, tau: float, noise: torch.Tensor) -> torch.Tensor:
    """(n,) per-node L_s^n (Eq. 13-15) of nodes with local log scores `local` (n, K), q = GS(pi, tau), noise (S, n, K)."""
    y = sample_concrete(log_pi, tau, 0, noise=noise).exp()
    return importance_bound((y * local).sum(-1) - sample_log_q(y, log_pi))


def entropic_mirror_ascent(objective: Callable[[list[torch.Tensor]], torch.Tensor], log_pis: list[torch.Tensor],
                           owners: list[torch.Tensor], num_groups: int, step: float, iters: int,
                           tol: float) -> Ascent:
    """Maximise objective(pis) -> (G,) over products of simplices (last dim) by entropic mirror descent (Alg. 2).

    The objective is a sum of independent groups (images); rows of log_pis[k] belong to groups owners[k].
    A step is pi <- pi exp(eta_g grad_pi) / Z. Its size follows Armijo's rule per group: a step is taken when
    it gains at least half of its linear prediction <grad, pi' - pi>; then eta_g doubles, else it halves and
    pi stays. A group has converged when a taken step gained less than tol (Alg. 2 step 4); the loop ends when
    every group has, or after `iters` steps. Values never decrease."""
    current = [lp.detach() for lp in log_pis]
    value, grads = _value_and_grad(objective, current)
    start, eta = value.clone(), torch.full((num_groups,), float(step), device=value.device)
    done = torch.zeros(num_groups, dtype=torch.bool, device=value.device)
    history, taken = [float(value.mean()) if num_groups else 0.0], 0
    while taken < iters and not bool(done.all()):
        taken += 1
        candidate = [F.log_softmax(lp + (eta[own, None] * g).clamp(-50, 50), dim=-1)
                     for lp, g, own in zip(current, grads, owners)]
        new_value, new_grads = _value_and_grad(objective, candidate)
        linear = value.new_zeros(num_groups)
        for c, lp, g, own in zip(candidate, current, grads, owners):
            linear.index_add_(0, own, (g * (c.exp() - lp.exp())).sum(-1))
        accept = (new_value - value >= 0.5 * linear) & (new_value >= value) & ~done
        done |= accept & (new_value - value < tol)
        current = [torch.where(accept[own, None], c, lp) for c, lp, own in zip(candidate, current, owners)]
        grads = [torch.where(accept[own, None], ng, g) for ng, g, own in zip(new_grads, grads, owners)]
        value = torch.where(accept, new_value, value)
        eta = torch.where(accept, eta * 2, eta / 2)
        done |= eta < 1e-12  # no step of any size gains: a stationary point
        history.append(float(value.mean()) if num_groups else 0.0)
    return Ascent(current, start, value, history, done)


@dataclass
class Ascent:
    """What the mirror ascent returns: the final log pis, the (G,) values at the start and at the end, the mean
    value after each iteration, and which groups met the stopping rule."""

    log_pis: list[torch.Tensor]
    start: torch.Tensor
    final: torch.Tensor
    history: list[float]
    converged: torch.Tensor


def _value_and_grad(objective: Callable[[list[torch.Tensor]], torch.Tensor],
                    log_pis: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The objective's (G,) values at exp(log_pis) and its gradient with respect to pi (not log pi)."""
    with torch.enable_grad():
        pis = [lp.exp().requires_grad_(True) for lp in log_pis]
        value = objective(pis)
        grads = torch.autograd.grad(value.sum(), pis, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
             for p, g in zip(pis, grads)]
    return value.detach(), grads


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
        """(S, I) log s(x, y) per image for (S, N, C) and (S, M, P) relaxed (or one-hot) assignments (Eq. 4)."""
        s, o, t = self.pairs[:, 0], self.pairs[:, 1], self.tables
        nodes = (y_obj * self.object_unary).sum(-1)
        edges = (y_pred * self.predicate_unary).sum(-1)
        edges = edges + (self.u_subject * (y_obj[:, s] @ t["E_s"]) * (y_pred @ t["F_s"])).sum(-1)
        edges = edges + (self.u_object * (y_obj[:, o] @ t["E_o"]) * (y_pred @ t["F_o"])).sum(-1)
        edges = edges + (self.w_pair * (y_obj[:, s] @ t["G_s"]) * (y_obj[:, o] @ t["G_o"])).sum(-1)
        return _per_image(nodes, self.box_image, self.num_images) + _per_image(edges, self.pair_image, self.num_images)

    def local_logits(self, pi_obj: torch.Tensor, pi_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C), (M, P): the local log marginal scores l_n (Eq. 11-12), the neighbours at pi."""
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


@dataclass
class Inference:
    """What the variational inference step (Alg. 1 steps 3-7) leaves: pi_0, pi* and the bounds there."""

    log_pi_obj: torch.Tensor  # (N, C) pi*; the one-hot of the given label for an observed node
    log_pi_pred: torch.Tensor  # (M, P)
    start_obj: torch.Tensor  # (N, C) the random pi_0 (the one-hot for an observed node)
    start_pred: torch.Tensor  # (M, P)
    bound_obj: torch.Tensor  # (N,) per-node L_s^n at pi* (Eq. 13-15; 0 for observed nodes), the constant of Eq. 17
    bound_pred: torch.Tensor  # (M,)
    start: torch.Tensor  # (I,) the image's bound L_s at pi_0
    final: torch.Tensor  # (I,) the same at pi*
    converged: torch.Tensor  # (I,) bool: the image met the stopping rule within emd_iters
    history: list[float]

    @property
    def gain(self) -> torch.Tensor:
        """(I,) L_s(pi*) - L_s(pi_0) per image."""
        return self.final - self.start


def image_log_weights(pot: Potentials, log_pi_obj: torch.Tensor, log_pi_pred: torch.Tensor, tau: float,
                      noise_obj: torch.Tensor, noise_pred: torch.Tensor,
                      observed: torch.Tensor | None) -> torch.Tensor:
    """(S, I) log w_j = log s(x, y_j) - log q(y_j) per image (Eq. 4, 8, 9, 16), y_j = g_pi(sigma_j) per node;
    observed (N, C) one-hot clamps the object nodes (no q term). Leading dims of log_pi broadcast with S."""
    y_pred = sample_concrete(log_pi_pred, tau, 0, noise=noise_pred).exp()
    log_q = _per_image(sample_log_q(y_pred, log_pi_pred), pot.pair_image, pot.num_images)
    if observed is None:
        y_obj = sample_concrete(log_pi_obj, tau, 0, noise=noise_obj).exp()
        log_q = log_q + _per_image(sample_log_q(y_obj, log_pi_obj), pot.box_image, pot.num_images)
    else:
        y_obj = observed.expand(y_pred.shape[0], *observed.shape)
    return pot.log_score(y_obj, y_pred) - log_q


def exact_image_bound(pot: Potentials, log_pi_obj: torch.Tensor, log_pi_pred: torch.Tensor,
                      observed: torch.Tensor | None) -> torch.Tensor:
    """(I,) E_q[log s(x, z)] + H(q) per image in closed form (z one-hot, q the categorical product of Eq. 9):
    log s is linear in each node's one-hot, so its expectation is log s at pi; the s = 1 bound (the ELBO) of
    the discrete model. Each node's best pi given its neighbours is softmax of its local scores (Eq. 11-12),
    which is also the maximiser of that node's L_s for every s (the zero-variance proposal)."""
    pi_pred = log_pi_pred.exp()
    value = pot.log_score((observed if observed is not None else log_pi_obj.exp())[None], pi_pred[None])[0]
    value = value - _per_image(sample_log_q(pi_pred, log_pi_pred)[None], pot.pair_image, pot.num_images)[0]
    if observed is None:
        value = value - _per_image(sample_log_q(log_pi_obj.exp(), log_pi_obj)[None], pot.box_image, pot.num_images)[0]
    return value


def batch_bounds(pot: Potentials, log_pi_obj: torch.Tensor, log_pi_pred: torch.Tensor, tau: float,
                 noise_obj: torch.Tensor, noise_pred: torch.Tensor,
                 observed: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,), (M,) per-node bounds L_s^n (Eq. 13-15), local scores at the neighbours' pi; observed nodes get 0."""
    local_obj, local_pred = pot.local_logits(log_pi_obj.exp(), log_pi_pred.exp())
    bound_pred = node_bounds(local_pred, log_pi_pred, tau, noise_pred)
    bound_obj = (torch.zeros(len(local_obj), device=local_obj.device) if observed is not None
                 else node_bounds(local_obj, log_pi_obj, tau, noise_obj))
    return bound_obj, bound_pred


def infer(potentials: Potentials, tau: float, samples: int, config: IwslConfig,
          generator: torch.Generator | None = None, observed: torch.Tensor | None = None,
          start_generator: torch.Generator | None = None) -> Inference:
    """Alg. 1 steps 3-7: random pi_0 (from start_generator, else generator), s Gumbel draws per node fixed for
    the whole ascent (common random numbers), entropic mirror ascent of each image's bound L_s (Eq. 8-9).

    observed: (N, C) one-hot of given object labels (PredCls), or None when the objects are inferred."""
    pot = potentials.detach()
    (n, c), (m, p) = pot.object_unary.shape, pot.predicate_unary.shape
    like, starts = dict(device=pot.object_unary.device, dtype=pot.object_unary.dtype), start_generator or generator
    start_obj = (random_simplex((n, c), starts).to(**like) if observed is None
                 else observed.clamp(min=1e-30).log().to(**like))
    start_pred = random_simplex((m, p), starts).to(**like)
    noise_obj = gumbel_noise((samples, n, c), generator).to(**like)
    noise_pred = gumbel_noise((samples, m, p), generator).to(**like)

    def objective(pis: list[torch.Tensor]) -> torch.Tensor:
        logs = [q.clamp(min=1e-30).log() for q in pis]
        log_obj = logs[0] if observed is None else start_obj
        if config.estimator == "exact":
            return exact_image_bound(pot, log_obj, logs[-1], observed)
        return importance_bound(image_log_weights(pot, log_obj, logs[-1], tau, noise_obj, noise_pred, observed))

    if observed is None:
        log_pis, owners = [start_obj, start_pred], [pot.box_image, pot.pair_image]
    else:
        log_pis, owners = [start_pred], [pot.pair_image]
    ascent = entropic_mirror_ascent(objective, log_pis, owners, pot.num_images, config.emd_step,
                                    config.emd_iters, config.emd_tol)
    log_obj = ascent.log_pis[0] if observed is None else start_obj
    with torch.no_grad():
        bound_obj, bound_pred = batch_bounds(pot, log_obj, ascent.log_pis[-1], tau, noise_obj, noise_pred, observed)
    return Inference(log_obj, ascent.log_pis[-1], start_obj, start_pred, bound_obj, bound_pred, ascent.start,
                     ascent.final, ascent.converged, ascent.history)


def surrogate_logits(potentials: Potentials, inference: Inference) -> tuple[torch.Tensor, torch.Tensor]:
    """phi_n = log s(x_n, z_n) - max_pi L_s^n (Eq. 17): local scores at pi* less the node's bound."""
    obj, pred = potentials.local_logits(inference.log_pi_obj.exp(), inference.log_pi_pred.exp())
    return obj - inference.bound_obj[:, None], pred - inference.bound_pred[:, None]


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

def _one_hidden_layer_mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class IwslNet(nn.Module):
    """Features -> potentials. Inputs: box geometry and (optionally) ROI features; never an object label."""

    def __init__(self, config: IwslConfig, num_object_classes: int, num_predicate_classes: int,
                 visual_dim: int = 0) -> None:
        super().__init__()
        h, r, c, p = config.hidden, config.rank, num_object_classes, num_predicate_classes
        self.visual_dim = visual_dim
        self.object_features = _one_hidden_layer_mlp(OBJECT_GEOMETRY_DIM + visual_dim, h, h)
        self.pair_features = _one_hidden_layer_mlp(2 * h + SPATIAL_DIM + OBJECT_GEOMETRY_DIM + visual_dim, h, h)
        self.global_features = _one_hidden_layer_mlp(OBJECT_GEOMETRY_DIM + h, h, h)
        self.object_unary, self.predicate_unary = nn.Linear(h, c), nn.Linear(h, p)
        self.global_object, self.global_predicate = nn.Linear(h, c), nn.Linear(h, p)
        self.pairwise = nn.Linear(h, 3 * r)
        sizes = {"E_s": c, "F_s": p, "E_o": c, "F_o": p, "G_s": c, "G_o": c}
        self.tables = nn.ParameterDict({k: nn.Parameter(torch.randn(n, r) / math.sqrt(r)) for k, n in sizes.items()})

    def forward(self, batch: RelBatch) -> Potentials:
        image, pair_image = batch.box_image, batch.pair_image
        parts = [batch.object_geometry()]
        if self.visual_dim:
            parts.append(batch.visual["objects"])
        h = self.object_features(torch.cat(parts, 1))
        s, o = batch.pairs[:, 0], batch.pairs[:, 1]
        pair_parts = [h[s], h[o], batch.pair_geometry(), batch.union_geometry()]
        if self.visual_dim:
            pair_parts.append(batch.visual["union"])
        f = self.pair_features(torch.cat(pair_parts, 1))
        count = torch.bincount(image, minlength=batch.num_images)[:, None]
        mean = h.new_zeros(batch.num_images, h.shape[1]).index_add_(0, image, h) / count.clamp(min=1)
        scene = torch.where(count > 0, batch.scene_geometry(), 0.0)  # an image without boxes has no scene box
        g = self.global_features(torch.cat([scene, mean], 1))
        u = self.pairwise(f).chunk(3, dim=1)
        return Potentials(self.object_unary(h) + self.global_object(g)[image],
                          self.predicate_unary(f) + self.global_predicate(g)[pair_image],
                          u[0], u[1], u[2], dict(self.tables.items()), batch.pairs, image, pair_image,
                          batch.num_images)


# ---------------------------------------------------------------- the head

@register_head("iwsl")
class IwslHead(NetworkHelpers, TrainableHead):
    """Importance weighted structure learning (Liu, Bober, Kittler, TPAMI 2023; see the module docstring)."""

    Config = IwslConfig
    labels_objects = True  # SGCls / SGDet: the object labels and scores are the head's own node inference
    progress_terms = ("bound_gain", "emd_iters")  # shown on the training progress line after each epoch

    def __init__(self, config: IwslConfig, num_object_classes: int, num_predicate_classes: int) -> None:
        super().__init__(config, num_object_classes, num_predicate_classes)
        self.model: IwslNet | None = None
        self.visual_source: VisualSource | None = None
        self.step = 0  # training steps taken (temperature annealing)
        self.generator = torch.Generator().manual_seed(0)  # pi_0 and Gumbel noise of training
        self.predict_seed = 0  # Gumbel noise of prediction (fixed: a checkpoint gives the same predictions)
        self.start_seed: int | None = None  # pi_0 of prediction; None: drawn from the noise's generator
        self.predict_stats: dict[str, float] = {}
        self.inferred: dict[str, np.ndarray] = {}  # argmax pi* / unary of the last prediction (benchmarks)

    @property
    def tau(self) -> float:
        c = self.config
        return temperature(self.step, c.tau, c.tau_min, annealing_rate(c.tau, c.tau_min, c.anneal_steps))

    def build(self, data: TrainData) -> IwslNet:
        torch.manual_seed(data.seed)
        self.generator.manual_seed(data.seed)
        dim = int(self.visual_source.dim) if self.wants_visual() else 0
        self.model = IwslNet(self.config, self.num_object_classes, self.num_predicate_classes, dim).to(data.device)
        return self.model

    def random_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def set_random_state(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])

    def batches(self, graphs: SceneGraphs, *, shuffle: bool, rng: np.random.Generator) -> Any:
        c = self.config
        if not (c.resample and shuffle):
            return train_batches(graphs, c.batch_size, c.bg_ratio, shuffle, rng, self._visual())
        r_image, r_pred = repeat_factors(graphs, self.num_predicate_classes, c.repeat_thresh)
        return train_batches(graphs, c.batch_size, c.bg_ratio, shuffle, rng, self._visual(),
                             order=resampled_order(r_image, rng), keep=instance_filter(r_image, r_pred, c.drop_rate))

    def loss(self, batch: RelBatch) -> dict[str, Any]:
        """Alg. 1 steps 3-10 on one batch with s = learn_samples: the objects are latent nodes (labels are targets)."""
        batch = batch.to(self._device())
        potentials = self._require_model()(batch)
        tau = self.tau
        inference = infer(potentials, tau, self.config.learn_samples, self.config, self.generator)
        phi_obj, phi_pred = surrogate_logits(potentials, inference)
        predicate = F.cross_entropy(phi_pred, batch.targets) if len(batch.targets) else phi_pred.sum() * 0
        objects = F.cross_entropy(phi_obj, batch.labels)
        if torch.is_grad_enabled():
            self.step += 1
        return {"loss": predicate + self.config.object_loss * objects, "predicate_loss": predicate.detach(),
                "object_loss": objects.detach(), "bound": inference.final.mean(),
                "bound_gain": inference.gain.mean(), "converged": inference.converged.float().mean(),
                "tau": torch.tensor(tau), "emd_iters": torch.tensor(float(len(inference.history) - 1))}

    @torch.no_grad()
    def predict(self, objects: ObjectPredictions, reporter: Any = None) -> Predictions:
        """PredCls: the given labels are observed nodes. SGCls / SGDet: the object nodes are inferred and
        their labels and scores (the best non-background class of Eq. 18 at pi*) replace the source's.
        SGDet relates the max_boxes best detections of each image only: every object node sums the messages
        of all its pairs, so a crowd of detections swamps the unaries (docs/methods/iwsl.md).
        The Gumbel noise comes from predict_seed, pi_0 from start_seed (None: the same generator)."""
        model = self._require_model()
        model.eval()
        if objects.detected:
            objects = cap_boxes(objects, self.config.max_boxes)
        infer_objects = not objects.labels_given
        labels, scores = objects.labels.copy(), objects.scores.astype(np.float32).copy()
        log = _PredictionLog(len(labels))
        generator = torch.Generator().manual_seed(self.predict_seed)
        starts = None if self.start_seed is None else torch.Generator().manual_seed(10_007 + self.start_seed)
        for batch in predict_batches(objects.image_ids, objects.box_offsets, objects.boxes, objects.labels,
                                     objects.scores, self.config.batch_size, self._visual()):
            batch = batch.to(self._device())
            potentials = model(batch)
            observed = None if infer_objects else F.one_hot(batch.labels, self.num_object_classes).float()
            inference = infer(potentials, self.tau, self.config.samples, self.config, generator, observed, starts)
            phi_obj, phi_pred = surrogate_logits(potentials, inference)
            log.add(batch, potentials, inference, F.softmax(phi_pred, 1).cpu().numpy())
            if infer_objects and len(batch.rows):
                best, index = F.softmax(phi_obj, 1)[:, 1:].cpu().max(1)
                labels[batch.rows], scores[batch.rows] = index.numpy() + 1, best.numpy()
        self.inferred = log.arrays()
        self.predict_stats = log.stats(labels if infer_objects else None, self.config.samples, self.tau)
        predictions = assemble(objects.image_ids, objects.box_offsets, objects.boxes, labels, scores,
                               log.results, self.num_predicate_classes)
        predictions.meta = dict(self.predict_stats)
        return predictions

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


class _PredictionLog:
    """What prediction records per batch: the predicate scores, and the inference in numbers."""

    def __init__(self, num_boxes: int) -> None:
        self.results: list[tuple[RelBatch, np.ndarray]] = []
        self.images: dict[str, list[torch.Tensor]] = {"gain": [], "final": [], "converged": []}
        self.nodes: dict[str, list[torch.Tensor]] = {"kept_objects": [], "kept_predicates": [], "pi_predicates": []}
        self.pi_objects = np.zeros(num_boxes, dtype=np.int64)  # argmax pi* per box row (0: not inferred)
        self.unary_objects = np.zeros(num_boxes, dtype=np.int64)  # argmax of the object unary alone
        self.iterations: list[int] = []

    def add(self, batch: RelBatch, pot: Potentials, inference: Inference, pred_scores: np.ndarray) -> None:
        self.results.append((batch, pred_scores))
        rows = batch.rows
        for key in self.images:
            self.images[key].append(getattr(inference, key).float().cpu())
        pi_obj, pi_pred = inference.log_pi_obj.argmax(1).cpu(), inference.log_pi_pred.argmax(1).cpu()
        self.nodes["kept_objects"].append(pi_obj == inference.start_obj.argmax(1).cpu())
        self.nodes["kept_predicates"].append(pi_pred == inference.start_pred.argmax(1).cpu())
        self.nodes["pi_predicates"].append(pi_pred)
        self.pi_objects[rows] = pi_obj.numpy()
        self.unary_objects[rows] = pot.object_unary[:, 1:].argmax(1).cpu().numpy() + 1
        self.iterations.append(len(inference.history) - 1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"pi_objects": self.pi_objects.copy(), "unary_objects": self.unary_objects.copy(),
                "pi_predicates": torch.cat(self.nodes["pi_predicates"]).numpy() if self.iterations else np.zeros(0)}

    def stats(self, labels: np.ndarray | None, samples: int, tau: float) -> dict[str, float]:
        """Mean bound per image at pi* and its gain over pi_0, the share of images converged, the mean number of
        mirror steps, the share of nodes whose argmax stayed pi_0's, and (objects inferred) the share of object
        labels equal to the unary argmax."""
        mean = (lambda parts: float(torch.cat(parts).float().mean()) if parts and len(torch.cat(parts)) else 0.0)
        out = {"bound_per_image": mean(self.images["final"]), "bound_gain_per_image": mean(self.images["gain"]),
               "converged_share": mean(self.images["converged"]),
               "emd_iters_mean": float(np.mean(self.iterations)) if self.iterations else 0.0,
               "kept_start_argmax_predicates": mean(self.nodes["kept_predicates"]), "samples": samples, "tau": tau}
        if labels is not None:
            out["kept_start_argmax_objects"] = mean(self.nodes["kept_objects"])
            out["unary_agreement"] = float(np.mean(labels == self.unary_objects)) if len(labels) else 0.0
        return out
