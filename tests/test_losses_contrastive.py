"""RelDN's graphical contrastive losses: hand-computed values, margins, batching and a loop reference."""
from __future__ import annotations

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
# L3: argmax of each row: r0 holds (right), r1 holds (wrong: unrelated), r2 on (wrong), r3 on (right),
#     r4, r5, r7, r8 none (∅ is no predicate), r6 holds (right).
# L3 subjects: img0 s0, e = holds: pos Φ(r0) 0.70, wrongly-holds of s0: r1 Φ 0.60 -> 0.10; others none  sum 0.10 / 4
# L3 objects:  img0 o3, e = on: pos min(0.80, 0.50) = 0.50, wrongly-on of o3: r2 Φ 0.65 -> 0.35       sum 0.35 / 3
L3 = 0.10 / 4 + 0.35 / 3
EXPECTED = {"L1": L1, "L2": L2, "L3": L3}


def as_inputs(rows):
    cols = list(zip(*rows))
    ints = [torch.tensor(c) for c in cols[:6]]
    return torch.tensor(cols[6], dtype=torch.float64), ints


def call(probs, ints, margin=0.2):
    image, subj, obj, subj_cls, obj_cls, pred = ints
    return graphical_contrastive_losses(probs, image, subj, obj, subj_cls, obj_cls, pred, margin=margin)


def test_hand_computed_values():
    probs, ints = as_inputs(ROWS)
    out = call(probs, ints)
    for name, value in EXPECTED.items():
        assert out[name].item() == pytest.approx(value, abs=1e-12), name


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
    guess = [max(range(len(p)), key=lambda c: p[c]) for p in probs]
    wrong = [g if g > 0 and g not in labels[(r[0], r[1], r[2])] else 0 for g, r in zip(guess, rows)]

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
            l3.append(sum(hinge([phi[m] for m in pos if rows[m][5] == e], [phi[m] for m in mine if wrong[m] == e])
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
    assert out["total"].item() == pytest.approx(l0 + 1.0 * L1 + 0.5 * L2 + 0.1 * L3)
    only = reldn_total_loss(logits, *ints, losses="L0,L2")
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


def test_issue_case_l3_is_one_predicate_term():
    # subject 0 with three pairs labelled (2, none, 3); rows over 5 columns (0 = ∅):
    #   r0 [.1, 0, .8, .1, 0]  label 2  Φ 0.9  argmax 2: right
    #   r1 [.5, 0, .1, .4, 0]  none     Φ 0.5  argmax ∅: predicts no predicate
    #   r2 [.2, 0, .7, .1, 0]  label 3  Φ 0.8  argmax 2: wrongly predicted as 2
    # E(V+) = {2, 3}. e = 2: positives r0 (min Φ 0.9), negatives {r2} (max Φ 0.8): 0.2 − 0.9 + 0.8 = 0.1.
    # e = 3: positives r2, no pair wrongly predicted as 3 -> 0. Subject side: (0.1 + 0) / |E| = 0.05, N = 1.
    # Object side: objects 1 and 3 each have one (positive) pair and no negative -> 0.
    # (The definition this replaced, p(e) as affinity and every pair not labelled e as a negative, gave 0.30.)
    probs = torch.tensor([[.1, 0, .8, .1, 0], [.5, 0, .1, .4, 0], [.2, 0, .7, .1, 0]], dtype=torch.float64)
    ints = [torch.tensor(v) for v in ([0, 0, 0], [0, 0, 0], [1, 2, 3], [1, 1, 1], [2, 2, 2], [2, 0, 3])]
    out = call(probs, ints)
    assert out["L3"].item() == pytest.approx((0.2 - 0.9 + 0.8) / 2, abs=1e-12)
    # L1: subject 0: min pos min(0.9, 0.8) = 0.8, max neg 0.5 -> 0.2 − 0.8 + 0.5 < 0 -> 0
    assert out["L1"].item() == 0.0


def test_l3_negatives_are_the_wrong_argmax_only():
    # subject 0: pair to 1 labelled holds (1), pair to 2 labelled on (2) but predicted holds, pair to 3 unrelated
    # with a high p(holds) that is not its argmax (∅ wins): only the pair to 2 is a negative of holds.
    probs = torch.tensor([[.30, .40, .30], [.10, .60, .30], [.45, .44, .11]], dtype=torch.float64)
    ints = [torch.tensor(v) for v in ([0, 0, 0], [0, 0, 0], [1, 2, 3], [1, 1, 1], [2, 2, 2], [1, 2, 0])]
    out = call(probs, ints)
    # e = holds: pos Φ 0.70, neg Φ 0.90 -> 0.40; e = on: pos Φ 0.90, nothing wrongly predicted on -> 0.
    assert out["L3"].item() == pytest.approx((0.2 - 0.7 + 0.9) / 2, abs=1e-12)
    # once the pair to 2 is predicted on (its label), holds has no negative left
    fixed = probs.clone()
    fixed[1] = torch.tensor([.10, .30, .60], dtype=torch.float64)
    assert call(fixed, ints)["L3"].item() == 0.0


def test_side_restricts_which_rows_anchor_which_side():
    probs, ints = as_inputs(ROWS)
    side = torch.zeros(len(ROWS), dtype=torch.int64)  # every row anchors subjects only
    out = graphical_contrastive_losses(probs, *ints, margin=0.2, side=side)
    assert out["L1"].item() == pytest.approx(0.15 / 4, abs=1e-12)
    assert out["L3"].item() == pytest.approx(0.10 / 4, abs=1e-12)
    side = torch.ones(len(ROWS), dtype=torch.int64)  # objects only
    assert graphical_contrastive_losses(probs, *ints, side=side)["L1"].item() == pytest.approx(0.35 / 3, abs=1e-12)
