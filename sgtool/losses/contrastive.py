"""RelDN's Graphical Contrastive Losses (Zhang et al., CVPR 2019), vectorised over a batch of images.

Every candidate pair m of the batch is one row: its image, subject and object entity ids, the
entities' class labels, its predicate (0 = no relation) and the predicted distribution over
predicates `rel_probs[m]` (column 0 = no relation). Affinity Φ(s, o) = 1 − p(no relation | s, o).

Each loss groups rows by an anchor (a subject, or an object, optionally with a class), takes the
hardest positive (min affinity) and hardest negative (max affinity) of the group with
`scatter_reduce`, and averages max(0, α − min_pos + max_neg) over the groups that have at least
one positive and one negative; the subject-anchored and object-anchored means are added.

- L1 class agnostic: positives = related pairs of the anchor, negatives = its unrelated pairs.
- L2 entity class aware: the same, grouped by (anchor, class of the other entity), so a related
  "cup" competes only with unrelated cups (entity instance confusion).
- L3 predicate class aware: for each predicate e of the anchor, positives = its pairs labelled e,
  negatives = its other pairs (another predicate or none), affinity = p(e | s, o)
  (proximal relationship ambiguity).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sgtool.errors import SgtoolError

LOSS_NAMES = ("L0", "L1", "L2", "L3")
DEFAULT_MARGIN = 0.2
DEFAULT_WEIGHTS = {"L0": 1.0, "L1": 1.0, "L2": 0.5, "L3": 0.1}


def parse_losses(spec: str | Iterable[str]) -> tuple[str, ...]:
    """'L0,L1' or ["L0", "L1"] -> ("L0", "L1"); unknown names raise SgtoolError."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    for name in names:
        if name not in LOSS_NAMES:
            raise SgtoolError(f"Unknown loss '{name}' for the reldn head.", f"Valid losses: {', '.join(LOSS_NAMES)}.")
    if not names:
        raise SgtoolError("No loss selected for the reldn head.", f"Valid losses: {', '.join(LOSS_NAMES)}.")
    return tuple(dict.fromkeys(names))


def _group_ids(*keys: Tensor) -> tuple[Tensor, int]:
    """Dense group id per row for the tuple of integer keys (rows with equal keys share an id)."""
    stacked = torch.stack([k.long() for k in keys], dim=1)
    uniq, inverse = torch.unique(stacked, dim=0, return_inverse=True)
    return inverse, uniq.shape[0]


def _segment_extreme(values: Tensor, groups: Tensor, n_groups: int, mask: Tensor, reduce: str) -> tuple[Tensor, Tensor]:
    """Per-group amin/amax of values over masked rows, and whether the group had any such row."""
    fill = float("inf") if reduce == "amin" else float("-inf")
    out = values.new_full((n_groups,), fill)
    out = out.scatter_reduce(0, groups[mask], values[mask], reduce=reduce, include_self=False)
    present = torch.zeros(n_groups, dtype=torch.bool, device=values.device)
    present[groups[mask]] = True
    return out, present


def _margin_loss(min_pos: Tensor, max_neg: Tensor, valid: Tensor, margin: float) -> Tensor:
    """mean over valid groups of max(0, α − min_pos + max_neg); 0 (still in the graph) when none."""
    hinge = F.relu(margin - min_pos[valid] + max_neg[valid])
    return hinge.mean() if hinge.numel() else min_pos.sum() * 0.0 + max_neg.sum() * 0.0


def _anchored_loss(affinity: Tensor, positive: Tensor, groups: Tensor, n_groups: int, margin: float) -> Tensor:
    """Hardest-positive vs hardest-negative hinge, averaged over groups with both."""
    min_pos, has_pos = _segment_extreme(affinity, groups, n_groups, positive, "amin")
    max_neg, has_neg = _segment_extreme(affinity, groups, n_groups, ~positive, "amax")
    min_pos = torch.where(has_pos, min_pos, torch.zeros_like(min_pos))
    max_neg = torch.where(has_neg, max_neg, torch.zeros_like(max_neg))
    return _margin_loss(min_pos, max_neg, has_pos & has_neg, margin)


def _pair_labels(pair: Tensor, n_pairs: int, predicates: Tensor, n_cls: int) -> Tensor:
    """(M, P+1) mask: row m's pair carries predicate e in some row (pairs with several predicates)."""
    has = torch.zeros(n_pairs, n_cls, dtype=torch.bool, device=predicates.device)
    has[pair, predicates] = True
    return has[pair]


