"""Visual Relationship Detection (Lu et al. 2016) from its JSON release.

Source folder: `annotations_train.json`, `annotations_test.json` (file name -> list of
`{"predicate": p, "subject": {"category": c, "bbox": [ymin, ymax, xmin, xmax]}, "object": {...}}`,
0-based indices), `objects.json`, `predicates.json` (name lists); optional
`train_image_metadata.json` / `test_image_metadata.json` (file name -> {width, height}) and the
images (`sg_dataset/sg_train_images`, `sg_train_images`, `images/train`, ... and the test twins).

The same (box, category) in several relations becomes one object; several predicates per pair
are kept. Exact duplicate triplets are merged in the training images (the priors count each once)
and kept in the test images, as the literature's test set and docs/evaluation.md keep every annotated
relation; keep_duplicates keeps them everywhere, merge_test_duplicates merges them in test too. The official split is
kept exactly (4,000 train / 1,000 test); val is 0 images unless `val` > 0, then that many
training images chosen with the seed become split 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sgtool import atomic
from sgtool.config import option
from sgtool.data.formats import DatasetFormat, register_format
from sgtool.data.normalize import (
    FlatGraphs, assemble, carve_val, clean_relations, drop_boxes, drop_relations, first_occurrences,
    link_images, split_counts,
)
from sgtool.data.prepared import PreparedDataset, Staged, save_prepared
from sgtool.data.recipes import load_recipe
from sgtool.data.sgg_h5 import Vocabulary, read_json
from sgtool.errors import SgtoolError
from sgtool.flags import flag
from sgtool.geometry import box_sides, clip_boxes
from sgtool.priors import GroupRule
from sgtool.workspace import Workspace

REQUIRED = ("annotations_train.json", "annotations_test.json", "objects.json", "predicates.json")
SPLITS = (("train", 0), ("test", 2))
IMAGE_FOLDERS = {
    "train": ("sg_dataset/sg_train_images", "sg_train_images", "images/train", "train_images", "train"),
    "test": ("sg_dataset/sg_test_images", "sg_test_images", "images/test", "test_images", "test"),
}
_HINT = "VRD annotations are {file name: [{predicate, subject: {category, bbox}, object: {category, bbox}}]}."


def check_source(source: Path) -> None:
    if not source.is_dir():
        raise SgtoolError(f"The VRD source folder {source} does not exist.", "Pass the folder holding annotations_train.json.")
    missing = [name for name in REQUIRED if not (source / name).is_file()]
    if len(missing) == len(REQUIRED):
        raise SgtoolError(f"{source} holds none of the VRD files ({', '.join(REQUIRED)}).",
                          f"Point {flag('source')} at the folder of the VRD JSON release.")
    if missing:
        raise SgtoolError(f"{source} lacks {', '.join(missing)}.", "The VRD release needs all four JSON files.")


def read_names(path: Path) -> list[str]:
    names = read_json(path)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise SgtoolError(f"{path} must be a non-empty JSON list of names.", 'Example: ["person", "sky", ...]')
    if len(set(names)) != len(names):
        raise SgtoolError(f"{path} lists a name twice.", "Each class needs a unique name.")
    return names


# ---------------------------------------------------------------- annotations -> flat rows

def _relation_row(image: int, rel: dict) -> list:
    s, o = rel["subject"], rel["object"]
    return [image, s["category"], *s["bbox"], o["category"], *o["bbox"], rel["predicate"]]


def flatten(annotations: dict, first_image: int, path: Path, vocab: Vocabulary) -> np.ndarray:
    """(M, 12) float64 rows: image, s_cat, s_ymin, s_ymax, s_xmin, s_xmax, o_cat, o_..., predicate."""
    try:
        rows = [_relation_row(first_image + i, rel) for i, rels in enumerate(annotations.values()) for rel in rels]
        table = np.array(rows, dtype=np.float64).reshape(-1, 12)
    except (KeyError, TypeError, ValueError, AttributeError):
        table = None
    if table is None or not _rows_valid(table, vocab):
        _diagnose(annotations, path, vocab)
    return table


def _rows_valid(table: np.ndarray, vocab: Vocabulary) -> bool:
    cats, preds = table[:, [1, 6]], table[:, 11]
    integral = np.all(table[:, [1, 6, 11]] == np.round(table[:, [1, 6, 11]]))
    return bool(integral and np.isfinite(table).all() and (cats >= 0).all() and (cats < len(vocab.objects)).all()
                and (preds >= 0).all() and (preds < len(vocab.predicates)).all())


def _diagnose(annotations: dict, path: Path, vocab: Vocabulary) -> None:
    """Find the first bad relation and say where it is (slow path, only on bad input)."""
    for name, rels in annotations.items():
        if not isinstance(rels, list):
            raise SgtoolError(f"{path}: image '{name}' maps to {type(rels).__name__}, not a list of relations.", _HINT)
        for k, rel in enumerate(rels):
            where = f"{path}: image '{name}', relation {k}"
            try:
                row = np.array(_relation_row(0, rel), dtype=np.float64)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise SgtoolError(f"{where} is malformed ({exc!r}).", _HINT) from exc
            if row.shape != (12,) or not np.isfinite(row).all():
                raise SgtoolError(f"{where} needs 4 finite numbers per bbox.", _HINT)
            for role, value, size in (("subject category", row[1], len(vocab.objects)),
                                      ("object category", row[6], len(vocab.objects)),
                                      ("predicate", row[11], len(vocab.predicates))):
                if value != round(value) or not 0 <= value < size:
                    raise SgtoolError(f"{where} has {role} {value:g}, outside 0..{size - 1}.",
                                      "Indices are 0-based into objects.json / predicates.json.")
    raise SgtoolError(f"{path} could not be read as VRD annotations.", _HINT)


def objects_and_relations(table: np.ndarray) -> tuple[FlatGraphs, int]:
    """One object per distinct (image, category, box); relations by global object row."""
    ends = np.concatenate([table[:, 0:6], np.column_stack([table[:, 0], table[:, 6:11]])])
    uniq, first, inverse = np.unique(ends, axis=0, return_index=True, return_inverse=True)
    order = np.lexsort((first, uniq[:, 0]))  # by image, then first appearance
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    uniq, inverse = uniq[order], rank[inverse.reshape(-1)]
    m = len(table)
    boxes = uniq[:, [4, 2, 5, 3]]  # [ymin, ymax, xmin, xmax] -> [xmin, ymin, xmax, ymax]
    flat = FlatGraphs(uniq[:, 0].astype(np.int64), boxes, uniq[:, 1].astype(np.int64) + 1,
                      table[:, 0].astype(np.int64), np.column_stack([inverse[:m], inverse[m:]]),
                      table[:, 11].astype(np.int64) + 1)
    return flat, len(uniq)


# ---------------------------------------------------------------- sizes and images

def read_metadata(source: Path) -> dict[str, tuple[int, int]]:
    sizes: dict[str, tuple[int, int]] = {}
    for path in sorted(source.glob("*image_metadata*.json")):
        payload = read_json(path)
        if not isinstance(payload, dict):
            raise SgtoolError(f"{path} must map image file names to {{width, height}}.", "Or remove the file.")
        try:
            sizes.update({name: (int(v["width"]), int(v["height"])) for name, v in payload.items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise SgtoolError(f"{path} has a record without a valid width and height ({exc!r}).", "Or remove the file.") from exc
    return sizes


def find_images(source: Path, split: str, names: list[str]) -> list[Path | None]:
    for folder in IMAGE_FOLDERS[split]:
        base = source / folder
        if base.is_dir():
            return [base / n if (base / n).is_file() else None for n in names]
    return [None] * len(names)


def image_sizes(names: list[str], metadata: dict, images: list[Path | None], flat: FlatGraphs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Width, height and where each came from: 0 metadata, 1 image file, 2 box extent, 3 unknown (1 x 1),
    4 metadata enlarged to the box extent (the annotations are the benchmark; a metadata file that
    its boxes overrun is wrong, as for one real VRD training image listed at 500 x 374)."""
    n = len(names)
    extent = np.zeros((n, 2))
    np.maximum.at(extent, flat.box_image, flat.boxes[:, 2:])
    has_boxes = np.bincount(flat.box_image, minlength=n) > 0
    sizes = np.ones((n, 2), np.int64)
    origin = np.where(has_boxes, 2, 3)
    sizes[has_boxes] = np.maximum(np.ceil(extent[has_boxes]), 1).astype(np.int64)
    for i, name in enumerate(names):
        if name in metadata:
            sizes[i], origin[i] = metadata[name], 0
        elif images[i] is not None:
            sizes[i], origin[i] = _size_of_image(images[i]), 1
    overrun = (origin == 0) & has_boxes & (np.ceil(extent) > sizes).any(axis=1)
    sizes[overrun] = np.maximum(sizes[overrun], np.ceil(extent[overrun]).astype(np.int64))
    origin[overrun] = 4
    if (sizes < 1).any():
        raise SgtoolError("An image metadata file gives a zero or negative size.", "Widths and heights must be positive.")
    return sizes[:, 0], sizes[:, 1], origin


