"""RelDN's Graphical Contrastive Losses (Zhang et al., "Graphical Contrastive Losses for Scene Graph
Parsing", CVPR 2019, Eq. 1-8), vectorised over a batch of images.

Every candidate pair m of the batch is one row: its image, subject and object entity ids, the
entities' class labels, its predicate (0 = no relation; a pair with two predicates is two rows) and
the predicted distribution `rel_probs[m]` (column 0 = no relation). Affinity (Eq. 1):
Φ(s, o) = 1 − p(∅ | s, o), for all three losses.

An anchor is a subject i (or an object j) of an image; for an anchor and a group g of its rows the
margin is m(g) = min Φ over the positives of g − max Φ over the negatives of g, the term
max(0, α − m(g)). Positives are annotated rows (predicate > 0), negatives unannotated ones (0).

- L1 class agnostic (Eq. 2-3): one group per anchor.
- L2 entity class aware (Eq. 4-5): one group per anchor and class c of the partner (c ∈ C(V+)).
- L3 predicate class aware (Eq. 6-7): one group per anchor and predicate e of its positives
  (e ∈ E(V+)); positives = its rows annotated e; negatives = its unannotated rows whose
  foreground-only argmax (∅ left out) is e — the official code's reading of "incorrectly
  predicts (via argmax) the predicate to be e" (`split_pos_neg_p_aware`, reldn_heads.py).

Averaging (`averaging`):
- "official" (default; the paper's numbers came from it): NVIDIA/ContrastiveLosses4VRD feeds every
  group that has both a positive and a negative to one `margin_ranking_loss` per image and side,
  together with one dummy group of hinge 0 (Φ+ = 1, Φ− = 0), so each image's side loss is
  Σ hinges / (G + 1); images (one per GPU) are averaged. The two sides are added.
- "paper": Eq. 3, 5, 7 as written — per side, the mean over anchors with a positive of the mean
  over their groups with a positive (C(V+), E(V+)); a group without a negative counts 0.

`side` says which rows anchor which side: the contrastive sample (`heads/reldn.py`) draws
subject-anchored and object-anchored rows separately, as the paper samples each side.
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
SUBJECT_SIDE, OBJECT_SIDE, BOTH_SIDES = 0, 1, 2  # values of `side`
AVERAGINGS = ("official", "paper")


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
    return inverse.reshape(-1), uniq.shape[0]


def _extreme(values: Tensor, groups: Tensor, n_groups: int, mask: Tensor, reduce: str) -> tuple[Tensor, Tensor]:
    """Per-group amin / amax of values over the masked rows (0 where none) and whether there was one."""
    out = values.new_zeros(n_groups)
    out = out.scatter_reduce(0, groups[mask], values[mask], reduce=reduce, include_self=False)
    present = torch.zeros(n_groups, dtype=torch.bool, device=values.device)
    present[groups[mask]] = True
    return out, present


def _group_terms(affinity: Tensor, groups: Tensor, n_groups: int, positive: Tensor, negative: Tensor,
                 margin: float) -> tuple[Tensor, Tensor, Tensor]:
    """(G,) max(0, α − min_pos + max_neg) per group (0 without a negative), whether it has a positive, a negative."""
    min_pos, has_pos = _extreme(affinity, groups, n_groups, positive, "amin")
    max_neg, has_neg = _extreme(affinity, groups, n_groups, negative, "amax")
    hinge = F.relu(margin - min_pos + max_neg)
    return torch.where(has_pos & has_neg, hinge, torch.zeros_like(hinge)), has_pos, has_neg


def _anchor_mean(terms: Tensor, counted: Tensor, group_anchor: Tensor, n_anchor: int) -> Tensor:
    """"paper": mean over anchors (with a counted group) of the mean of their counted groups' terms."""
    total = terms.new_zeros(n_anchor).index_add(0, group_anchor, torch.where(counted, terms, torch.zeros_like(terms)))
    count = terms.new_zeros(n_anchor).index_add(0, group_anchor, counted.to(terms.dtype))
    held = count > 0
    per_anchor = total[held] / count[held]
    return per_anchor.mean() if per_anchor.numel() else terms.sum() * 0.0


def _image_mean(terms: Tensor, counted: Tensor, group_image: Tensor, n_image: int) -> Tensor:
    """"official": per image Σ counted terms / (their number + 1 dummy), averaged over the images."""
    total = terms.new_zeros(n_image).index_add(0, group_image, torch.where(counted, terms, torch.zeros_like(terms)))
    count = terms.new_zeros(n_image).index_add(0, group_image, counted.to(terms.dtype))
    return (total / (count + 1.0)).mean() if n_image else terms.sum() * 0.0


def _foreground_argmax(rel_probs: Tensor) -> Tensor:
    """(M,) the predicate each row is predicted as among the foreground columns (∅ left out)."""
    return rel_probs.detach()[:, 1:].argmax(1) + 1


def _group_loss(affinity: Tensor, keys: tuple[Tensor, ...], positive: Tensor, negative: Tensor, anchor: Tensor,
                image: Tensor, margin: float, averaging: str) -> Tensor:
    """One loss of one side: rows grouped by equal `keys` (the anchor first), averaged as asked."""
    groups, n_groups = _group_ids(*keys)
    terms, has_pos, has_neg = _group_terms(affinity, groups, n_groups, positive, negative, margin)
    if averaging == "official":
        group_image = image.new_zeros(n_groups).scatter(0, groups, image)
        return _image_mean(terms, has_pos & has_neg, group_image, int(image.max()) + 1 if image.numel() else 0)
    group_anchor = anchor.new_zeros(n_groups).scatter(0, groups, anchor)
    return _anchor_mean(terms, has_pos, group_anchor, int(anchor.max()) + 1 if anchor.numel() else 0)


