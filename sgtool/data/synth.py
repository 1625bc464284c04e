"""The embedded synthetic scene-graph dataset, rendered here and deterministic by seed.

Shapes of several classes, colours and sizes are placed on a canvas; some stand inside hollow
containers or on platforms, and some are joined by drawn links (a solid line: holds; an arrow:
points at; a dashed line: plays with). Every predicate's truth is computed from what is drawn,
which gives the complete ground truth; an annotator model then labels closer pairs more often
and mentions only some of each pair's true predicates, which gives the annotated relations.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sgtool.data.graphs import SPLIT_CODES, RelationSet, SceneGraphs, offsets_from_counts
from sgtool.data.prepared import PreparedDataset, Staged, save_prepared
from sgtool.data.recipes import load_recipe
from sgtool.data import synth_multimodal
from sgtool.config import check_options, option
from sgtool.data.formats import DatasetFormat, register_format
from sgtool.data.sgg_h5 import Vocabulary
from sgtool.data.synth_confusion import annotate_links, make_confusion_scene, scene_kind
from sgtool.data.synth_scene import Scene, box_of, draw_link, draw_shape, overlaps_any, shape_extent
from sgtool.data.workers import worker_pool
from sgtool.errors import SgtoolError
from sgtool.geometry import box_gap, clip_boxes, overlap_sides
from sgtool.priors import GroupRule
from sgtool.ui import SILENT, Reporter
from sgtool.workspace import Workspace

MIN_SIZE, MAX_SIZE = 64, 1024
MAX_IMAGES = 1_000_000
REFERENCE_SIZE = 128  # recipe pixel values are given at this image size


# ---------------------------------------------------------------- the recipe, resolved to arrays

@dataclass
class SynthSpec:
    """The recipe in the form the renderer needs (picklable, shared with worker processes)."""

    classes: list[str]
    drawings: list[str]
    class_weights: np.ndarray
    predicates: list[str]
    salience: np.ndarray  # (P,) probability an annotator mentions a true predicate
    roles: dict[str, np.ndarray]  # role -> boolean mask over classes
    colours: np.ndarray  # (K, 3)
    link_colour: tuple
    background: tuple
    gen: dict
    annotation: dict
    size: int
    confusion: dict = field(default_factory=dict)  # the recipe's confusion-scene section (synth_confusion.py)
    multimodal: dict = field(default_factory=dict)  # the recipe's multimodal section (synth_multimodal.py)

    def px(self, value: float) -> float:
        return value * self.size / REFERENCE_SIZE

    def predicate(self, name: str) -> int:
        return self.predicates.index(name)


def load_spec(size: int, recipe: dict | None = None) -> SynthSpec:
    recipe = recipe or load_recipe("synth")
    classes = list(recipe["objects"])
    drawings = [recipe["objects"][c][0] for c in classes]
    weights = np.array([recipe["objects"][c][1] for c in classes], dtype=np.float64)
    roles = {role: np.isin(classes, members) for role, members in recipe["roles"].items()}
    return SynthSpec(
        classes=classes, drawings=drawings, class_weights=weights / weights.sum(),
        predicates=list(recipe["predicates"]), salience=np.array(list(recipe["predicates"].values()), dtype=np.float64),
        roles=roles, colours=np.array(list(recipe["colours"].values()), dtype=np.int64),
        link_colour=tuple(recipe["link_colour"]), background=tuple(recipe["background"]),
        gen=recipe["generation"], annotation=recipe["annotation"], size=size, confusion=recipe.get("confusion") or {},
        multimodal=dict(recipe.get("multimodal") or {}),
    )


# ---------------------------------------------------------------- one scene

def _sample_classes(spec: SynthSpec, rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(spec.gen["min_objects"], spec.gen["max_objects"] + 1))
    labels = rng.choice(len(spec.classes), size=n, p=spec.class_weights)
    if rng.random() < spec.gen["duplicate_class_probability"] and len(np.unique(labels)) == n:
        labels[1] = labels[0]
    # containers and platforms first, so what sits in or on them is placed after them
    support = spec.roles["containers"][labels] | spec.roles["platforms"][labels]
    return np.concatenate([labels[support], labels[~support]])


def _place(spec: SynthSpec, rng: np.random.Generator, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size, g = spec.size, spec.gen
    centres, radii, boxes = [], [], []
    hosts = []  # (index, kind) of containers / platforms still free
    for label in labels:
        is_container = spec.roles["containers"][label]
        lo, hi = g["container_radius"] if is_container else g["radius"]
        r = spec.px(rng.uniform(lo, hi))
        hw, hh = shape_extent(spec.drawings[label], r)
        centre = None
        if hosts and not is_container and not spec.roles["platforms"][label]:
            host, kind = hosts[0]
            if rng.random() < g["inside_probability" if kind == "inside" else "on_probability"]:
                centre, r = _attach(spec, rng, label, kind, centres[host], radii[host], boxes[host])
                hosts.pop(0)
        if centre is None:
            allow_overlap = rng.random() < g["overlap_probability"]
            for _ in range(30):
                centre = np.array([rng.uniform(hw + 1, size - hw - 1), rng.uniform(hh + 1, size - hh - 1)])
                if allow_overlap or not overlaps_any(box_of(spec, label, centre, r), boxes, spec.px(2)):
                    break
        centres.append(centre)
        radii.append(r)
        boxes.append(box_of(spec, label, centre, r))
        if is_container:
            hosts.append((len(centres) - 1, "inside"))
        elif spec.roles["platforms"][label]:
            hosts.append((len(centres) - 1, "on"))
    return np.array(centres), np.array(radii)


def _attach(spec: SynthSpec, rng: np.random.Generator, label: int, kind: str, host_centre: np.ndarray,
            host_r: float, host_box: np.ndarray) -> tuple[np.ndarray, float]:
    """A centre and size that put the shape inside a container or standing on a platform."""
    if kind == "inside":
        r = host_r * rng.uniform(0.3, 0.45)
        jitter = rng.uniform(-0.15, 0.15, size=2) * host_r
        return host_centre + jitter, r
    r = spec.px(rng.uniform(*spec.gen["radius"]))
    _, hh = shape_extent(spec.drawings[label], r)
    x = rng.uniform(host_box[0] + r * 0.5, host_box[2] - r * 0.5)
    return np.array([x, host_box[1] - hh]), r


def _sample_links(spec: SynthSpec, rng: np.random.Generator, labels: np.ndarray) -> list[tuple[int, int, str]]:
    g, roles = spec.gen, spec.roles
    links = []
    for role, targets, probability, predicate in (("holders", "holdables", "holds_probability", "holds"),
                                                  ("pointers", "pointer_targets", "points_probability", "points at")):
        candidates = np.flatnonzero(roles[targets][labels])
        for s in np.flatnonzero(roles[role][labels]):
            options = candidates[candidates != s]
            if len(options) and rng.random() < g[probability]:
                links.append((int(s), int(rng.choice(options)), predicate))
    players = np.flatnonzero(roles["players"][labels])
    for a_i, a in enumerate(players):
        for b in players[a_i + 1:]:
            if rng.random() < g["plays_probability"]:
                links.append((int(a), int(b), "plays with"))
    return links


def make_scene(spec: SynthSpec, rng: np.random.Generator) -> Scene:
    labels = _sample_classes(spec, rng)
    centres, radii = _place(spec, rng, labels)
    boxes = np.array([box_of(spec, lab, c, r) for lab, c, r in zip(labels, centres, radii)])
    boxes, _ = clip_boxes(boxes, spec.size, spec.size)
    colours = rng.integers(0, len(spec.colours), size=len(labels))
    return Scene(labels, centres, radii, colours, boxes, _sample_links(spec, rng, labels))


# ---------------------------------------------------------------- truth and annotation

def true_predicates(spec: SynthSpec, scene: Scene) -> np.ndarray:
    """(n, n, P) boolean: which predicates hold for each ordered pair, decided by the drawing."""
    b = scene.boxes.astype(np.float64)
    s, o = b[:, None, :], b[None, :, :]
    n = len(b)
    truth = np.zeros((n, n, len(spec.predicates)), dtype=bool)
    iw, ih = overlap_sides(s, o)
    h_overlap, v_overlap = iw > 0, ih > 0
    contained = (s[..., 0] >= o[..., 0]) & (s[..., 1] >= o[..., 1]) & (s[..., 2] <= o[..., 2]) & (s[..., 3] <= o[..., 3])
    container = spec.roles["containers"][scene.labels]
    platform = spec.roles["platforms"][scene.labels]
    inside = contained & container[None, :]
    gap = box_gap(s, o)
    overlap = h_overlap & v_overlap
    on = (platform[None, :] & h_overlap & (np.abs(s[..., 3] - o[..., 1]) <= spec.px(1.5))
          & (scene.centres[:, None, 1] < o[..., 1]))
    ratio = scene.radii[:, None] / scene.radii[None, :]
    p = spec.predicate
    truth[..., p("left of")] = (s[..., 2] <= o[..., 0]) & v_overlap
    truth[..., p("right of")] = (s[..., 0] >= o[..., 2]) & v_overlap
    truth[..., p("above")] = (s[..., 3] <= o[..., 1]) & h_overlap
    truth[..., p("below")] = (s[..., 1] >= o[..., 3]) & h_overlap
    truth[..., p("near")] = ~overlap & (gap < spec.px(spec.gen["near_distance"]))
    truth[..., p("overlapping")] = overlap & ~inside & ~inside.T
    truth[..., p("inside")] = inside
    truth[..., p("contains")] = inside.T
    truth[..., p("on")] = on
    truth[..., p("same colour as")] = scene.colours[:, None] == scene.colours[None, :]
    truth[..., p("bigger than")] = ratio >= spec.gen["bigger_ratio"]
    truth[..., p("smaller than")] = ratio <= 1 / spec.gen["bigger_ratio"]
    for subject, obj, name in scene.links:
        truth[subject, obj, p(name)] = True
        if name == "plays with":
            truth[obj, subject, p(name)] = True
    truth[np.arange(n), np.arange(n)] = False
    return truth


def annotate(spec: SynthSpec, scene: Scene, truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, n, P) boolean subset of truth: what a person would have labelled."""
    b = scene.boxes.astype(np.float64)
    s, o = b[:, None, :], b[None, :, :]
    gap = box_gap(s, o)
    a = spec.annotation
    top_salience = np.where(truth, spec.salience, 0.0).max(-1)
    p_pair = a["pair_probability"] * top_salience * np.exp(-gap / spec.px(a["distance_scale"]))
    chosen_pair = rng.random(gap.shape) < p_pair
    mention = truth & (rng.random(truth.shape) < spec.salience)
    # an annotated pair always carries at least its most salient true predicate
    most_salient = np.argmax(np.where(truth, spec.salience, -1.0), axis=-1)
    forced = np.zeros_like(truth)
    np.put_along_axis(forced, most_salient[..., None], True, axis=-1)
    return chosen_pair[..., None] & (mention | (forced & truth))