def _size_of_image(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise SgtoolError(f"{path} cannot be read as an image ({exc}).", "Replace or remove the file.") from exc


# ---------------------------------------------------------------- the recipe

def _merge_duplicates(flat: FlatGraphs, split: np.ndarray, keep_duplicates: bool, merge_test: bool) -> FlatGraphs:
    """Exact duplicate triplets merged (the first kept) in train, and in test only with merge_test."""
    if keep_duplicates:
        return flat
    keep = first_occurrences(np.column_stack([flat.pairs, flat.predicates]))
    if not merge_test:
        keep |= split[flat.rel_image] == dict(SPLITS)["test"]
    return drop_relations(flat, keep)


def read_vrd(source: Path, keep_duplicates: bool, val: int, seed: int,
             merge_test_duplicates: bool = False) -> tuple[Staged, list[Path | None], list[str], np.ndarray]:
    check_source(source)
    vocab = Vocabulary(read_names(source / "objects.json"), read_names(source / "predicates.json"))
    names, split, tables = [], [], []
    for split_name, code in SPLITS:
        path = source / f"annotations_{split_name}.json"
        annotations = read_json(path)
        if not isinstance(annotations, dict):
            raise SgtoolError(f"{path} must map image file names to lists of relations.", _HINT)
        tables.append(flatten(annotations, len(names), path, vocab))
        names += list(annotations)
        split += [code] * len(annotations)
    table = np.concatenate(tables)
    split = np.array(split, dtype=np.int8)
    notes = _annotation_counts(table, split)
    flat, num_objects = objects_and_relations(table)
    images = [p for s, code in SPLITS for p in find_images(source, s, [n for n, c in zip(names, split) if c == code])]
    widths, heights, origin = image_sizes(names, read_metadata(source), images, flat)
    flat, box_notes = _clean_boxes(flat, widths, heights)
    flat, rel_notes = clean_relations(flat, dedupe=False, drop_self=False)
    kept_before = split_counts(split, np.bincount(flat.rel_image, minlength=len(names)))
    flat = _merge_duplicates(flat, split, keep_duplicates, merge_test_duplicates)
    kept_after = split_counts(split, np.bincount(flat.rel_image, minlength=len(names)))
    source_split = split.copy()
    if val:
        split = carve_val(split, val, seed, str(source))
    notes.update(box_notes)
    notes["duplicates_merged"] = {k: int(v - kept_after[k]) for k, v in kept_before.items()}
    notes["image_sizes"] = {k: int((origin == i).sum()) for i, k in enumerate(("metadata", "image_file", "box_extent", "unknown", "metadata_enlarged_to_boxes"))}
    notes["sizes_from_boxes"] = bool((origin >= 2).any())
    notes["self_relations"] = rel_notes["self_relations"]
    notes["images_without_relations"] = split_counts(split, (np.bincount(flat.rel_image, minlength=len(names)) == 0).astype(np.int64))
    notes["source_objects"] = num_objects
    graphs = assemble(flat, np.arange(len(names)), widths, heights, split)
    return Staged(graphs, vocab, notes), images, names, source_split


def _annotation_counts(table: np.ndarray, split: np.ndarray) -> dict:
    per_image = np.bincount(table[:, 0].astype(np.int64), minlength=len(split))
    distinct = np.bincount(table[first_occurrences(table)][:, 0].astype(np.int64), minlength=len(split))
    return {"source": "vrd", "annotated_relations": split_counts(split, per_image),
            "distinct_triplets": split_counts(split, distinct)}


def _clean_boxes(flat: FlatGraphs, widths: np.ndarray, heights: np.ndarray) -> tuple[FlatGraphs, dict]:
    boxes, clipped = clip_boxes(flat.boxes, widths[flat.box_image], heights[flat.box_image])
    flat.boxes = boxes
    positive = box_sides(boxes) > 0
    flat, lost = drop_boxes(flat, positive)
    return flat, {"boxes_clipped": clipped, "boxes_dropped_zero_area": int((~positive).sum()),
                  "relations_dropped_zero_area": lost}


def prepare_vrd(ws: Workspace, source: Path, name: str = "vrd", keep_duplicates: bool = False,
                val: int = 0, seed: int = 0, force: bool = False, merge_test_duplicates: bool = False) -> PreparedDataset:
    source = Path(source).expanduser().resolve()
    parameters = {"source": str(source), "keep_duplicates": keep_duplicates, "val": val, "seed": seed,
                  "merge_test_duplicates": merge_test_duplicates}

    def build(staging: Path) -> Staged:
        staged, images, names, source_split = read_vrd(source, keep_duplicates, val, seed, merge_test_duplicates)
        folders = ["train" if c == 0 else "test" for c in source_split]
        targets = [f"images/{f}/{n}" for f, n in zip(folders, names)]
        staged.graphs.files = link_images(staging, images, targets)
        staged.notes["images_missing"] = int(sum(p is None for p in images))
        staged.notes["image_names"] = "source_images.json"
        atomic.write_json(staging / "source_images.json",
                          [{"image_id": i, "name": n, "source_split": f} for i, (n, f) in enumerate(zip(names, folders))])
        return staged

    groups = GroupRule.from_dict(load_recipe("vrd").get("predicate_groups", {"method": "thirds"}))
    return save_prepared(ws, name, "vrd", parameters, build, groups, force)


@dataclass
class VRDOptions:
    """`sgtool prepare vrd`'s options."""

    source: Path = option(None, "Folder with annotations_train.json, annotations_test.json, objects.json, "
                                "predicates.json.", required=True)
    name: str = option("vrd", "Dataset name in the workspace.")
    keep_duplicates: bool = option(False, "Keep exact duplicate triplets in train too (by default they are merged in "
                                          "train and kept in test).")
    merge_test_duplicates: bool = option(False, "Merge exact duplicate triplets in test too (the literature keeps them).")
    val: int = option(0, "Validation images taken from the 4,000 train images with the seed.", min=0)
    force: bool = option(False, "Replace a dataset of this name prepared with other parameters.")


def _prepare_vrd_options(ws: Workspace, options: VRDOptions, seed: int, reporter: Any) -> PreparedDataset:
    return prepare_vrd(ws, options.source, name=options.name, keep_duplicates=options.keep_duplicates,
                       val=options.val, seed=seed, force=options.force,
                       merge_test_duplicates=options.merge_test_duplicates)


register_format(DatasetFormat("vrd", "Visual Relationship Detection (Lu et al. 2016), official 4,000 / 1,000 split.",
                              VRDOptions, _prepare_vrd_options))
