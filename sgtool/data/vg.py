"""Visual Genome for SGG (VG150 and any other vocabulary recipe).

Two sources, picked by what the folder holds:

* the community files — `VG-SGG-with-attri.h5` or `VG-SGG.h5`, the matching
  `VG-SGG-dicts(-with-attri).json` and `image_data.json` — VG150's or any other dataset in that
  layout. image_data.json has one record per h5 image, in order; VG150's has 108,077 for the h5's
  108,073, and the recipe's four corrupted ids are removed only when that lines the two up. They are validated
  (layout, offsets, label ranges against the dicts file, box scale); the vocabulary is the dicts
  file's, of any size; the standard train/test split is kept.
* raw Visual Genome JSON — `objects.json`, `relationships.json`, `image_data.json` (optional
  `object_alias.txt`, `relationship_alias.txt`): streamed one image at a time with ijson, names
  normalised onto the recipe's vocabulary, small boxes dropped, same-label boxes with IoU >= 0.9
  merged, a 70/30 train/test split in image order.

Both then get the community loader's filters (recipe defaults, overridable) and val, written as
split 1: by default the first N filtered train images, as the community loader takes its val
(so train is the community's train set); `val_pick="random"` draws N with the seed instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from sgtool.data import vg_raw
from sgtool.config import option
from sgtool.data.formats import DatasetFormat, register_format
from sgtool.data.graphs import SceneGraphs
from sgtool.data.normalize import VAL_PICKS, carve_val, default_val_count, link_images, split_counts
from sgtool.data.prepared import PreparedDataset, Staged, check_labels_in_vocabulary, save_prepared
from sgtool.data.recipes import load_recipe
from sgtool.data.sgg_h5 import (
    BOX_SCALE, _CORE_DATASETS, check_boxes_finite, graphs_from_arrays, read_image_data, read_json,
    vocabulary_from_dicts,
)
from sgtool.errors import SgtoolError
from sgtool.flags import flag
from sgtool.geometry import boxes_overlap, clip_boxes
from sgtool.priors import GroupRule
from sgtool.workspace import Workspace

H5_PAIRS = (("VG-SGG-with-attri.h5", "VG-SGG-dicts-with-attri.json"), ("VG-SGG.h5", "VG-SGG-dicts.json"))
RAW_FILES = ("objects.json", "relationships.json", "image_data.json")
IMAGE_FOLDERS = ("images", "VG_100K", "VG_100K_2")
_BOX_SCALE_SLACK = 1.02


def detect_source(source: Path) -> tuple[str, tuple[Path, ...]]:
    """('h5', (h5, dicts, image_data)) or ('raw', (objects, relationships, image_data))."""
    if not source.is_dir():
        raise SgtoolError(f"The Visual Genome source folder {source} does not exist.", "Pass the folder holding the VG files.")
    for h5_name, dicts_name in H5_PAIRS:
        if (source / h5_name).is_file():
            for needed in (dicts_name, "image_data.json"):
                if not (source / needed).is_file():
                    raise SgtoolError(f"{source / h5_name} needs {needed} beside it, and it is missing.",
                                      "Download the matching dicts and image_data files of the community release.")
            return "h5", (source / h5_name, source / dicts_name, source / "image_data.json")
    if all((source / name).is_file() for name in RAW_FILES):
        return "raw", tuple(source / name for name in RAW_FILES)
    raise SgtoolError(
        f"{source} holds neither the community files (VG-SGG-with-attri.h5 or VG-SGG.h5 with its dicts and "
        "image_data.json) nor raw Visual Genome JSON (objects.json, relationships.json, image_data.json).",
        f"Point {flag('source')} at the folder of one of the two releases.")


# ---------------------------------------------------------------- community h5

def read_community_h5(path: Path) -> dict[str, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            missing = [name for name in _CORE_DATASETS if name not in h5]
            if missing:
                raise SgtoolError(f"{path} lacks the dataset(s) {', '.join(missing)}.",
                                  "Is this the community VG-SGG h5 file? Download it again.")
            return {name: h5[name][()] for name in _CORE_DATASETS}
    except (OSError, KeyError, ValueError) as exc:
        raise SgtoolError(f"{path} cannot be read as HDF5 ({exc}).", "The file may be truncated; download it again.") from exc


def check_box_scale(data: dict[str, np.ndarray], path: Path) -> None:
    """boxes_1024 are [cx, cy, w, h] with the longest side at 1024: nothing may reach far beyond it."""
    check_boxes_finite(data["boxes_1024"], path)
    boxes = data["boxes_1024"].astype(np.float64)
    if not len(boxes):
        return
    far = (boxes[:, :2] + boxes[:, 2:] / 2).max()
    if (boxes[:, 2:] < 0).any() or (boxes[:, :2] - boxes[:, 2:] / 2).min() < -2:
        raise SgtoolError(f"{path}: boxes_1024 holds negative widths or boxes left of / above the image.",
                          "The file is not in the community [cx, cy, w, h] layout.")
    if far > BOX_SCALE * _BOX_SCALE_SLACK:
        raise SgtoolError(f"{path}: boxes_1024 reaches {far:.0f}, beyond the 1024 scale.",
                          "Boxes must be [cx, cy, w, h] with each image's longest side at 1024, not in pixels.")


def reconcile_image_data(table: tuple[np.ndarray, ...], corrupted: set[int], num_images: int, h5_path: Path,
                         image_data: Path) -> tuple[tuple[np.ndarray, ...], int]:
    """image_data.json's records for the h5's images, and how many corrupted ids were removed.

    The recipe's corrupted ids (VG150: four images the community h5 leaves out) are removed only
    when that is what lines the records up with the h5; a file that already matches is kept whole.
    """
    if len(table[0]) == num_images:
        return table, 0
    keep = ~np.isin(table[0], list(corrupted))
    if int(keep.sum()) == num_images:
        return tuple(column[keep] for column in table), int((~keep).sum())
    without = f" ({int(keep.sum())} without the recipe's corrupted ids)" if not keep.all() else ""
    raise SgtoolError(f"{h5_path.name} has {num_images} images but {image_data.name} lists {len(table[0])}{without}.",
                      "Use the image_data.json that belongs to this h5 file (one record per h5 image, in order).")


def graphs_from_h5(h5_path: Path, dicts_path: Path, image_data: Path, corrupted: set[int]):
    vocab = vocabulary_from_dicts(read_json(dicts_path), dicts_path)
    data = read_community_h5(h5_path)
    (ids, widths, heights), removed = reconcile_image_data(read_image_data(image_data)[:3], corrupted,
                                                           len(data["split"]), h5_path, image_data)
    check_box_scale(data, h5_path)
    graphs = graphs_from_arrays(data, widths, heights, h5_path)
    graphs.image_ids = ids
    try:
        check_labels_in_vocabulary(graphs, vocab, h5_path)
    except SgtoolError as exc:
        raise SgtoolError(f"{dicts_path} does not match {h5_path.name}: {exc.message.split(': ', 1)[-1]}",
                          "Use the dicts file that belongs to this h5 (VG-SGG-dicts-with-attri.json for VG-SGG-with-attri.h5).") from exc
    graphs.split = np.where(graphs.split == 2, 2, 0).astype(np.int8)  # community: 0 train, 2 test
    return graphs, vocab, removed


def clip_h5_boxes(graphs: SceneGraphs) -> int:
    """Clip decoded boxes to their image; count boxes beyond it by more than the 1024 rounding."""
    image = graphs.image_of_box()
    w, h = graphs.widths[image].astype(np.float32), graphs.heights[image].astype(np.float32)
    graphs.boxes, moved = clip_boxes(graphs.boxes, w, h, tolerance=np.maximum(w, h) / BOX_SCALE)
    return moved


# ---------------------------------------------------------------- filters

def apply_filters(graphs: SceneGraphs, filters: dict, val: int | None, recipe_val: int, seed: int,
                  val_pick: str = "first") -> tuple[SceneGraphs, dict]:
    """The community loader's filters, then val carved from train (non-overlap applies to train only).

    val_pick "first": the first N filtered train images, as the community loader takes them (so
    train is its train set); "random": N drawn with the seed."""
    notes: dict = {"filters": dict(filters), "val_pick": val_pick}
    if filters.get("filter_empty_rels"):
        empty = graphs.relations.counts() == 0
        notes["images_dropped_without_relations"] = split_counts(graphs.split, empty.astype(np.int64))
        graphs = graphs.select(~empty)
    count = default_val_count(graphs.split, recipe_val) if val is None else val
    if count:
        # the community loader takes val among the train images that have boxes
        graphs.split = carve_val(graphs.split, count, seed, "this Visual Genome source", val_pick,
                                 eligible=graphs.box_counts() > 0)
    notes["val_images"] = count
    if filters.get("filter_duplicate_rels"):
        graphs, notes["relations_dropped_duplicate_pairs"] = filter_duplicate_rels(graphs, seed)
    if filters.get("filter_non_overlap"):
        graphs, notes["relations_dropped_non_overlap"], notes["images_dropped_non_overlap"] = drop_non_overlap(graphs)
    return graphs, notes


def _keep_relations(graphs: SceneGraphs, keep: np.ndarray) -> SceneGraphs:
    from sgtool.data.graphs import RelationSet, offsets_from_counts

    rel_image = np.repeat(np.arange(graphs.num_images), graphs.relations.counts())
    graphs.relations = RelationSet(graphs.relations.pairs[keep], graphs.relations.predicates[keep],
                                   offsets_from_counts(np.bincount(rel_image[keep], minlength=graphs.num_images)))
    return graphs


def filter_duplicate_rels(graphs: SceneGraphs, seed: int) -> tuple[SceneGraphs, int]:
    """Train images: where an ordered pair has several predicates, keep one picked with the seed."""
    rels = graphs.relations
    rel_image = np.repeat(np.arange(graphs.num_images), rels.counts())
    order = np.random.default_rng(seed).permutation(len(rels))
    _, first = np.unique(rels.pairs[order], axis=0, return_index=True)
    keep = np.zeros(len(rels), dtype=bool)
    keep[order[first]] = True
    keep |= graphs.split[rel_image] != 0
    return _keep_relations(graphs, keep), int((~keep).sum())


def drop_non_overlap(graphs: SceneGraphs) -> tuple[SceneGraphs, int, int]:
    rels = graphs.relations
    rel_image = np.repeat(np.arange(graphs.num_images), rels.counts())
    overlap = boxes_overlap(graphs.boxes[rels.pairs[:, 0]], graphs.boxes[rels.pairs[:, 1]])
    keep = overlap | (graphs.split[rel_image] != 0)
    had = rels.counts() > 0
    graphs = _keep_relations(graphs, keep)
    emptied = had & (graphs.relations.counts() == 0)
    return graphs.select(~emptied), int((~keep).sum()), int(emptied.sum())


# ---------------------------------------------------------------- the recipe

def find_image_files(source: Path, image_ids: np.ndarray) -> tuple[list[Path | None], list[str | None]]:
    folders = [source / f for f in IMAGE_FOLDERS if (source / f).is_dir()]
    if not folders:
        return [None] * len(image_ids), [None] * len(image_ids)
    sources: list[Path | None] = []
    for image_id in image_ids:
        found = next((f / f"{image_id}.jpg" for f in folders if (f / f"{image_id}.jpg").is_file()), None)
        sources.append(found)
    return sources, [f"images/{i}.jpg" if p is not None else None for i, p in zip(image_ids, sources)]


def build_vg(source: Path, recipe: dict, filters: dict, val: int | None, seed: int, reporter=None,
             val_pick: str = "first") -> Staged:
    kind, files = detect_source(source)
    corrupted = {int(i) for i in recipe.get("corrupted_images", [])}
    if kind == "h5":
        graphs, vocab, removed = graphs_from_h5(*files, corrupted)
        notes = {"source": "vg-community-h5", "source_files": [f.name for f in files], "boxes_clipped": clip_h5_boxes(graphs),
                 "image_records_removed_corrupted": removed}
    else:
        graphs, vocab, notes = vg_raw.read_raw(source, files, recipe, corrupted, reporter)
    graphs, filter_notes = apply_filters(graphs, filters, val, int(recipe.get("val_images", 5000)), seed, val_pick)
    notes.update(filter_notes)
    return Staged(graphs, vocab, notes)


def prepare_vg(ws: Workspace, source: Path, recipe: str = "vg150", name: str | None = None, val: int | None = None,
               seed: int = 0, filters: dict | None = None, force: bool = False, reporter=None,
               val_pick: str | None = None) -> PreparedDataset:
    spec = load_recipe(recipe)
    source = Path(source).expanduser().resolve()
    chosen = {**spec.get("filters", {}), **(filters or {})}
    val_pick = val_pick or str(spec.get("val_pick", "first"))
    if val_pick not in VAL_PICKS:
        raise SgtoolError(f"Unknown validation pick '{val_pick}'.", f"Use one of: {', '.join(VAL_PICKS)}.")
    parameters = {"source": str(source), "recipe": recipe, "val": val, "val_pick": val_pick, "seed": seed,
                  "filters": chosen}

    def build(staging: Path) -> Staged:
        staged = build_vg(source, spec, chosen, val, seed, reporter, val_pick)
        sources, targets = find_image_files(source, staged.graphs.image_ids)
        staged.graphs.files = link_images(staging, sources, targets)
        staged.notes["images_missing"] = int(sum(p is None for p in sources))
        return staged

    return save_prepared(ws, name if name is not None else recipe, f"vg:{recipe}", parameters, build,
                         GroupRule.from_dict(spec.get("predicate_groups")), force)


@dataclass
class VGOptions:
    """`sgtool prepare vg`'s options (None: the recipe's choice)."""

    source: Path = option(None, "Folder with VG-SGG(-with-attri).h5 + dicts + image_data.json, or raw VG "
                                "objects.json + relationships.json + image_data.json.", required=True)
    split: str = option("vg150", "Recipe in data_recipes/ (vocabulary, filters, split rules).")
    name: Optional[str] = option(None, "Dataset name in the workspace (default: the recipe name).")
    val: Optional[int] = option(None, "Validation images taken from train (default: the recipe's, 5000).", min=0)
    val_pick: Optional[str] = option(None, "Which train images become val: the first N, as the community loader "
                                           "(default), or N at random with the seed.", choices=VAL_PICKS)
    filter_empty: Optional[bool] = option(None, "Drop images without relations (community default: drop).",
                                          spelling="--filter-empty/--keep-empty")
    filter_duplicates: Optional[bool] = option(None, "Train: keep one predicate per ordered pair, picked with the seed.",
                                               spelling="--filter-duplicates/--keep-duplicate-rels")
    filter_non_overlap: Optional[bool] = option(None, "Train: drop relations whose boxes do not overlap.",
                                                spelling="--filter-non-overlap/--keep-non-overlap")
    force: bool = option(False, "Replace a dataset of this name prepared with other parameters.")


def _prepare_vg_options(ws: Workspace, options: VGOptions, seed: int, reporter: Any) -> PreparedDataset:
    filters = {"filter_empty_rels": options.filter_empty, "filter_duplicate_rels": options.filter_duplicates,
               "filter_non_overlap": options.filter_non_overlap}
    return prepare_vg(ws, options.source, recipe=options.split, name=options.name, val=options.val, seed=seed,
                      filters={k: v for k, v in filters.items() if v is not None}, force=options.force,
                      reporter=reporter, val_pick=options.val_pick)


register_format(DatasetFormat(
    "vg", "Visual Genome (VG150 or another recipe) from the community h5 files or the raw VG JSON.",
    VGOptions, _prepare_vg_options))
