"""The tensor head's factored CP likelihood equals the explicit S×P×O tensor, in value, gradient and top-k."""
from __future__ import annotations

import itertools

import pytest
import torch

from sgtool.errors import SgtoolError
from sgtool.losses.tensor import (
    factored_nll,
    full_tensor_nll,
    log_joint,
    log_partition,
    predicate_log_probs,
    topk_predicates,
    topk_triplets,
)

SIZES = (5, 4, 6)   # S, P, O


def make_scores(pairs: int, rank: int, seed: int = 0, scale: float = 1.5, sizes=SIZES):
    gen = torch.Generator().manual_seed(seed)
    return tuple((scale * torch.randn(pairs, rank, n, generator=gen, dtype=torch.float64)).requires_grad_()
                 for n in sizes)


def make_targets(pairs: int, seed: int = 1, sizes=SIZES) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, n, (pairs,), generator=gen) for n in sizes], dim=1)


def brute_tensor(s, p, o) -> torch.Tensor:
    """y(i,j,k) = Σ_r φs φp φo by explicit loops over classes: the definition, nothing clever."""
    S, P, O = s.shape[2], p.shape[2], o.shape[2]
    y = torch.zeros(s.shape[0], S, P, O, dtype=s.dtype)
    for i, j, k in itertools.product(range(S), range(P), range(O)):
        y[:, i, j, k] = (s[:, :, i].exp() * p[:, :, j].exp() * o[:, :, k].exp()).sum(1)
    return y


