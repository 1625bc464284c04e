"""Shared pair batching (heads/_relbatch.py): a pair annotated with several predicates trains on each of them."""
from __future__ import annotations

import dataclasses

import numpy as np

from sgg_fixtures import tiny_graphs
from sgtool.data.graphs import RelationSet
from sgtool.heads import TrainData, get_head, make_config
from sgtool.heads._relbatch import sample_pairs


def targets_of_pair(pair: tuple[int, int], seed: int, epochs: int) -> list[int]:
    offsets = np.array([0, 3])
    rel_pairs, predicates = np.array([[0, 1], [0, 1], [2, 0]]), np.array([2, 3, 1])
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(epochs):
        pairs, targets = sample_pairs(offsets, rel_pairs, predicates, 3.0, rng)
        out.append(int(targets[(pairs[:, 0] == pair[0]) & (pairs[:, 1] == pair[1])][0]))
    return out


def test_a_pair_with_two_predicates_trains_on_both_drawn_from_the_seeded_rng():
    drawn = targets_of_pair((0, 1), seed=0, epochs=40)
    assert set(drawn) == {2, 3} and 10 <= drawn.count(2) <= 30  # about half each, never only the last one
    assert drawn == targets_of_pair((0, 1), seed=0, epochs=40)  # seeded: the same draws again
    assert drawn != targets_of_pair((0, 1), seed=1, epochs=40)
    assert set(targets_of_pair((2, 0), seed=0, epochs=10)) == {1}  # a single annotation is always kept


def with_duplicate_predicate(graphs):
    """The first relation of the train split annotated a second time with another predicate."""
    rel = graphs.relations
    extra = (rel.predicates[0] % 3) + 1
    pairs = np.insert(rel.pairs, 1, rel.pairs[0], axis=0)
    predicates = np.insert(rel.predicates, 1, extra)
    offsets = rel.offsets.copy()
    offsets[1:] += 1
    return dataclasses.replace(graphs, relations=RelationSet(pairs, predicates, offsets)), int(rel.predicates[0]), extra


def test_every_head_batching_through_relbatch_sees_both_predicates_over_epochs():
    graphs, first, extra = with_duplicate_predicate(tiny_graphs(splits=(4, 1, 1)).split_subset("train"))
    s, o = graphs.relations.pairs[0]
    for name in ("nodis", "iwsl"):
        head_cls = get_head(name)
        head = head_cls(make_config(head_cls, {"batch_size": 4}), 5, 4)
        head.build(TrainData(graphs, graphs, None, {}))
        rng = np.random.default_rng(0)
        seen = set()
        for _ in range(30):  # epochs
            for batch in head.batches(graphs, shuffle=False, rng=rng):
                hit = (batch.pairs[:, 0].numpy() == s) & (batch.pairs[:, 1].numpy() == o)
                assert hit.sum() == 1
                seen.add(int(batch.targets[hit][0]))
        assert seen == {first, extra}, name
