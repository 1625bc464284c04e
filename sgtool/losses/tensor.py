"""Low-rank non-negative CP likelihood of the tensor head (Hwang et al., CVPR 2018).

Per box pair the network emits R score vectors for subject (S), predicate (P) and object (O)
classes; φ = exp(score) and the unnormalised triplet tensor is

    y(i, j, k) = Σ_r φ_s[r, i] φ_p[r, j] φ_o[r, k],
    Z          = Σ_r (Σ_i φ_s[r, i]) (Σ_j φ_p[r, j]) (Σ_k φ_o[r, k]).

Everything is computed in log space from the (B, R, C) score tensors, so the loss and its
gradient cost O(B·R·(S+P+O)) and never build the S×P×O tensor. Only top-k search over the
product builds it, a few pairs at a time (`chunk`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from sgtool.errors import SgtoolError

#: elements of the S×P×O product built at once by `topk_triplets` when `chunk` is None (64 MiB fp32)
DEFAULT_CHUNK_ELEMENTS = 1 << 24


def _check_scores(s_scores: Tensor, p_scores: Tensor, o_scores: Tensor) -> None:
    shapes = [tuple(t.shape) for t in (s_scores, p_scores, o_scores)]
    if any(len(s) != 3 for s in shapes) or len({s[:2] for s in shapes}) != 1:
        raise SgtoolError(f"Tensor-head scores must be (B, R, C) with the same B and R, got {shapes}.",
                          "Pass subject, predicate and object scores shaped (pairs, rank, classes).")


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return values
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    raise SgtoolError(f"Unknown reduction '{reduction}'.", "Use one of: none, mean, sum.")


def log_partition(s_scores: Tensor, p_scores: Tensor, o_scores: Tensor) -> Tensor:
    """log Z per pair, (B,): logsumexp over r of the three per-factor logsumexps over classes."""
    _check_scores(s_scores, p_scores, o_scores)
    per_rank = s_scores.logsumexp(-1) + p_scores.logsumexp(-1) + o_scores.logsumexp(-1)
    return per_rank.logsumexp(-1)


def _gather_rank_scores(scores: Tensor, index: Tensor) -> Tensor:
    """scores (B, R, C), index (B,) -> scores[b, :, index[b]] as (B, R)."""
    expanded = index.long().view(-1, 1, 1).expand(-1, scores.shape[1], 1)
    return scores.gather(2, expanded).squeeze(2)


def log_joint(s_scores: Tensor, p_scores: Tensor, o_scores: Tensor, triplets: Tensor,
              normalized: bool = True) -> Tensor:
    """log p(i, j, k | pair) for the given triplets (B, 3) -> (B,); log y when not normalized."""
    _check_scores(s_scores, p_scores, o_scores)
    per_rank = (_gather_rank_scores(s_scores, triplets[:, 0]) + _gather_rank_scores(p_scores, triplets[:, 1])
                + _gather_rank_scores(o_scores, triplets[:, 2]))
    log_y = per_rank.logsumexp(-1)
    return log_y - log_partition(s_scores, p_scores, o_scores) if normalized else log_y


def factored_nll(s_scores: Tensor, p_scores: Tensor, o_scores: Tensor, targets: Tensor,
                 reduction: str = "mean") -> Tensor:
    """−log y(i*, j*, k*) + log Z per pair, without the S×P×O tensor. targets: (B, 3) class ids."""
    return _reduce(-log_joint(s_scores, p_scores, o_scores, targets), reduction)


def _shifted_factors(scores: Tensor) -> tuple[Tensor, Tensor]:
    """exp(scores − max over classes) (≤ 1) and that max (B, R)."""
    peak = scores.amax(-1)
    return (scores - peak.unsqueeze(-1)).exp(), peak


def log_full_tensor(s_scores: Tensor, p_scores: Tensor, o_scores: Tensor) -> Tensor:
    """log y as an explicit (B, S, P, O) tensor, stabilised by per-rank max shifts."""
    _check_scores(s_scores, p_scores, o_scores)
    phi_s, m_s = _shifted_factors(s_scores)
    phi_p, m_p = _shifted_factors(p_scores)
    phi_o, m_o = _shifted_factors(o_scores)
    rank_log = m_s + m_p + m_o                       # (B, R): log of each rank's scale
    shift = rank_log.amax(-1, keepdim=True)         # (B, 1)
    weights = (rank_log - shift).exp()              # (B, R), ≤ 1
    y = torch.einsum("br,bri,brj,brk->bijk", weights, phi_s, phi_p, phi_o)
    return y.log() + shift.view(-1, 1, 1, 1)


def full_tensor_nll(s_scores: Tensor, p_scores: Tensor, o_scores: Tensor, targets: Tensor,
                    reduction: str = "mean") -> Tensor:
    """Reference loss that builds the S×P×O tensor: for tests and benchmarks only."""
    log_y = log_full_tensor(s_scores, p_scores, o_scores)
    flat = log_y.flatten(1)
    n_p, n_o = log_y.shape[2], log_y.shape[3]
    t = targets.long()
    target_index = (t[:, 0] * n_p + t[:, 1]) * n_o + t[:, 2]
    picked = flat.gather(1, target_index.view(-1, 1)).squeeze(1)
    return _reduce(flat.logsumexp(1) - picked, reduction)


def _chunk_size(chunk: int | None, product: int) -> int:
    if chunk is None:
        return max(1, DEFAULT_CHUNK_ELEMENTS // max(product, 1))
    if chunk < 1:
        raise SgtoolError(f"Chunk size must be at least 1, got {chunk}.", "Pass chunk=None for an automatic size.")
    return chunk


def _check_prior(log_prior: Tensor | None, shape: tuple[int, int, int]) -> None:
    if log_prior is not None and tuple(log_prior.shape) != shape:
        raise SgtoolError(f"Triplet prior has shape {tuple(log_prior.shape)}, expected {shape}.",
                          "The prior must be (subject classes, predicate classes, object classes).")


def _topk_chunk(s: Tensor, p: Tensor, o: Tensor, k: int, log_prior: Tensor | None) -> tuple[Tensor, Tensor]:
    """Normalised top-k log-probabilities and flat indices for one chunk of pairs."""
    flat = log_full_tensor(s, p, o).flatten(1)
    if log_prior is None:
        flat = flat - log_partition(s, p, o).unsqueeze(1)
    else:
        flat = flat + log_prior.reshape(1, -1)
        flat = flat - flat.logsumexp(1, keepdim=True)
    return flat.topk(k, dim=1)


@torch.no_grad()
def topk_triplets(s_scores: Tensor, p_scores: Tensor, o_scores: Tensor, k: int,
                  prior: Tensor | None = None, chunk: int | None = None,
                  prior_is_log: bool = False) -> tuple[Tensor, Tensor]:
    """Top-k (subject, predicate, object) per pair over the whole S×P×O product.

    Returns (log_probs (B, k), triplets (B, k, 3)). With `prior` ψ (S, P, O) the distribution is
    ψ·y renormalised over the product (log space; pass log ψ with prior_is_log=True). Pairs are
    processed `chunk` at a time so memory is chunk·S·P·O, never B·S·P·O.
    """
    _check_scores(s_scores, p_scores, o_scores)
    shape = (s_scores.shape[2], p_scores.shape[2], o_scores.shape[2])
    _check_prior(prior, shape)
    product = shape[0] * shape[1] * shape[2]
    if not 1 <= k <= product:
        raise SgtoolError(f"k must be between 1 and {product}, got {k}.", "Ask for fewer triplets per pair.")
    log_prior = None if prior is None else (prior if prior_is_log else prior.log()).to(s_scores.dtype)
    step = _chunk_size(chunk, product)
    values, indices = [], []
    for start in range(0, s_scores.shape[0], step):
        part = slice(start, start + step)
        v, i = _topk_chunk(s_scores[part], p_scores[part], o_scores[part], k, log_prior)
        values.append(v)
        indices.append(i)
    flat_index = torch.cat(indices) if indices else s_scores.new_zeros((0, k), dtype=torch.long)
    value = torch.cat(values) if values else s_scores.new_zeros((0, k))
    return value, unravel_triplets(flat_index, shape)


def unravel_triplets(flat_index: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """Flat indices into an (S, P, O) tensor -> (..., 3) class ids."""
    n_p, n_o = shape[1], shape[2]
    subj = torch.div(flat_index, n_p * n_o, rounding_mode="floor")
    rest = flat_index - subj * n_p * n_o
    pred = torch.div(rest, n_o, rounding_mode="floor")
    return torch.stack([subj, pred, rest - pred * n_o], dim=-1)


def predicate_log_probs(s_scores: Tensor, p_scores: Tensor, o_scores: Tensor, subj_labels: Tensor,
                        obj_labels: Tensor, conditional: bool = True) -> Tensor:
    """log p(j | i*, k*, pair) for fixed labels (PredCls), (B, P); the joint log p(i*, j, k*) if not conditional."""
    _check_scores(s_scores, p_scores, o_scores)
    fixed = _gather_rank_scores(s_scores, subj_labels) + _gather_rank_scores(o_scores, obj_labels)  # (B, R)
    log_y = (fixed.unsqueeze(-1) + p_scores).logsumexp(1)                                       # (B, P)
    if conditional:
        return log_y - log_y.logsumexp(-1, keepdim=True)
    return log_y - log_partition(s_scores, p_scores, o_scores).unsqueeze(-1)


@torch.no_grad()
def topk_predicates(s_scores: Tensor, p_scores: Tensor, o_scores: Tensor, subj_labels: Tensor,
                    obj_labels: Tensor, k: int, conditional: bool = True) -> tuple[Tensor, Tensor]:
    """Top-k predicates per pair for given subject/object labels: (log_probs (B, k), predicates (B, k))."""
    if not 1 <= k <= p_scores.shape[2]:
        raise SgtoolError(f"k must be between 1 and {p_scores.shape[2]}, got {k}.", "Ask for fewer predicates.")
    log_p = predicate_log_probs(s_scores, p_scores, o_scores, subj_labels, obj_labels, conditional)
    return log_p.topk(k, dim=1)
