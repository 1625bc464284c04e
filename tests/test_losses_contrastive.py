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

# α = 0.2. Only anchors (groups) with ≥1 positive and ≥1 negative count; the subject-side
# and object-side means are added.
# L1 subjects: img0 s0: min pos 0.70, max neg max(0.60, 0.65) = 0.65 -> 0.2 − 0.70 + 0.65 = 0.15
#              img1 s0: min pos 0.90, max neg 0.20 -> 0.2 − 0.90 + 0.20 < 0 -> 0
#              (s1, s2 of img0 have no negative; s3, img1 s1 no positive)      mean = 0.075
# L1 objects:  img0 o3: min pos min(0.80, 0.50) = 0.50, max neg 0.65 (r2) -> 0.2 − 0.5 + 0.65 = 0.35
#              (no other object anchor has both)                               mean = 0.35
# L1 = 0.075 + 0.35 = 0.425
# L2 subjects: (img0 s0, cups): pos 0.70, neg 0.60 (r1; the table r2 is another class) -> 0.10
#              (img1 s0, cups): pos 0.90, neg 0.20 -> 0                        mean = 0.05
# L2 objects:  (img0 o3, persons) only negative; (img0 o3, cups) only positives -> no group, 0
# L2 = 0.05
# L3 subjects: (img0 s0, holds): pos p1(r0) 0.60, neg max p1(r1, r2) = 0.50 -> 0.2 − 0.6 + 0.5 = 0.10
#              (img1 s0, holds): pos 0.80, neg p1(r8) 0.15 -> 0                mean = 0.05
# L3 objects:  (img0 o3, on): pos min p2(r3, r4) = 0.40, neg p2(r2) 0.60 -> 0.2 − 0.4 + 0.6 = 0.40
#              (img1 o1, holds): no negative                                   mean = 0.40
# L3 = 0.05 + 0.40 = 0.45
EXPECTED = {"L1": 0.425, "L2": 0.05, "L3": 0.45}


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
    # the same probabilities violate a margin of 0.95 (gap is 0.9)
    assert call(*as_inputs(rows), margin=0.95)["L1"].item() == pytest.approx(0.05 + 0.05)


def test_pair_with_two_predicates_is_not_its_own_negative():
    # one pair labelled holds and on (two rows) plus an unrelated pair of the same subject
    rows = [(0, 0, 1, 1, 2, 1, [0.1, 0.5, 0.4]), (0, 0, 1, 1, 2, 2, [0.1, 0.5, 0.4]),
            (0, 0, 2, 1, 2, 0, [0.9, 0.05, 0.05])]
    # L3 subjects: holds: 0.2 − 0.5 + 0.05 < 0; on: 0.2 − 0.4 + 0.05 < 0 -> 0 (not 0.2 − 0.4 + 0.5)
    assert call(*as_inputs(rows))["L3"].item() == 0.0


def test_no_valid_anchor_gives_zero_with_gradient_path():
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
    # L1 = ½(0.2 − Φ0 + Φ2) [+ img1 0] + (0.2 − Φ4 + Φ2), Φ = 1 − p0:
    # ∂/∂p0: r0 +0.5, r2 −0.5 − 1, r4 +1, others 0
    expected = torch.tensor([0.5, 0, -1.5, 0, 1.0, 0, 0, 0, 0], dtype=torch.float64)
    torch.testing.assert_close(grad_bg, expected)


def loop_reference(probs, rows, margin):
    """Plain loops over anchors, straight from the definitions."""
    def side(anchor_of, other_cls_of):
        l1, l2, l3 = [], [], []
        anchors = {(r[0], anchor_of(r)) for r in rows}
        for a in anchors:
            mine = [m for m, r in enumerate(rows) if (r[0], anchor_of(r)) == a]
            phi = {m: 1 - probs[m][0] for m in mine}
            hinge = lambda pos, neg: max(0.0, margin - min(pos) + max(neg))  # noqa: E731
            pos = [phi[m] for m in mine if rows[m][5] > 0]
            neg = [phi[m] for m in mine if rows[m][5] == 0]
            if pos and neg:
                l1.append(hinge(pos, neg))
            for c in {other_cls_of(rows[m]) for m in mine}:
                pos_c = [phi[m] for m in mine if rows[m][5] > 0 and other_cls_of(rows[m]) == c]
                neg_c = [phi[m] for m in mine if rows[m][5] == 0 and other_cls_of(rows[m]) == c]
                if pos_c and neg_c:
                    l2.append(hinge(pos_c, neg_c))
            for e in {rows[m][5] for m in mine if rows[m][5] > 0}:
                pos_e = [probs[m][e] for m in mine if rows[m][5] == e]
                neg_e = [probs[m][e] for m in mine if rows[m][5] != e]
                if pos_e and neg_e:
                    l3.append(hinge(pos_e, neg_e))
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
    assert out["total"].item() == pytest.approx(l0 + 1.0 * 0.425 + 0.5 * 0.05 + 0.1 * 0.45)
    only = reldn_total_loss(logits, *ints, losses="L0,L2")
    assert set(only) == {"L0", "L2", "total"}
    assert only["total"].item() == pytest.approx(l0 + 0.5 * 0.05)
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
