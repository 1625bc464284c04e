"""The multimodal subset of the synthetic dataset (recipe section `multimodal` of synth.yaml).

A share (`fraction`) of the images, drawn per image from its own seeded stream, holds pairs whose
subject is one of a few look-alike classes: drawn with the same shape, from the same size range,
joined to their target by the same plain line, so neither pixels nor boxes tell them apart; yet
each plays its own role (e.g. `tongs` holds the orb, `wand` points at it). Every true predicate of
every pair of such an image is annotated (complete annotation), so a pair carries several true
predicates, and given its boxes the triplet distribution is a mixture over the look-alike classes:
(tongs, holds, orb) and (wand, points at, orb), never (tongs, points at, orb). An independent
(rank-1) p(s) p(p) p(o) must put as much weight on the crossed triplets as on the true ones; a
rank ≥ 2 mixture need not. With fraction 0 (the default) nothing changes: no class is added.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from sgtool.data.synth_scene import Scene, box_of, draw_link, draw_shape, overlaps_any

STREAM = 7_919  # the seed stream that decides which images are multimodal


def enabled(recipe: dict, fraction: float | None = None) -> bool:
    share = recipe.get("multimodal", {}).get("fraction", 0.0) if fraction is None else fraction
    return float(share) > 0


def with_multimodal(recipe: dict, fraction: float | None = None) -> dict:
    """The recipe with the look-alike and target classes added (weight 0: the ordinary generator never
    draws them) and the fraction set; unchanged when the subset is off."""
    section = dict(recipe.get("multimodal") or {})
    if fraction is not None:
        section["fraction"] = float(fraction)
    if not enabled({"multimodal": section}):
        return recipe
    objects = dict(recipe["objects"])
    for actor in section["actors"]:
        objects[actor] = [section["drawing"], 0]
    objects[section["target"]] = [section["target_drawing"], 0]
    return {**recipe, "objects": objects, "multimodal": section}


def is_multimodal(seed: int, index: int, fraction: float) -> bool:
    """Whether image `index` (0-based) of a dataset rendered with `seed` belongs to the subset."""
    return fraction > 0 and bool(np.random.default_rng([seed, index, STREAM]).random() < fraction)


def multimodal_images(seed: int, images: int, fraction: float) -> np.ndarray:
    """(images,) bool: the subset's images."""
    return np.array([is_multimodal(seed, i, fraction) for i in range(images)], dtype=bool)


def make_scene(spec, section: dict, rng: np.random.Generator):
    """Actor / target pairs placed apart; a link (the actor's role) from each actor to its target."""
    actors = [spec.classes.index(a) for a in section["actors"]]
    target = spec.classes.index(section["target"])
    n_pairs = int(rng.integers(section["pairs"][0], section["pairs"][1] + 1))
    labels, centres, radii, boxes, links = [], [], [], [], []
    for _ in range(n_pairs):
        actor = int(rng.choice(actors))
        for _ in range(40):
            r_a, r_t = (spec.px(rng.uniform(*section["radius"])) for _ in range(2))
            a = rng.uniform(spec.px(14), spec.size - spec.px(14), size=2)
            angle, dist = rng.uniform(0, 2 * math.pi), spec.px(rng.uniform(*section["distance"]))
            t = a + dist * np.array([math.cos(angle), math.sin(angle)])
            box_a, box_t = box_of(spec, actor, a, r_a), box_of(spec, target, t, r_t)
            inside = all(0 <= v <= spec.size for v in (*box_a, *box_t))
            if inside and not overlaps_any(box_a, boxes, spec.px(2)) and not overlaps_any(box_t, boxes + [box_a],
                                                                                             spec.px(2)):
                break
        else:
            continue
        links.append((len(labels), len(labels) + 1, section["actors"][spec.classes[actor]]))
        labels += [actor, target]
        centres += [a, t]
        radii += [r_a, r_t]
        boxes += [box_a, box_t]
    colours = rng.integers(0, len(spec.colours), size=len(labels))
    return Scene(np.array(labels, np.int64), np.array(centres).reshape(-1, 2), np.array(radii),
                 colours, np.array(boxes, np.int64).reshape(-1, 4), links)


def render(spec, scene) -> Image.Image:
    """Like synth.render, with every link drawn the same way (a plain line), so links do not tell roles apart."""
    image = Image.new("RGB", (spec.size, spec.size), spec.background)
    draw = ImageDraw.Draw(image)
    for s, o, _ in scene.links:
        draw_link(draw, spec, scene, s, o, "holds")
    for i, label in enumerate(scene.labels):
        colour = tuple(int(c) for c in spec.colours[scene.colours[i]])
        draw_shape(draw, spec.drawings[label], scene.boxes[i], scene.centres[i], scene.radii[i], colour)
    return image
