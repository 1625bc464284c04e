"""Confusion scenes of the synthetic generator: instance confusion and proximal ambiguity."""
from __future__ import annotations

import numpy as np
import pytest

from sgtool.data.recipes import load_recipe
from sgtool.data.synth import load_spec, render, true_predicates
from sgtool.data.synth_confusion import annotate_links, make_confusion_scene, scene_kind, scene_kinds

LINKS = ("holds", "points at")


@pytest.fixture(scope="module")
def spec():
    recipe = load_recipe("synth")
    return load_spec(128, recipe)


def scenes(spec, kind, count=40):
    return [make_confusion_scene(spec, np.random.default_rng([7, i]), kind) for i in range(count)]


def test_instance_scene_has_k_identical_candidates_at_equal_distance(spec):
    picked = []
    for scene in scenes(spec, "instance"):
        (s, o, name), = scene.links
        assert s == 0 and name in LINKS
        label = scene.labels[o]
        candidates = np.flatnonzero(scene.labels == label)
        assert 2 <= len(candidates) <= 4 and o in candidates  # k candidates, the partner one of them
        assert len(set(scene.colours[candidates])) == 1 and len(set(scene.radii[candidates])) == 1
        d = np.linalg.norm(scene.centres[candidates] - scene.centres[0], axis=1)
        np.testing.assert_allclose(d, spec.px(spec.confusion["distance"]), rtol=1e-9)
        sizes = scene.boxes[candidates, 2:] - scene.boxes[candidates, :2]
        assert np.abs(sizes - sizes[0]).max() <= 1  # same box size (up to pixel rounding)
        truth = true_predicates(spec, scene)
        annotated = annotate_links(spec, truth)
        s_, o_, p_ = np.nonzero(annotated)
        assert list(zip(s_, o_, p_)) == [(0, o, spec.predicate(name))]  # the link, completely, and nothing else
        picked.append(int(np.flatnonzero(candidates == o)[0]) / len(candidates))
    assert 0.2 < np.mean(picked) < 0.6  # the partner's position among candidates is not fixed


def test_proximal_scene_crossed_pairs_are_as_close_as_true_ones(spec):
    flips = []
    for scene in scenes(spec, "proximal"):
        (s1, o1, p1), (s2, o2, p2) = scene.links
        assert p1 == p2 and s1 != s2 and o1 != o2
        assert scene.labels[s1] == scene.labels[s2] and scene.labels[o1] == scene.labels[o2]
        assert scene.colours[s1] == scene.colours[s2] and scene.colours[o1] == scene.colours[o2]
        dist = lambda a, b: np.linalg.norm(scene.centres[a] - scene.centres[b])  # noqa: E731
        np.testing.assert_allclose([dist(s1, o2), dist(s2, o1), dist(s2, o2)], dist(s1, o1), rtol=1e-9)
        annotated = annotate_links(spec, true_predicates(spec, scene))
        assert sorted(zip(*np.nonzero(annotated)[:2])) == sorted([(s1, o1), (s2, o2)])
        flips.append(o1 == 1)
    assert 0.2 < np.mean(flips) < 0.8  # which pairing is true is a coin flip


def test_only_the_drawn_line_tells_the_partner_apart(spec):
    for scene in scenes(spec, "instance", 10):
        image = np.asarray(render(spec, scene))
        (s, o, _), = scene.links
        others = [c for c in np.flatnonzero(scene.labels == scene.labels[o]) if c != o]
        midpoint = lambda a: tuple(np.round((scene.centres[s] + scene.centres[a]) / 2).astype(int))  # noqa: E731
        def link_near(a) -> bool:  # the link colour within a pixel of the midpoint
            x, y = midpoint(a)
            return bool((image[y - 1:y + 2, x - 1:x + 2] == spec.link_colour).all(-1).any())

        assert link_near(o)
        assert not any(link_near(c) for c in others)


def test_kinds_follow_the_recipe_fractions_and_the_seed(spec):
    assert scene_kind(spec.confusion, 0, 5) is None  # the default recipe draws no confusion scene
    confusion = {**spec.confusion, "instance_fraction": 0.3, "proximal_fraction": 0.2}
    kinds = scene_kinds(confusion, 4, 2000)
    assert abs(np.mean(kinds == "instance") - 0.3) < 0.04 and abs(np.mean(kinds == "proximal") - 0.2) < 0.04
    assert list(kinds) == list(scene_kinds(confusion, 4, 2000)) and list(kinds) != list(scene_kinds(confusion, 5, 2000))


def test_prepared_dataset_holds_the_confusion_scenes(tmp_path):
    from sgtool.data.prepared import load_prepared
    from sgtool.data.synth import prepare_synth
    from sgtool.workspace import Workspace

    confusion = {"instance_fraction": 0.5, "proximal_fraction": 0.5}
    prepared = prepare_synth(Workspace(tmp_path), images=12, size=128, seed=3, workers=1, confusion=confusion)
    graphs = load_prepared(Workspace(tmp_path), prepared.name).graphs
    kinds = scene_kinds({**load_recipe("synth")["confusion"], **confusion}, 3, 12)
    links = {prepared.vocab.predicates.index(p) + 1 for p in LINKS}
    counts = graphs.relations.counts()
    assert set(graphs.relations.predicates.tolist()) <= links
    np.testing.assert_array_equal(counts, np.where(kinds == "instance", 1, 2))