@pytest.mark.parametrize("rank", [1, 2, 5])
def test_factored_equals_brute_force_tensor(rank):
    s, p, o = make_scores(7, rank, seed=rank)
    t = make_targets(7)
    y = brute_tensor(s, p, o)
    expected = -torch.log(y[torch.arange(7), t[:, 0], t[:, 1], t[:, 2]] / y.flatten(1).sum(1))
    torch.testing.assert_close(factored_nll(s, p, o, t, reduction="none"), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(full_tensor_nll(s, p, o, t, reduction="none"), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(factored_nll(s, p, o, t), expected.mean())
    torch.testing.assert_close(log_partition(s, p, o), y.flatten(1).sum(1).log())


def test_factored_is_stable_for_large_scores():
    s, p, o = make_scores(4, 3, seed=3, scale=300.0)   # exp(±900) overflows/underflows float64
    t = make_targets(4)
    loss = factored_nll(s, p, o, t, reduction="none")
    assert torch.isfinite(loss).all() and (loss >= -1e-9).all()
    # a per-pair constant added to all scores of one factor cancels between y and Z
    s2, p2, o2 = make_scores(4, 3, seed=3)
    shifted = factored_nll(s2 + 2000.0, p2 - 1500.0, o2, t, reduction="none")
    torch.testing.assert_close(shifted, full_tensor_nll(s2, p2, o2, t, reduction="none"), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("rank", [1, 3])
def test_gradcheck(rank):
    s, p, o = make_scores(3, rank, seed=10 + rank, sizes=(3, 2, 4))
    t = make_targets(3, sizes=(3, 2, 4))
    assert torch.autograd.gradcheck(lambda a, b, c: factored_nll(a, b, c, t, reduction="none"), (s, p, o))


def test_factored_gradients_equal_full_tensor_gradients():
    s, p, o = make_scores(6, 4, seed=4)
    t = make_targets(6)
    g_fact = torch.autograd.grad(factored_nll(s, p, o, t), (s, p, o))
    g_full = torch.autograd.grad(full_tensor_nll(s, p, o, t), (s, p, o))
    for a, b in zip(g_fact, g_full):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def brute_topk(s, p, o, k, prior=None):
    y = brute_tensor(s, p, o)
    if prior is not None:
        y = y * prior
    probs = (y / y.flatten(1).sum(1).view(-1, 1, 1, 1)).flatten(1)
    values, flat = probs.topk(k, dim=1)
    S, P, O = y.shape[1:]
    triplets = torch.stack([flat // (P * O), (flat // O) % P, flat % O], dim=-1)
    return values.log(), triplets


@pytest.mark.parametrize("use_prior", [False, True])
def test_topk_triplets_equal_brute_force(use_prior):
    s, p, o = (t.detach() for t in make_scores(9, 3, seed=5))
    gen = torch.Generator().manual_seed(6)
    prior = (torch.randint(0, 20, SIZES, generator=gen) + 1).double() if use_prior else None  # +1-smoothed counts
    k = 7
    values, triplets = topk_triplets(s, p, o, k, prior=prior, chunk=None)
    ref_values, ref_triplets = brute_topk(s, p, o, k, prior)
    torch.testing.assert_close(values, ref_values)
    assert torch.equal(triplets, ref_triplets)
    # the returned log-probabilities are those of the returned triplets
    if prior is None:
        flat_t = triplets.reshape(-1, 3)
        rep = lambda x: x.repeat_interleave(k, 0)  # noqa: E731
        torch.testing.assert_close(log_joint(rep(s), rep(p), rep(o), flat_t).view(9, k), values)
    for chunk in (1, 2, 4, 100):
        v_c, t_c = topk_triplets(s, p, o, k, prior=prior, chunk=chunk)
        assert torch.equal(t_c, triplets) and torch.equal(v_c, values)
    if prior is not None:
        v_log, t_log = topk_triplets(s, p, o, k, prior=prior.log(), prior_is_log=True)
        assert torch.equal(t_log, triplets)
        torch.testing.assert_close(v_log, values)


def test_topk_predicates_for_fixed_labels():
    torch.manual_seed(0)
    s, p, o = (t.detach() for t in make_scores(8, 2, seed=7))
    subj, obj = torch.randint(0, 5, (8,)), torch.randint(0, 6, (8,))
    y = brute_tensor(s, p, o)[torch.arange(8), subj, :, obj]            # (B, P)
    torch.testing.assert_close(predicate_log_probs(s, p, o, subj, obj), (y / y.sum(1, keepdim=True)).log())
    z = brute_tensor(s, p, o).flatten(1).sum(1, keepdim=True)
    torch.testing.assert_close(predicate_log_probs(s, p, o, subj, obj, conditional=False), (y / z).log())
    values, preds = topk_predicates(s, p, o, subj, obj, k=3)
    ref = y.topk(3, dim=1)
    assert torch.equal(preds, ref.indices)
    torch.testing.assert_close(values, (ref.values / y.sum(1, keepdim=True)).log())


def test_bad_inputs_raise_sgtool_errors():
    s, p, o = (t.detach() for t in make_scores(2, 2))
    with pytest.raises(SgtoolError, match="k must be"):
        topk_triplets(s, p, o, k=0)
    with pytest.raises(SgtoolError, match="prior"):
        topk_triplets(s, p, o, k=1, prior=torch.ones(2, 2, 2))
    with pytest.raises(SgtoolError, match=r"\(B, R, C\)"):
        factored_nll(s, p[:, :1], o, make_targets(2))
    with pytest.raises(SgtoolError, match="reduction"):
        factored_nll(s, p, o, make_targets(2), reduction="max")


@pytest.mark.parametrize("use_prior", [False, True])
def test_pruned_topk_is_exact_when_it_keeps_few_classes(use_prior):
    """The pruned search over a few subject / object classes proves or falls back: always the brute-force top-k."""
    sizes = (9, 4, 8)
    s, p, o = (t.detach() for t in make_scores(40, 3, seed=11, scale=2.5, sizes=sizes))
    gen = torch.Generator().manual_seed(12)
    sparse = torch.rand(sizes, generator=gen) < 0.03  # +1-smoothed counts of a few seen triplets
    prior = (torch.randint(1, 30, sizes, generator=gen) * sparse + 1).double() if use_prior else None
    ref_values, ref_triplets = brute_topk(s, p, o, 5, prior)
    for prune in (0, 1, 2, 4, 16):
        values, triplets = topk_triplets(s, p, o, 5, prior=prior, prune=prune)
        assert torch.equal(triplets, ref_triplets), prune
        torch.testing.assert_close(values, ref_values)
