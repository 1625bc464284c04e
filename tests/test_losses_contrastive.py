"""RelDN's graphical contrastive losses: hand-computed values, margins, batching, a loop reference and
reference values of the official implementation (NVIDIA/ContrastiveLosses4VRD)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sgtool.errors import SgtoolError
from sgtool.losses.contrastive import graphical_contrastive_losses, parse_losses, reldn_total_loss

# Two images; predicates: 0 = none, 1 = holds, 2 = on. Entity classes: 1 person, 2 cup, 3 table.
# image 0: entity 0 person, 1 cup, 2 cup, 3 table;  image 1: entity 0 person, 1 cup, 2 cup.
# row: (image, subj, obj, subj_cls, obj_cls, predicate, [p0, p1, p2])      Φ = 1 − p0
ROWS = [
    (0, 0, 1, 1, 2, 1, [0.30, 0.60, 0.10]),   # r0 person-holds-cup     Φ 0.70
    (0, 0, 2, 1, 2, 0, [0.40, 0.50, 0.10]),   # r1 person . cup(other)  Φ 0.60
    (0, 0, 3, 1, 3, 0, [0.35, 0.05, 0.60]),   # r2 person . table       Φ 0.65
    (0, 1, 3, 2, 3, 2, [0.20, 0.10, 0.70]),   # r3 cup-on-table         Φ 0.80
    (0, 2, 3, 2, 3, 2, [0.50, 0.10, 0.40]),   # r4 cup-on-table         Φ 0.50
    (0, 3, 0, 3, 1, 0, [0.70, 0.20, 0.10]),   # r5 table . person       Φ 0.30
    (1, 0, 1, 1, 2, 1, [0.10, 0.80, 0.10]),   # r6 person-holds-cup     Φ 0.90
    (1, 1, 0, 2, 1, 0, [0.60, 0.30, 0.10]),   # r7 cup . person         Φ 0.40
    (1, 0, 2, 1, 2, 0, [0.80, 0.15, 0.05]),   # r8 person . cup(other)  Φ 0.20
]

# averaging="paper" (Eq. 3, 5, 7 as written).
# α = 0.2, Φ = 1 − p0. An anchor is an entity with ≥ 1 positive on its side; each side averages over its
# anchors (N) and the two sides are added. A group without a negative has max over ∅ = −∞: term 0.
# Subject anchors: img0 s0 (r0), img0 s1 (r3), img0 s2 (r4), img1 s0 (r6): N = 4.
# Object anchors: img0 o1 (r0), img0 o3 (r3, r4), img1 o1 (r6): N = 3.
# L1 subjects: img0 s0: min pos 0.70, max neg max(0.60, 0.65) = 0.65 -> 0.2 − 0.70 + 0.65 = 0.15
#              img0 s1, s2: no negative -> 0;  img1 s0: 0.2 − 0.90 + 0.20 < 0 -> 0      sum 0.15 / 4
# L1 objects:  img0 o3: min pos min(0.80, 0.50) = 0.50, max neg 0.65 (r2) -> 0.35; o1s: no negative  sum 0.35 / 3
L1 = 0.15 / 4 + 0.35 / 3
# L2 subjects: img0 s0, class cup (its only positive class): pos 0.70, neg cups 0.60 (r1) -> 0.10 (the table r2
#              is another class); img0 s1, s2: tables / none -> 0; img1 s0, cups: 0.2 − 0.9 + 0.2 < 0    sum 0.10 / 4
# L2 objects:  img0 o3, class cup: pos 0.50, no unrelated cup subject of o3 (r2's subject is a person) -> 0
L2 = 0.10 / 4
# L3: foreground argmax (∅ left out) of the unannotated rows: r1 holds, r2 on, r5 holds, r7 holds, r8 holds.
# L3 subjects: img0 s0, e = holds: pos Φ(r0) 0.70, unannotated-as-holds of s0: r1 Φ 0.60 -> 0.10;
#              img1 s0, holds: 0.2 − 0.90 + 0.20 (r8) < 0; others none                        sum 0.10 / 4
# L3 objects:  img0 o3, e = on: pos min(0.80, 0.50) = 0.50, unannotated-as-on of o3: r2 Φ 0.65 -> 0.35 sum 0.35 / 3
L3 = 0.10 / 4 + 0.35 / 3
EXPECTED = {"L1": L1, "L2": L2, "L3": L3}
# averaging="official": per image and side Σ hinges of the groups with a positive and a negative / (their
# number + 1 dummy); images averaged; sides added. Groups with both: subjects img0 s0 (L1 0.15, L2 cup 0.10,
# L3 holds 0.10), img1 s0 (all 0); objects img0 o3 (L1 0.35, L3 on 0.35; L2: no unrelated cup subject).
OFFICIAL = {"L1": (0.15 / 2 + 0 / 2) / 2 + (0.35 / 2 + 0 / 1) / 2, "L2": (0.10 / 2 + 0 / 2) / 2 + 0.0,
            "L3": (0.10 / 2 + 0 / 2) / 2 + (0.35 / 2 + 0 / 1) / 2}


def as_inputs(rows):
    cols = list(zip(*rows))
    ints = [torch.tensor(c) for c in cols[:6]]
    return torch.tensor(cols[6], dtype=torch.float64), ints


def call(probs, ints, margin=0.2, averaging="paper"):
    image, subj, obj, subj_cls, obj_cls, pred = ints
    return graphical_contrastive_losses(probs, image, subj, obj, subj_cls, obj_cls, pred, margin=margin,
                                        averaging=averaging)


@pytest.mark.parametrize("averaging, expected", [("paper", EXPECTED), ("official", OFFICIAL)])
def test_hand_computed_values(averaging, expected):
    probs, ints = as_inputs(ROWS)
    out = call(probs, ints, averaging=averaging)
    for name, value in expected.items():
        assert out[name].item() == pytest.approx(value, abs=1e-12), name


def test_official_averaging_is_the_default_and_unknown_is_a_user_error():
    probs, ints = as_inputs(ROWS)
    out = graphical_contrastive_losses(probs, *ints)
    assert out["L1"].item() == pytest.approx(OFFICIAL["L1"], abs=1e-12)
    with pytest.raises(SgtoolError, match="averaging"):
        call(probs, ints, averaging="mean")


def test_images_are_separate_anchors():
    # same rows, but image 1's entities renumbered 10.. : nothing changes
    rows = [(im, s + 10 * im, o + 10 * im, *rest) for im, s, o, *rest in ROWS]
    out = call(*as_inputs(rows))
    for name, value in EXPECTED.items():
        assert out[name].item() == pytest.approx(value, abs=1e-12)


def test_row_order_does_not_matter():
    perm = [4, 8, 0, 6, 2, 7, 1, 5, 3]
    out = call(*as_inputs([ROWS[i] for i in perm]))
    for name, value in EXPECTED.items():
        assert out[name].item() == pytest.approx(value, abs=1e-12)


def test_margins_satisfied_give_zero():
    # positives: p(no rel) = 0.05 and p(their predicate) = 0.95; negatives: p(no rel) = 0.95
    rows = []
    for im, s, o, sc, oc, pred, _ in ROWS:
        probs = [0.95, 0.025, 0.025] if pred == 0 else [0.05] + [0.95 if e == pred else 0.0 for e in (1, 2)]
        rows.append((im, s, o, sc, oc, pred, probs))
    out = call(*as_inputs(rows))
    assert all(out[name].item() == 0.0 for name in ("L1", "L2", "L3"))
    # the same probabilities violate a margin of 0.95 (gap is 0.9) by 0.05 at the anchors with a negative:
    # subjects img0 s0, img1 s0 (of N = 4), object img0 o3 (of N = 3)
    assert call(*as_inputs(rows), margin=0.95)["L1"].item() == pytest.approx((0.05 + 0.05) / 4 + 0.05 / 3)


def test_pair_with_two_predicates_is_not_its_own_negative():
    # one pair labelled holds and on (two rows) plus an unrelated pair of the same subject
    rows = [(0, 0, 1, 1, 2, 1, [0.1, 0.5, 0.4]), (0, 0, 1, 1, 2, 2, [0.1, 0.5, 0.4]),
            (0, 0, 2, 1, 2, 0, [0.9, 0.05, 0.05])]
    # L3 subjects: holds: 0.2 − 0.5 + 0.05 < 0; on: 0.2 − 0.4 + 0.05 < 0 -> 0 (not 0.2 − 0.4 + 0.5)
    assert call(*as_inputs(rows))["L3"].item() == 0.0


def test_no_valid_anchor_gives_zero_with_gradient_path():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, requires_grad=True)
    ints = [torch.tensor(v) for v in ([0, 0], [0, 1], [1, 0], [1, 2], [2, 1], [1, 1])]
    out = call(logits.softmax(-1), ints)
    assert all(out[name].item() == 0.0 for name in ("L1", "L2", "L3"))
    sum(out.values()).backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_gradient_reaches_the_hardest_pairs_only():
    probs, ints = as_inputs(ROWS)
    probs.requires_grad_()
    call(probs, ints)["L1"].backward()
    grad_bg = probs.grad[:, 0]
    # L1 = ¼(0.2 − Φ0 + Φ2) + ⅓(0.2 − Φ4 + Φ2), Φ = 1 − p0:
    # ∂/∂p0: r0 +1/4, r2 −1/4 − 1/3, r4 +1/3, others 0
    expected = torch.tensor([1 / 4, 0, -1 / 4 - 1 / 3, 0, 1 / 3, 0, 0, 0, 0], dtype=torch.float64)
    torch.testing.assert_close(grad_bg, expected)


def loop_reference(probs, rows, margin):
    """Plain loops over anchors, straight from Eq. 2-7 (max over an empty negative set = −inf: term 0)."""
    labels = {}
    for r in rows:
        labels.setdefault((r[0], r[1], r[2]), set()).add(r[5])
    guess = [max(range(1, len(p)), key=lambda c: p[c]) for p in probs]  # foreground only, first on ties
    as_e = [g if r[5] == 0 else 0 for g, r in zip(guess, rows)]  # unannotated rows only

    def hinge(pos, neg):
        return max(0.0, margin - min(pos) + max(neg)) if neg else 0.0

    def side(anchor_of, other_cls_of):
        l1, l2, l3 = [], [], []
        for a in {(r[0], anchor_of(r)) for r in rows}:
            mine = [m for m, r in enumerate(rows) if (r[0], anchor_of(r)) == a]
            phi = {m: 1 - probs[m][0] for m in mine}
            pos = [m for m in mine if rows[m][5] > 0]
            if not pos:
                continue
            l1.append(hinge([phi[m] for m in pos], [phi[m] for m in mine if rows[m][5] == 0]))
            classes = {other_cls_of(rows[m]) for m in pos}
            l2.append(sum(hinge([phi[m] for m in pos if other_cls_of(rows[m]) == c],
                                [phi[m] for m in mine if rows[m][5] == 0 and other_cls_of(rows[m]) == c])
                          for c in classes) / len(classes))
            preds = {rows[m][5] for m in pos}
            l3.append(sum(hinge([phi[m] for m in pos if rows[m][5] == e], [phi[m] for m in mine if as_e[m] == e])
                          for e in preds) / len(preds))
        return [sum(v) / len(v) if v else 0.0 for v in (l1, l2, l3)]

    subj_side = side(lambda r: r[1], lambda r: r[4])
    obj_side = side(lambda r: r[2], lambda r: r[3])
    return {name: a + b for name, a, b in zip(("L1", "L2", "L3"), subj_side, obj_side)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_equals_loop_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for image in range(3):
        n = 6
        classes = torch.randint(1, 4, (n,), generator=gen).tolist()
        for s in range(n):
            for o in range(n):
                if s != o and torch.rand(1, generator=gen).item() < 0.7:
                    pred = torch.randint(0, 4, (1,), generator=gen).item() * int(torch.rand(1, generator=gen) < 0.4)
                    rows.append((image, s, o, classes[s], classes[o], pred))
    probs = torch.randn(len(rows), 4, generator=gen, dtype=torch.float64).softmax(-1)
    full_rows = [r + (probs[m].tolist(),) for m, r in enumerate(rows)]
    out = call(*as_inputs(full_rows))
    ref = loop_reference(probs.tolist(), rows, 0.2)
    for name in ("L1", "L2", "L3"):
        assert out[name].item() == pytest.approx(ref[name], abs=1e-12), name


def test_total_loss_combines_with_lambdas():
    probs, ints = as_inputs(ROWS)
    logits = probs.log().requires_grad_()
    out = reldn_total_loss(logits, *ints)
    l0 = F.cross_entropy(logits, ints[5]).item()
    assert out["L0"].item() == pytest.approx(l0)
    assert out["total"].item() == pytest.approx(l0 + OFFICIAL["L1"] + 0.5 * OFFICIAL["L2"] + 0.1 * OFFICIAL["L3"])
    only = reldn_total_loss(logits, *ints, losses="L0,L2", averaging="paper")
    assert set(only) == {"L0", "L2", "total"}
    assert only["total"].item() == pytest.approx(l0 + 0.5 * L2)
    out["total"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_unknown_loss_name_is_a_user_error():
    probs, ints = as_inputs(ROWS)
    with pytest.raises(SgtoolError) as info:
        reldn_total_loss(probs.log(), *ints, losses=("L0", "L4"))
    assert info.value.message.startswith("Unknown loss 'L4'")
    assert "L0, L1, L2, L3" in info.value.hint
    with pytest.raises(SgtoolError, match="No loss"):
        parse_losses(" , ")
    assert parse_losses("L3, L1,L1") == ("L3", "L1")


def test_mismatched_shapes_are_a_user_error():
    probs, ints = as_inputs(ROWS)
    ints[2] = ints[2][:-1]
    with pytest.raises(SgtoolError, match="disagree"):
        call(probs, ints)


def test_l3_negatives_are_unannotated_pairs_by_foreground_argmax():
    # subject 0: pair to 1 labelled holds (1); pair to 2 labelled on (2) but predicted holds; pair to 3
    # unannotated where ∅ wins (p0 0.45) and holds is the best foreground predicate.
    probs = torch.tensor([[.30, .40, .30], [.10, .60, .30], [.45, .44, .11]], dtype=torch.float64)
    ints = [torch.tensor(v) for v in ([0, 0, 0], [0, 0, 0], [1, 2, 3], [1, 1, 1], [2, 2, 2], [1, 2, 0])]
    # e = holds: pos Φ 0.70; negatives: the unannotated pair only (Φ 0.55), not the annotated pair to 2
    # -> 0.2 − 0.70 + 0.55 = 0.05; e = on: no unannotated pair predicted on -> no negative.
    # paper: (0.05 + 0) / |E| = 2 for the one subject anchor; objects have no negatives.
    assert call(probs, ints)["L3"].item() == pytest.approx(0.05 / 2, abs=1e-12)
    # official: one counted group of the image's subject side: 0.05 / (1 + 1)
    assert call(probs, ints, averaging="official")["L3"].item() == pytest.approx(0.05 / 2, abs=1e-12)
    # the unannotated pair's best foreground predicate becomes on: holds has no negative left, and
    # on's margin holds (0.2 − 0.90 + 0.55 < 0)
    moved = probs.clone()
    moved[2] = torch.tensor([.45, .11, .44], dtype=torch.float64)
    assert call(moved, ints)["L3"].item() == 0.0


def test_side_restricts_which_rows_anchor_which_side():
    probs, ints = as_inputs(ROWS)
    side = torch.zeros(len(ROWS), dtype=torch.int64)  # every row anchors subjects only
    out = graphical_contrastive_losses(probs, *ints, margin=0.2, side=side, averaging="paper")
    assert out["L1"].item() == pytest.approx(0.15 / 4, abs=1e-12)
    assert out["L3"].item() == pytest.approx(0.10 / 4, abs=1e-12)
    side = torch.ones(len(ROWS), dtype=torch.int64)  # objects only
    out = graphical_contrastive_losses(probs, *ints, side=side)
    assert out["L1"].item() == pytest.approx((0.35 / 2 + 0 / 1) / 2, abs=1e-12)


def reference_fixture():
    """Three images (5, 6 and 4 entities of classes 1-3), every ordered pair one row per label: about a
    third of the pairs annotated with one of predicates 1-4, a few with two; logits (5 columns) per pair."""
    rng = np.random.default_rng(2026)
    rows, logits = [], []
    for image, n in enumerate((5, 6, 4)):
        classes = rng.integers(1, 4, n)
        for s in range(n):
            for o in range(n):
                if s == o:
                    continue
                pair_logits = rng.normal(size=5).round(3)
                u, first, second = rng.random(), int(rng.integers(1, 5)), int(rng.integers(1, 5))
                labels = [0] if u >= 0.35 else sorted({first, second}) if u < 0.08 else [first]
                for label in labels:
                    rows.append((image, s, o, int(classes[s]), int(classes[o]), label))
                    logits.append(pair_logits)
    return rows, torch.tensor(np.array(logits), dtype=torch.float64)


# NVIDIA/ContrastiveLosses4VRD (lib/modeling_rel/reldn_heads.py: reldn_contrastive_losses,
# reldn_so_contrastive_losses, reldn_p_contrastive_losses, margins 0.2, no spo-agnostic compensation) run
# once on reference_fixture(): one call per image and side (IMS_PER_BATCH 1 per GPU), images averaged as
# training_stats_rel averages the GPUs' losses, subject and object sides added.
OFFICIAL_REFERENCE = {"L1": 0.487994952682, "L2": 0.405244116782, "L3": 0.276847808473}
OFFICIAL_REFERENCE_SUBJECT_SIDE = {"L1": 0.234451977548, "L2": 0.177113442313, "L3": 0.121228679307}


def test_official_implementation_reference_values():
    rows, logits = reference_fixture()
    ints = [torch.tensor(c) for c in zip(*rows)]
    out = graphical_contrastive_losses(logits.softmax(-1), *ints)
    for name, value in OFFICIAL_REFERENCE.items():
        assert out[name].item() == pytest.approx(value, abs=1e-10), name
    subjects = graphical_contrastive_losses(logits.softmax(-1), *ints, side=torch.zeros(len(rows), dtype=torch.int64))
    for name, value in OFFICIAL_REFERENCE_SUBJECT_SIDE.items():
        assert subjects[name].item() == pytest.approx(value, abs=1e-10), name
    # the paper's per-anchor reading averages the same hinges differently
    paper = graphical_contrastive_losses(logits.softmax(-1), *ints, averaging="paper")
    assert all(abs(paper[name].item() - OFFICIAL_REFERENCE[name]) > 0.05 for name in OFFICIAL_REFERENCE)