# ---------------------------------------------------------------- drawing

def render(spec: SynthSpec, scene: Scene) -> Image.Image:
    image = Image.new("RGB", (spec.size, spec.size), spec.background)
    draw = ImageDraw.Draw(image)
    for s, o, kind in scene.links:
        draw_link(draw, spec, scene, s, o, kind)
    for i, label in enumerate(scene.labels):
        colour = tuple(int(c) for c in spec.colours[scene.colours[i]])
        draw_shape(draw, spec.drawings[label], scene.boxes[i], scene.centres[i], scene.radii[i], colour)
    return image


# ---------------------------------------------------------------- many images, in parallel

def _pairs_of(mask: np.ndarray) -> np.ndarray:
    """(n, n, P) boolean -> (k, 3) [subject, object, 1-based predicate], ordered by pair then predicate."""
    s, o, p = np.nonzero(mask)
    return np.stack([s, o, p + 1], axis=1).astype(np.int64)


def _render_chunk(args: tuple) -> list[tuple]:
    spec, seed, indices, images_dir = args
    fraction = float(spec.multimodal.get("fraction", 0.0))
    out = []
    for index in indices:
        rng = np.random.default_rng([seed, index])
        scene = (synth_multimodal.make_scene(spec, spec.multimodal, rng)
                 if synth_multimodal.is_multimodal(seed, index, fraction) else None)
        if scene is not None and len(scene.labels):  # the multimodal subset: every true predicate annotated
            truth = annotated = true_predicates(spec, scene)
            image = synth_multimodal.render(spec, scene)
        else:
            kind = scene_kind(spec.confusion, seed, index)  # None: an ordinary scene
            scene = make_scene(spec, rng) if kind is None else make_confusion_scene(spec, rng, kind)
            truth = true_predicates(spec, scene)
            annotated = annotate(spec, scene, truth, rng) if kind is None else annotate_links(spec, truth)
            image = render(spec, scene)
        image.save(Path(images_dir) / f"{index + 1}.png", optimize=False, compress_level=1)
        out.append((scene.boxes, scene.labels + 1, _pairs_of(annotated), _pairs_of(truth)))
    return out


