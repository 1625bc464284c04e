"""Low-rank non-negative CP likelihood of the tensor head (Dupty, Zhang, Lee, AAAI 2020, eq. 3-6).

Per box pair the network emits R score vectors for subject (S), predicate (P) and object (O)
classes; φ = exp(score) and the unnormalised triplet tensor is

    y(i, j, k) = Σ_r φ_s[r, i] φ_p[r, j] φ_o[r, k],
    Z          = Σ_r (Σ_i φ_s[r, i]) (Σ_j φ_p[r, j]) (Σ_k φ_o[r, k]).

Everything is computed in log space from the (B, R, C) score tensors, so the loss and its
gradient cost O(B·R·(S+P+O)) and never build the S×P×O tensor. The top-k search over the
product (`topk_triplets`) is exact and builds it only for pairs whose pruned search cannot prove
its result, a few pairs at a time (`chunk`).
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


#: subject / object classes kept per pair by the pruned search before its exactness check
PRUNE_CLASSES = 16
#: the pruned search is used when the prior exceeds its floor on at most this share of the product
SPARSE_SHARE = 0.05


def _pruned_topk_y(w: Tensor, a: Tensor, b: Tensor, c: Tensor, k: int, keep: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k of the unnormalised y = Σ_r w_r a_r ⊗ b_r ⊗ c_r (shifted factors ≤ 1, max 1 per rank) over
    the `keep` best subject and object classes by the bound u_s(i) = Σ_r w_r a_r(i) (every entry of
    subject i is at most that; likewise for objects). Exact when the best bound left out is at most
    the k-th value found. Returns (values (B, k), flat indices into S×P×O, exact (B,))."""
    n_s, n_p, n_o = a.shape[2], b.shape[2], c.shape[2]
    keep_s, keep_o = min(keep, n_s), min(keep, n_o)
    top_s, idx_s = torch.einsum("br,bri->bi", w, a).sort(1, descending=True)
    top_o, idx_o = torch.einsum("br,brk->bk", w, c).sort(1, descending=True)
    idx_s, idx_o = idx_s[:, :keep_s], idx_o[:, :keep_o]
    a_kept, c_kept = a.gather(2, _expand(idx_s, a)), c.gather(2, _expand(idx_o, c))
    y = torch.einsum("br,bri,brj,brk->bijk", w, a_kept, b, c_kept).flatten(1)  # (B, keep_s·P·keep_o)
    k_found = min(k, y.shape[1])
    values, local = y.topk(k_found, dim=1)
    left = torch.zeros(len(y), dtype=y.dtype)
    if keep_s < n_s:
        left = torch.maximum(left, top_s[:, keep_s])
    if keep_o < n_o:
        left = torch.maximum(left, top_o[:, keep_o])
    exact = left <= values[:, -1] if k_found == k else torch.zeros(len(y), dtype=torch.bool)
    i_local = torch.div(local, n_p * keep_o, rounding_mode="floor")
    rest = local - i_local * n_p * keep_o
    j = torch.div(rest, keep_o, rounding_mode="floor")
    flat = (idx_s.gather(1, i_local) * n_p + j) * n_o + idx_o.gather(1, rest - j * keep_o)
    return values, flat, exact


def _expand(index: Tensor, scores: Tensor) -> Tensor:
    return index[:, None, :].expand(-1, scores.shape[1], -1)


