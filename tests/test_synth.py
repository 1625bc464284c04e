"""The synthetic generator's promised properties, measured on generated data."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sgtool.data.prepared import load_prepared
from sgtool.data.synth import Scene, load_spec, prepare_synth, render, true_predicates
from sgtool.workspace import Workspace


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    prepare_synth(ws, images=600, seed=3, workers=2)
    return load_prepared(ws)


def _pair_keys(rels):
    return rels.pairs[:, 0] * 1_000_000 + rels.pairs[:, 1]


def test_vocabulary_and_image_format(synth):
    assert len(synth.vocab.objects) >= 12
    assert len(synth.vocab.predicates) >= 14
    for name in ("left of", "above", "inside", "on", "near", "overlapping", "same colour as", "bigger than",
                 "holds", "points at"):
        assert name in synth.vocab.predicates
    image = Image.open(synth.path / synth.graphs.files[0])
    assert image.mode == "RGB" and image.size == (128, 128)


def test_objects_per_image_and_duplicates(synth):
    g = synth.graphs
    counts = g.box_counts()
    assert counts.min() >= 2 and counts.max() <= 10
    dup = [len(np.unique(g.labels[a:b])) < b - a for a, b in zip(g.box_offsets[:-1], g.box_offsets[1:])]
    assert np.mean(dup) >= 0.30


def test_splits_are_70_10_20(synth):
    counts = synth.manifest["counts"]
    assert (counts["train"]["images"], counts["val"]["images"], counts["test"]["images"]) == (420, 60, 120)


def test_long_tail_and_multi_predicate_pairs(synth):
    rels = synth.graphs.relations
    per_predicate = np.bincount(rels.predicates, minlength=len(synth.vocab.predicates) + 1)[1:]
    assert per_predicate.min() > 0
    assert per_predicate.max() >= 20 * per_predicate.min()
    _, per_pair = np.unique(_pair_keys(rels), return_counts=True)
    assert np.mean(per_pair >= 2) >= 0.15


def test_annotations_are_a_subset_of_the_complete_truth(synth):
    g = synth.graphs
    annotated = set(zip(*g.relations.pairs.T, g.relations.predicates))
    complete = set(zip(*g.complete.pairs.T, g.complete.predicates))
    assert annotated <= complete
    assert len(complete) > 2 * len(annotated)  # not every true relation is annotated


def test_closer_pairs_are_annotated_more_often(synth):
    g = synth.graphs
    keys = _pair_keys(g.complete)
    true_pairs, first = np.unique(keys, return_index=True)
    annotated = np.isin(true_pairs, _pair_keys(g.relations))
    s, o = g.boxes[g.complete.pairs[first, 0]], g.boxes[g.complete.pairs[first, 1]]
    gap = np.hypot(np.maximum(0, np.maximum(s[:, 0] - o[:, 2], o[:, 0] - s[:, 2])),
                   np.maximum(0, np.maximum(s[:, 1] - o[:, 3], o[:, 1] - s[:, 3])))
    near, far = gap < 8, gap > 40
    assert annotated[near].mean() > 2 * annotated[far].mean()


def test_class_pair_structure(synth):
    g, vocab = synth.graphs, synth.vocab
    labels = lambda rows: {vocab.objects[i - 1] for i in g.labels[rows]}  # noqa: E731
    rels = g.complete
    for predicate, side, allowed in (("inside", 1, {"ring", "frame"}), ("on", 1, {"bar"}),
                                     ("holds", 0, {"cross", "star"}), ("points at", 0, {"triangle", "trapezoid"})):
        mask = rels.predicates == vocab.predicates.index(predicate) + 1
        assert mask.sum() > 0
        assert labels(rels.pairs[mask, side]) <= allowed
    # the prior is informative but not sufficient: the most common class pair spreads over several predicates
    subj, obj = g.labels[g.relations.pairs[:, 0]], g.labels[g.relations.pairs[:, 1]]
    pair = subj * 100 + obj
    common = np.bincount(pair).argmax()
    assert len(np.unique(g.relations.predicates[pair == common])) >= 4


def test_geometric_truth_matches_the_boxes(synth):
    g, vocab = synth.graphs, synth.vocab
    rels = g.complete
    s, o = g.boxes[rels.pairs[:, 0]], g.boxes[rels.pairs[:, 1]]
    left = rels.predicates == vocab.predicates.index("left of") + 1
    assert np.all(s[left, 2] <= o[left, 0])
    above = rels.predicates == vocab.predicates.index("above") + 1
    assert np.all(s[above, 3] <= o[above, 1])
    inside = rels.predicates == vocab.predicates.index("inside") + 1
    assert np.all((s[inside, :2] >= o[inside, :2]) & (s[inside, 2:] <= o[inside, 2:]))


def _scene_with_link(kind: str) -> Scene:
    centres = np.array([[30.0, 64.0], [98.0, 64.0]])
    radii = np.array([10.0, 10.0])
    boxes = np.array([[20, 54, 40, 74], [88, 54, 108, 74]])
    return Scene(labels=np.array([7, 0]), centres=centres, radii=radii, colours=np.array([0, 2]), boxes=boxes,
                 links=[(0, 1, kind)])


def test_drawn_link_is_visible_between_the_pair_and_decides_the_predicate():
    spec = load_spec(128)
    scene = _scene_with_link("holds")
    pixels = np.asarray(render(spec, scene))
    assert tuple(pixels[64, 64]) == spec.link_colour  # the line crosses the gap
    assert tuple(pixels[64, 98]) == tuple(spec.colours[2])  # the circle's colour at its centre
    truth = true_predicates(spec, scene)
    holds = spec.predicates.index("holds")
    assert truth[0, 1, holds] and not truth[1, 0, holds]
    no_link = Scene(scene.labels, scene.centres, scene.radii, scene.colours, scene.boxes, [])
    assert tuple(np.asarray(render(spec, no_link))[64, 64]) == spec.background
    assert not true_predicates(spec, no_link)[..., holds].any()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    paths = []
    for folder, seed, workers in (("a", 1, 2), ("b", 1, 1), ("c", 2, 2)):
        ws = Workspace(tmp_path / folder)
        prepare_synth(ws, images=40, seed=seed, workers=workers)
        paths.append((ws.data_dir("synth") / "sgg.h5").read_bytes())
    assert paths[0] == paths[1]
    assert paths[0] != paths[2]