def _predicate_aware(rel_probs: Tensor, predicates: Tensor, pair_labels: Tensor, anchor: Tensor,
                     n_anchor: int, margin: float) -> Tensor:
    """L3 for one anchoring side: groups are (anchor, predicate e) over an (A, P+1) grid."""
    n_cls = rel_probs.shape[1]
    rows = torch.arange(len(predicates), device=rel_probs.device)
    own = rel_probs[rows, predicates]                                   # p(label | pair)
    cell = anchor * n_cls + predicates                                  # (anchor, e) of each row
    fg = predicates > 0
    min_pos, has_pos = _segment_extreme(own, cell, n_anchor * n_cls, fg, "amin")
    # negatives of (a, e): every pair of anchor a not labelled e, scored with p(e | pair)
    neg_vals = rel_probs.masked_fill(pair_labels, float("-inf"))
    max_neg = rel_probs.new_full((n_anchor, n_cls), float("-inf"))
    max_neg = max_neg.scatter_reduce(0, anchor.view(-1, 1).expand(-1, n_cls), neg_vals, "amax", include_self=False)
    max_neg = max_neg.flatten()
    has_neg = torch.isfinite(max_neg)
    min_pos = torch.where(has_pos, min_pos, torch.zeros_like(min_pos))
    max_neg = torch.where(has_neg, max_neg, torch.zeros_like(max_neg))
    return _margin_loss(min_pos, max_neg, has_pos & has_neg, margin)


def _check_inputs(rel_probs: Tensor, *per_pair: Tensor) -> None:
    if rel_probs.dim() != 2 or any(t.shape != (rel_probs.shape[0],) for t in per_pair):
        raise SgtoolError(f"Contrastive-loss inputs disagree: rel_probs {tuple(rel_probs.shape)}, "
                          f"per-pair tensors {[tuple(t.shape) for t in per_pair]}.",
                          "rel_probs must be (pairs, predicates + 1) and every other input (pairs,).")


def graphical_contrastive_losses(rel_probs: Tensor, pair_image: Tensor, subj_index: Tensor, obj_index: Tensor,
                                 subj_label: Tensor, obj_label: Tensor, pair_predicates: Tensor,
                                 margin: float = DEFAULT_MARGIN) -> dict[str, Tensor]:
    """L1, L2, L3 of RelDN for all candidate pairs of a batch (one row per pair, see module doc).

    rel_probs: (M, P+1) softmax over predicates, column 0 = no relation. pair_image: (M,) image of
    each pair; subj_index/obj_index: (M,) entity ids (unique within an image); subj_label/obj_label:
    (M,) entity classes; pair_predicates: (M,) predicate label, 0 = no relation. A pair with two
    predicates is two rows.
    """
    _check_inputs(rel_probs, pair_image, subj_index, obj_index, subj_label, obj_label, pair_predicates)
    predicates = pair_predicates.long()
    positive = predicates > 0
    affinity = 1.0 - rel_probs[:, 0]
    sides = ((subj_index, obj_label), (obj_index, subj_label))   # (anchor entity, class of the other end)
    pair, n_pairs = _group_ids(pair_image, subj_index, obj_index)
    pair_labels = _pair_labels(pair, n_pairs, predicates, rel_probs.shape[1])
    out = {"L1": 0.0, "L2": 0.0, "L3": 0.0}
    for anchor_index, other_label in sides:
        anchor, n_anchor = _group_ids(pair_image, anchor_index)
        out["L1"] = out["L1"] + _anchored_loss(affinity, positive, anchor, n_anchor, margin)
        by_class, n_by_class = _group_ids(pair_image, anchor_index, other_label)
        out["L2"] = out["L2"] + _anchored_loss(affinity, positive, by_class, n_by_class, margin)
        out["L3"] = out["L3"] + _predicate_aware(rel_probs, predicates, pair_labels, anchor, n_anchor, margin)
    return out


def reldn_total_loss(rel_logits: Tensor, pair_image: Tensor, subj_index: Tensor, obj_index: Tensor,
                     subj_label: Tensor, obj_label: Tensor, pair_predicates: Tensor,
                     losses: Sequence[str] | str = LOSS_NAMES, margin: float = DEFAULT_MARGIN,
                     weights: dict[str, float] | None = None) -> dict[str, Tensor]:
    """L0 (cross entropy over predicates incl. no relation) + λ1 L1 + λ2 L2 + λ3 L3.

    Returns the selected terms (unweighted) and "total" (weighted sum). rel_logits: (M, P+1).
    """
    selected = parse_losses(losses)
    lam = {**DEFAULT_WEIGHTS, **(weights or {})}
    terms: dict[str, Tensor] = {}
    if "L0" in selected:
        terms["L0"] = F.cross_entropy(rel_logits, pair_predicates.long())
    if any(name in selected for name in ("L1", "L2", "L3")):
        contrastive = graphical_contrastive_losses(rel_logits.softmax(-1), pair_image, subj_index, obj_index,
                                                   subj_label, obj_label, pair_predicates, margin)
        terms.update({name: contrastive[name] for name in ("L1", "L2", "L3") if name in selected})
    terms["total"] = sum(lam[name] * terms[name] for name in selected)
    return terms