def _y_at(w: Tensor, a: Tensor, b: Tensor, c: Tensor, flat: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """y at flat indices: (B, T) for per-pair indices (B, T) or shared ones (T,)."""
    ijk = unravel_triplets(flat, shape)
    if flat.dim() == 1:
        return torch.einsum("br,brt->bt", w, a[:, :, ijk[:, 0]] * b[:, :, ijk[:, 1]] * c[:, :, ijk[:, 2]])
    pick = lambda f, col: f.gather(2, _expand(ijk[..., col], f))  # noqa: E731
    return torch.einsum("br,brt->bt", w, pick(a, 0) * pick(b, 1) * pick(c, 2))


def _sparse_prior_chunk(s: Tensor, p: Tensor, o: Tensor, k: int, prior: Tensor | None, floor: float,
                        support: Tensor, keep: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k of ψ·y for ψ = floor + Δ, Δ ≥ 0 nonzero on `support` (flat indices; none without a prior).

    An entry e off the support scores floor·y(e): if it is not among the top k of y, k entries have
    y ≥ y(e) and so score ≥ floor·y(e). Hence the exact top-k lies in (top k of y) ∪ support, both
    scored exactly. The normaliser Σ ψ y = floor·Σy + Σ_support Δ y needs no S×P×O tensor.
    Returns (log probabilities (B, k), flat indices, exact (B,): False where the pruned top k of y was not proven)."""
    (a, m_s), (b, m_p), (c, m_o) = _shifted_factors(s), _shifted_factors(p), _shifted_factors(o)
    rank_log = m_s + m_p + m_o
    w = (rank_log - rank_log.amax(-1, keepdim=True)).exp()  # (B, R)
    shape = (a.shape[2], b.shape[2], c.shape[2])
    y_top, flat_top, exact = _pruned_topk_y(w, a, b, c, k, keep)
    total = floor * (w * a.sum(-1) * b.sum(-1) * c.sum(-1)).sum(-1)
    if prior is None:
        return y_top.clamp_min(1e-38).log() - total.log()[:, None], flat_top, exact
    flat_prior = prior.reshape(-1)
    on_support = torch.zeros(flat_prior.numel(), dtype=torch.bool)
    on_support[support] = True
    top_scores = torch.where(on_support[flat_top], torch.zeros_like(y_top), y_top * floor)  # support entries come below
    y_support = _y_at(w, a, b, c, support, shape)
    support_scores = y_support * flat_prior[support]
    total = total + (y_support * (flat_prior[support] - floor)).sum(1)
    scores = torch.cat([top_scores, support_scores], 1)
    flat = torch.cat([flat_top, support.expand(len(s), -1)], 1)
    best, pos = scores.topk(min(k, scores.shape[1]), dim=1)
    return best.clamp_min(1e-38).log() - total.log()[:, None], flat.gather(1, pos), exact


def _prior_structure(log_prior: Tensor | None) -> tuple[Tensor | None, float, Tensor]:
    """(ψ, its floor, the flat indices where ψ exceeds the floor); floor 1 and no support without a prior."""
    if log_prior is None:
        return None, 1.0, torch.zeros(0, dtype=torch.long)
    psi = log_prior.exp()
    floor = float(psi.min())
    return psi, floor, torch.nonzero(psi.reshape(-1) > floor * (1 + 1e-6)).flatten()


@torch.no_grad()
def topk_triplets(s_scores: Tensor, p_scores: Tensor, o_scores: Tensor, k: int,
                  prior: Tensor | None = None, chunk: int | None = None,
                  prior_is_log: bool = False, prune: int = PRUNE_CLASSES) -> tuple[Tensor, Tensor]:
    """Top-k (subject, predicate, object) per pair over the whole S×P×O product (exact).

    Returns (log_probs (B, k), triplets (B, k, 3)). With `prior` ψ (S, P, O) the distribution is
    ψ·y renormalised over the product (pass log ψ with prior_is_log=True). When ψ is a floor plus a
    sparse part (the +1-smoothed counts are), each pair is searched over its `prune` most promising
    subject and object classes plus the sparse entries (`_sparse_prior_chunk`, with a bound that
    proves the result exact); pairs where the bound does not close, or every pair of a dense prior
    or with prune=0, are searched over the full product, `chunk` pairs at a time (memory chunk·S·P·O).
    """
    _check_scores(s_scores, p_scores, o_scores)
    shape = (s_scores.shape[2], p_scores.shape[2], o_scores.shape[2])
    _check_prior(prior, shape)
    product = shape[0] * shape[1] * shape[2]
    if not 1 <= k <= product:
        raise SgtoolError(f"k must be between 1 and {product}, got {k}.", "Ask for fewer triplets per pair.")
    log_prior = None if prior is None else (prior if prior_is_log else prior.log()).to(s_scores.dtype)
    n = s_scores.shape[0]
    values = s_scores.new_zeros((n, k))
    flat_index = torch.zeros((n, k), dtype=torch.long)
    todo = torch.arange(n)
    psi, floor, support = _prior_structure(log_prior)
    if prune and n and len(support) <= SPARSE_SHARE * product:
        kept = min(prune, shape[0]) * shape[1] * min(prune, shape[2])
        step = max(1, DEFAULT_CHUNK_ELEMENTS // (kept + s_scores.shape[1] * len(support) + 1))
        exact_all = []
        for start in range(0, n, step):
            part = slice(start, start + step)
            v, i, exact = _sparse_prior_chunk(s_scores[part], p_scores[part], o_scores[part], k, psi, floor,
                                              support, prune)
            if v.shape[1] < k:  # too few classes kept to hold k triplets: the full search decides
                exact = torch.zeros(len(v), dtype=torch.bool)
            else:
                values[part], flat_index[part] = v, i
            exact_all.append(exact)
        todo = torch.nonzero(~torch.cat(exact_all)).flatten()
    step = _chunk_size(chunk, product)
    for start in range(0, len(todo), step):
        rows = todo[start:start + step]
        v, i = _topk_chunk(s_scores[rows], p_scores[rows], o_scores[rows], k, log_prior)
        values[rows], flat_index[rows] = v, i
    return values, unravel_triplets(flat_index, shape)


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