def render_dataset(spec: SynthSpec, images: int, seed: int, images_dir: Path, workers: int,
                   reporter: Reporter = SILENT) -> list[tuple]:
    """Render every image into images_dir; per image (boxes, labels, annotated, complete)."""
    chunk = max(1, min(250, images // max(1, workers * 8) or 1))
    jobs = [(spec, seed, range(start, min(start + chunk, images)), str(images_dir)) for start in range(0, images, chunk)]
    results: list[tuple] = []
    with reporter.progress() as bar:
        task = bar.add_task("render", total=images, status="")
        if workers <= 1:
            chunks = map(_render_chunk, jobs)
        else:
            pool = worker_pool(workers)
            chunks = pool.map(_render_chunk, jobs)
        try:
            for part in chunks:
                results.extend(part)
                bar.advance(task, len(part))
        finally:
            if workers > 1:
                pool.shutdown(cancel_futures=True)
    return results


def _relation_set(parts: list[np.ndarray], box_offsets: np.ndarray) -> RelationSet:
    counts = np.array([len(p) for p in parts], dtype=np.int64)
    rows = np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)
    offsets = offsets_from_counts(counts)
    base = np.repeat(box_offsets[:-1], counts)
    return RelationSet(rows[:, :2] + base[:, None], rows[:, 2], offsets)


def assemble(results: list[tuple], size: int, split_fractions: dict) -> SceneGraphs:
    n = len(results)
    box_offsets = offsets_from_counts(np.array([len(r[1]) for r in results], dtype=np.int64))
    split = np.full(n, SPLIT_CODES["test"], dtype=np.int8)
    n_train = int(round(n * split_fractions["train"]))
    n_val = int(round(n * split_fractions["val"]))
    split[:n_train] = SPLIT_CODES["train"]
    split[n_train:n_train + n_val] = SPLIT_CODES["val"]
    return SceneGraphs(
        image_ids=np.arange(1, n + 1, dtype=np.int64),
        widths=np.full(n, size, dtype=np.int64), heights=np.full(n, size, dtype=np.int64), split=split,
        box_offsets=box_offsets,
        boxes=np.concatenate([r[0] for r in results]).astype(np.float32),
        labels=np.concatenate([r[1] for r in results]).astype(np.int64),
        relations=_relation_set([r[2] for r in results], box_offsets),
        complete=_relation_set([r[3] for r in results], box_offsets),
        files=[f"images/{i}.png" for i in range(1, n + 1)],
    )


def prepare_synth(ws: Workspace, images: int = 2000, size: int = 128, seed: int = 0, name: str = "synth",
                  workers: int = 0, force: bool = False, reporter: Reporter = SILENT,
                  confusion: dict | None = None, multimodal: float | None = None) -> PreparedDataset:
    """Render the synthetic dataset into the workspace (stage function behind `sgtool prepare synth`).

    confusion: overrides of the recipe's `confusion` section (e.g. {"instance_fraction": 0.3}).
    multimodal: the share of images in the multimodal subset (default: the recipe's, 0 = none)."""
    check_options(SynthOptions(images=images, size=size, name=name, workers=workers, force=force))
    if multimodal is not None and not 0 <= multimodal <= 1:
        raise SgtoolError(f"The multimodal share must be between 0 and 1, not {multimodal}.", "Try 0.5.")
    recipe = synth_multimodal.with_multimodal(load_recipe("synth"), multimodal)
    if confusion:
        recipe["confusion"] = {**(recipe.get("confusion") or {}), **confusion}
    spec = load_spec(size, recipe)
    workers = workers or os.cpu_count() or 1
    parameters = {"images": images, "size": size, "seed": seed, **({"confusion": confusion} if confusion else {})}
    if synth_multimodal.enabled(recipe):
        parameters["multimodal"] = float(recipe["multimodal"]["fraction"])

    def build(staging: Path) -> Staged:
        reporter.info(f"Rendering {images} synthetic images ({size}x{size}) with seed {seed} ...")
        images_dir = staging / "images"
        images_dir.mkdir()
        results = render_dataset(spec, images, seed, images_dir, workers, reporter)
        graphs = assemble(results, size, recipe["splits"])
        vocab = Vocabulary(spec.classes, spec.predicates)
        return Staged(graphs, vocab, {"image_size": size})

    return save_prepared(ws, name, "synth", parameters, build, GroupRule.from_dict(recipe.get("predicate_groups")), force)


@dataclass
class SynthOptions:
    """`sgtool prepare synth`'s options."""

    images: int = option(2000, "Number of images to render.", min=1, max=MAX_IMAGES)
    size: int = option(128, "Image side in pixels (shapes and links need room).", min=MIN_SIZE, max=MAX_SIZE)
    name: str = option("synth", "Dataset name in the workspace.")
    workers: int = option(0, "Processes that render images (0 = one per CPU core).", min=0)
    force: bool = option(False, "Replace a dataset of this name prepared with other parameters.")


def _prepare_synth_options(ws: Workspace, options: SynthOptions, seed: int, reporter: Reporter) -> PreparedDataset:
    return prepare_synth(ws, images=options.images, size=options.size, seed=seed, name=options.name,
                         workers=options.workers, force=options.force, reporter=reporter)


register_format(DatasetFormat(
    "synth", "The embedded synthetic scene-graph dataset: shapes, colours, drawn links; nothing downloaded.",
    SynthOptions, _prepare_synth_options))
