"""The synthetic generator's multimodal subset: seeded, look-alike actors with distinct roles,
several true predicates per pair, complete annotation, and off by default."""
from __future__ import annotations

import numpy as np
import pytest

from sgtool.data.recipes import load_recipe
from sgtool.data.synth import prepare_synth
from sgtool.data.synth_multimodal import multimodal_images, with_multimodal
from sgtool.errors import SgtoolError
from sgtool.workspace import Workspace

IMAGES = 30


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("mm") / "ws")
    return prepare_synth(ws, images=IMAGES, workers=1, multimodal=0.6, seed=3)


def test_the_subset_is_seeded(subset, tmp_path):
    again = prepare_synth(Workspace(tmp_path / "ws"), images=IMAGES, workers=1, multimodal=0.6, seed=3)
    for name in ("boxes", "labels"):
        np.testing.assert_array_equal(getattr(subset.graphs, name), getattr(again.graphs, name))
    np.testing.assert_array_equal(subset.graphs.relations.pairs, again.graphs.relations.pairs)
    np.testing.assert_array_equal(subset.graphs.relations.predicates, again.graphs.relations.predicates)


def test_look_alike_actors_play_only_their_own_role_and_are_annotated_completely(subset):
    g, vocab = subset.graphs, subset.vocab
    section = with_multimodal(load_recipe("synth"), 0.6)["multimodal"]
    cls = {name: vocab.objects.index(name) + 1 for name in (*section["actors"], section["target"])}
    role = {name: vocab.predicates.index(p) + 1 for name, p in section["actors"].items()}
    assert with_multimodal(load_recipe("synth"), 0.6)["objects"]["tongs"][0] == \
        with_multimodal(load_recipe("synth"), 0.6)["objects"]["wand"][0]  # drawn alike
    chosen = multimodal_images(3, IMAGES, 0.6)
    assert 0 < chosen.sum() < IMAGES
    table = np.zeros((2, 2))  # (actor class, role predicate) over actor -> target relations
    predicates_per_pair = []
    for i in np.flatnonzero(chosen):
        r0, r1 = g.relations.offsets[i], g.relations.offsets[i + 1]
        c0, c1 = g.complete.offsets[i], g.complete.offsets[i + 1]
        np.testing.assert_array_equal(g.relations.pairs[r0:r1], g.complete.pairs[c0:c1])  # complete annotation
        labels = g.labels[g.relations.pairs[r0:r1]]
        preds = g.relations.predicates[r0:r1]
        for a, actor in enumerate(section["actors"]):
            onto_target = (labels[:, 0] == cls[actor]) & (labels[:, 1] == cls[section["target"]])
            for b, other in enumerate(section["actors"]):
                table[a, b] += np.sum(onto_target & (preds == role[other]))
        _, per_pair = np.unique(g.relations.pairs[r0:r1], axis=0, return_counts=True)
        predicates_per_pair.append(per_pair)
    assert table[0, 0] > 0 and table[1, 1] > 0 and table[0, 1] == 0 and table[1, 0] == 0
    # an independent distribution (product of the marginals) puts weight on the crossed combinations
    independent = np.outer(table.sum(1), table.sum(0)) / table.sum()
    assert independent[0, 1] + independent[1, 0] > 0.3 * table.sum()
    assert np.concatenate(predicates_per_pair).max() >= 3


def test_off_by_default_the_vocabulary_and_images_do_not_change(tmp_path):
    plain = prepare_synth(Workspace(tmp_path / "a"), images=8, workers=1)
    off = prepare_synth(Workspace(tmp_path / "b"), images=8, workers=1, multimodal=0.0)
    assert plain.vocab.objects == off.vocab.objects and "tongs" not in plain.vocab.objects
    np.testing.assert_array_equal(plain.graphs.labels, off.graphs.labels)
    with pytest.raises(SgtoolError, match="between 0 and 1"):
        prepare_synth(Workspace(tmp_path / "c"), images=8, workers=1, multimodal=1.5)