def _side_losses(affinity: Tensor, predicates: Tensor, predicted: Tensor, image: Tensor, anchor_index: Tensor,
                 other_label: Tensor, margin: float, averaging: str) -> dict[str, Tensor]:
    """L1, L2, L3 anchored on one side (subjects or objects) for the given rows."""
    positive, unrelated = predicates > 0, predicates == 0
    image_id, _ = _group_ids(image)
    anchor, _ = _group_ids(image, anchor_index)
    # L3's group of a row: its predicate when annotated, what the model predicts it as when not
    predicate_group = torch.where(positive, predicates, predicted)
    groupings = {"L1": (anchor,), "L2": (anchor, other_label.long()), "L3": (anchor, predicate_group)}
    return {name: _group_loss(affinity, keys, positive, unrelated, anchor, image_id, margin, averaging)
            for name, keys in groupings.items()}


def _check_inputs(rel_probs: Tensor, *per_pair: Tensor) -> None:
    if rel_probs.dim() != 2 or any(t.shape != (rel_probs.shape[0],) for t in per_pair):
        raise SgtoolError(f"Contrastive-loss inputs disagree: rel_probs {tuple(rel_probs.shape)}, "
                          f"per-pair tensors {[tuple(t.shape) for t in per_pair]}.",
                          "rel_probs must be (pairs, predicates + 1) and every other input (pairs,).")


def _check_averaging(averaging: str) -> None:
    if averaging not in AVERAGINGS:
        raise SgtoolError(f"Unknown contrastive averaging '{averaging}'.", f"Valid: {', '.join(AVERAGINGS)}.")


def graphical_contrastive_losses(rel_probs: Tensor, pair_image: Tensor, subj_index: Tensor, obj_index: Tensor,
                                 subj_label: Tensor, obj_label: Tensor, pair_predicates: Tensor,
                                 margin: float = DEFAULT_MARGIN, side: Tensor | None = None,
                                 averaging: str = "official") -> dict[str, Tensor]:
    """L1, L2, L3 of RelDN for the candidate pairs of a batch (one row per pair and label, see module doc).

    rel_probs: (M, P+1) softmax over predicates, column 0 = no relation. pair_image: (M,) image of
    each pair; subj_index/obj_index: (M,) entity ids (unique within an image); subj_label/obj_label:
    (M,) entity classes; pair_predicates: (M,) predicate label, 0 = no relation. side: (M,) which
    anchoring side a row belongs to (SUBJECT_SIDE, OBJECT_SIDE or BOTH_SIDES; default: both).
    averaging: "official" or "paper" (module doc).
    """
    _check_averaging(averaging)
    per_pair = [pair_image, subj_index, obj_index, subj_label, obj_label, pair_predicates]
    _check_inputs(rel_probs, *per_pair, *([] if side is None else [side]))
    predicates = pair_predicates.long()
    side = torch.full_like(predicates, BOTH_SIDES) if side is None else side.long()
    predicted = _foreground_argmax(rel_probs)
    affinity = 1.0 - rel_probs[:, 0]
    out: dict[str, Tensor] = {}
    for name, anchor_index, other_label in (("subject", subj_index, obj_label), ("object", obj_index, subj_label)):
        rows = (side == BOTH_SIDES) | (side == (SUBJECT_SIDE if name == "subject" else OBJECT_SIDE))
        terms = _side_losses(affinity[rows], predicates[rows], predicted[rows], pair_image[rows], anchor_index[rows],
                             other_label[rows], margin, averaging)
        for key, value in terms.items():
            out[key] = out[key] + value if key in out else value
    return out


def reldn_total_loss(rel_logits: Tensor, pair_image: Tensor, subj_index: Tensor, obj_index: Tensor,
                     subj_label: Tensor, obj_label: Tensor, pair_predicates: Tensor,
                     losses: Sequence[str] | str = LOSS_NAMES, margin: float = DEFAULT_MARGIN,
                     weights: dict[str, float] | None = None,
                     contrastive: dict[str, Tensor] | None = None, averaging: str = "official") -> dict[str, Tensor]:
    """L = L0 + λ1 L1 + λ2 L2 + λ3 L3 (Eq. 8); L0 is cross entropy over predicates incl. no relation.

    The given rows (rel_logits (M, P+1) and the per-pair tensors) are the L0 sample. `contrastive`,
    when given, is a separately drawn sample for L1-L3: {"logits", "pair_image", "subj_index",
    "obj_index", "subj_label", "obj_label", "predicate", "side"}; without it L1-L3 use the L0 rows.
    `averaging` is how L1-L3 average their groups ("official" or "paper", module doc).
    Returns the selected terms (unweighted) and "total" (weighted sum).
    """
    selected = parse_losses(losses)
    lam = {**DEFAULT_WEIGHTS, **(weights or {})}
    terms: dict[str, Tensor] = {}
    if "L0" in selected:
        terms["L0"] = F.cross_entropy(rel_logits, pair_predicates.long())
    if any(name in selected for name in ("L1", "L2", "L3")):
        c = contrastive or {"logits": rel_logits, "pair_image": pair_image, "subj_index": subj_index,
                            "obj_index": obj_index, "subj_label": subj_label, "obj_label": obj_label,
                            "predicate": pair_predicates, "side": None}
        gcl = graphical_contrastive_losses(c["logits"].softmax(-1), c["pair_image"], c["subj_index"], c["obj_index"],
                                           c["subj_label"], c["obj_label"], c["predicate"], margin, c.get("side"),
                                           averaging)
        terms.update({name: gcl[name] for name in ("L1", "L2", "L3") if name in selected})
    terms["total"] = sum(lam[name] * terms[name] for name in selected)
    return terms
