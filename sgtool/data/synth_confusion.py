"""Confusion scenes of the synthetic dataset: the two errors RelDN's contrastive losses target.

- instance confusion: one subject and k candidates of one class, colour and size, all at the same
  distance from it (evenly spaced around it, at a random rotation); a drawn link (holds: a line,
  points at: an arrow) joins it to one of them, picked at random. Boxes, labels and distances are
  the same for every candidate, so only the pixels (the line) tell the partner apart.
- proximal ambiguity: two subjects of one class and two objects of one class on the corners of a
  square (subjects on one diagonal, objects on the other, the square at a random rotation), each
  subject linked to one object with the same predicate; the pairing (which object each subject
  holds) is a coin flip, so the crossed pairs are exactly as close as the true ones and only the
  drawn lines tell them apart.

Both may add a few unrelated distractor shapes of other classes. In these scenes every drawn link
is annotated and nothing else (no geometric or attribute predicate), so every unannotated pair is
truly unrelated to the link predicates. The recipe's `confusion` section sets the share of images
of each kind (0 by default) and the sizes; `scene_kind` says which images are which, from the
seed alone, so a benchmark can find its confusion sets without reading pixels.
"""
from __future__ import annotations

import math

import numpy as np

from sgtool.data.synth_scene import Scene, box_of, overlaps_any

KINDS = ("instance", "proximal")
_STREAM = 15  # keeps the kind draw apart from the scene's own random stream


def scene_kind(confusion: dict, seed: int, index: int) -> str | None:
    """'instance', 'proximal' or None (an ordinary scene) for image `index` of a dataset made with `seed`."""
    instance, proximal = float(confusion.get("instance_fraction", 0)), float(confusion.get("proximal_fraction", 0))
    if instance <= 0 and proximal <= 0:
        return None
    u = np.random.default_rng([seed, index, _STREAM]).random()
    return "instance" if u < instance else "proximal" if u < instance + proximal else None


def scene_kinds(confusion: dict, seed: int, images: int) -> np.ndarray:
    """(images,) object array of scene_kind for every image index."""
    return np.array([scene_kind(confusion, seed, i) for i in range(images)], dtype=object)


def _link_roles(spec, rng: np.random.Generator) -> tuple[str, int, int]:
    """A link predicate and a (subject class, object class) that can carry it, 0-based."""
    name = str(rng.choice(spec.confusion.get("predicates", ["holds", "points at"])))
    subjects, objects = {"holds": ("holders", "holdables"), "points at": ("pointers", "pointer_targets")}[name]
    subject = int(rng.choice(np.flatnonzero(spec.roles[subjects])))
    targets = np.flatnonzero(spec.roles[objects])
    return name, subject, int(rng.choice(targets[targets != subject]))


def _ring(centre: np.ndarray, distance: float, count: int, phase: float) -> np.ndarray:
    angles = phase + 2 * math.pi * np.arange(count) / count
    return centre + distance * np.stack([np.cos(angles), np.sin(angles)], 1)


def _layout(spec, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, list[int], list[tuple[int, int]], str]:
    """Centres, 0-based labels and links (subject, object) of the confusion cluster."""
    c = spec.confusion
    distance = spec.px(c["distance"])
    reach = distance + spec.px(c["radius"]) * 2.3 + 2
    middle = rng.uniform(reach, spec.size - reach, size=2)
    name, subject, target = _link_roles(spec, rng)
    if kind == "instance":
        k = int(rng.integers(c["candidates"][0], c["candidates"][1] + 1))
        centres = np.concatenate([middle[None], _ring(middle, distance, k, rng.uniform(0, 2 * math.pi))])
        return centres, [subject] + [target] * k, [(0, 1 + int(rng.integers(k)))], name
    side = distance / math.sqrt(2)  # subject-object distance = distance along every side of the square
    corners = _ring(middle, side, 4, rng.uniform(0, 2 * math.pi))  # 0, 2 subjects; 1, 3 objects
    flip = int(rng.integers(2))
    links = [(0, 1 + 2 * flip), (2, 3 - 2 * flip)]  # either pairing, each as close as the crossed one
    return corners, [subject, target, subject, target], [(a, b) for a, b in links], name


def make_confusion_scene(spec, rng: np.random.Generator, kind: str):
    """A Scene (sgtool.data.synth.Scene) of the given kind."""

    c = spec.confusion
    centres, labels, links, name = _layout(spec, rng, kind)
    r = spec.px(c["radius"])
    subject_colour, colour = (int(x) for x in rng.integers(len(spec.colours), size=2))
    subjects = {s for s, _ in links}
    colours = [subject_colour if i in subjects else colour for i in range(len(labels))]  # candidates look alike
    boxes = [box_of(spec, lab, centre, r) for lab, centre in zip(labels, centres)]
    radii = [r] * len(labels)
    others = np.setdiff1d(np.arange(len(spec.classes)), labels)
    others = others[~(spec.roles["containers"][others] | spec.roles["platforms"][others])]
    for _ in range(int(rng.integers(c["distractors"][0], c["distractors"][1] + 1))):
        label = int(rng.choice(others))
        for _attempt in range(30):
            centre = rng.uniform(r + 2, spec.size - r - 2, size=2)
            box = box_of(spec, label, centre, r)
            if not overlaps_any(box, boxes, spec.px(4)):
                labels.append(label), radii.append(r), boxes.append(box)
                centres = np.concatenate([centres, centre[None]])
                colours.append(int(rng.integers(len(spec.colours))))
                break
    boxes = np.array(boxes)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, spec.size)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, spec.size)
    return Scene(np.array(labels), np.asarray(centres, dtype=np.float64), np.array(radii), np.array(colours), boxes,
                 [(s, o, name) for s, o in links])


def annotate_links(spec, truth: np.ndarray) -> np.ndarray:
    """(n, n, P) the complete truth of the link predicates, nothing else (the annotation of a confusion scene)."""
    links = np.zeros(truth.shape[-1], dtype=bool)
    links[[spec.predicate(p) for p in ("holds", "points at", "plays with")]] = True
    return truth & links
