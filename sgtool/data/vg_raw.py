"""Raw Visual Genome JSON -> a vocabulary recipe (VG150 ...), streamed one image at a time.

objects.json and relationships.json are lists of per-image records (`image_id`, `objects` /
`relationships`) in the order of image_data.json. ijson yields one record at a time, so memory
holds one image's JSON plus compact flat arrays (array.array) of what is kept; all the
filtering after the parse is vectorised numpy over those arrays.

Per image: objects whose normalised first name is in the vocabulary are kept; a relationship's
subject/object is matched by object_id to the image's objects, and one that objects.json lacks
is taken from the relationship itself. Relations with an endpoint or predicate outside the
vocabulary are dropped (counted).
"""
from __future__ import annotations

from array import array
from pathlib import Path

import numpy as np

from sgtool.data.graphs import SceneGraphs
from sgtool.data.normalize import (
    FlatGraphs, NameMapper, assemble, clean_relations, drop_boxes, merge_same_label_boxes,
    read_alias_file,
)
from sgtool.data.sgg_h5 import Vocabulary, read_image_data
from sgtool.errors import SgtoolError
from sgtool.geometry import box_sides, clip_boxes, xywh_to_xyxy


class _Stream:
    """Records of one big JSON list, consumed in image_data.json order."""

    def __init__(self, path: Path, key: str, position: dict[int, int], skip: set[int]) -> None:
        import ijson

        self.path, self.key, self.position, self.skip = path, key, position, skip
        self.handle = open(path, "rb")
        self.items = ijson.items(self.handle, "item", use_float=True)
        self.count = 0
        self.pending = self._next()

    def _next(self) -> dict | None:
        import ijson

        try:
            record = next(self.items, None)
        except ijson.JSONError as exc:
            raise SgtoolError(f"{self.path} is not valid JSON near record {self.count} ({exc}).",
                              "The file may be truncated; download it again.") from exc
        if record is not None and not isinstance(record, dict):
            raise SgtoolError(f"{self.path}: record {self.count} is not an object.", "Each record is {image_id, ...}.")
        return record

    def take(self, index: int) -> list:
        """The items of image `index` (an empty list when the file has no record for it)."""
        while self.pending is not None and self.pending.get("image_id", self.pending.get("id")) in self.skip:
            self.count += 1
            self.pending = self._next()
        if self.pending is None:
            return []
        image_id = self.pending.get("image_id", self.pending.get("id"))
        where = self.position.get(image_id)
        if where is None or where < index:
            raise SgtoolError(f"{self.path}: record {self.count} (image {image_id}) is not in image_data.json, "
                              "or not in its order.", "Use the objects/relationships files of the same VG release.")
        if where > index:
            return []
        items = self.pending.get(self.key) or []
        self.count += 1
        self.pending = self._next()
        return items

    def finish(self) -> None:
        """After the last image: any record left over was out of order or unknown."""
        self.take(len(self.position))

    def close(self) -> None:
        self.handle.close()


class _Collector:
    """Flat, compact columns of the kept boxes and relations."""

    def __init__(self) -> None:
        self.box_image, self.labels = array("q"), array("q")
        self.xywh = array("d")
        self.rel_image, self.rel_pairs, self.rel_predicates = array("q"), array("q"), array("q")
        self.dropped_objects = 0
        self.from_relationships = 0

    def add_box(self, image: int, label: int, thing: dict) -> int:
        self.box_image.append(image)
        self.labels.append(label)
        self.xywh.extend((float(thing["x"]), float(thing["y"]), float(thing["w"]), float(thing["h"])))
        return len(self.labels) - 1

    def flat(self) -> FlatGraphs:
        xywh = np.frombuffer(self.xywh, dtype=np.float64).reshape(-1, 4)
        boxes = xywh_to_xyxy(xywh)
        return FlatGraphs(np.frombuffer(self.box_image, np.int64).copy(), boxes, np.frombuffer(self.labels, np.int64).copy(),
                          np.frombuffer(self.rel_image, np.int64).copy(),
                          np.frombuffer(self.rel_pairs, np.int64).reshape(-1, 2).copy(),
                          np.frombuffer(self.rel_predicates, np.int64).copy())


def _first_name(thing: dict) -> object:
    names = thing.get("names")
    if isinstance(names, list) and names:
        return names[0]
    return thing.get("name", "")


def _add_image(col: _Collector, image: int, objects: list, relationships: list,
               object_label: NameMapper, predicate_label: NameMapper) -> None:
    local: dict[object, int] = {}
    for obj in objects:
        label = object_label(_first_name(obj))
        key = obj.get("object_id", obj.get("id"))
        if label:
            local[key] = col.add_box(image, label, obj)
        else:
            local[key] = -1
            col.dropped_objects += 1
    for rel in relationships:
        ends = []
        for role in ("subject", "object"):
            thing = rel[role]
            key = thing.get("object_id", thing.get("id"))
            if key not in local:
                label = object_label(_first_name(thing))
                local[key] = col.add_box(image, label, thing) if label else -1
                col.from_relationships += 1
            ends.append(local[key])
        col.rel_image.append(image)
        col.rel_pairs.extend(ends)
        col.rel_predicates.append(predicate_label(rel.get("predicate", "")))


def parse_streams(files: tuple[Path, ...], image_ids: np.ndarray, mappers: tuple[NameMapper, NameMapper],
                  skip: set[int], reporter=None) -> _Collector:
    position = {int(i): k for k, i in enumerate(image_ids)}
    objects = _Stream(files[0], "objects", position, skip)
    relationships = _Stream(files[1], "relationships", position, skip)
    col = _Collector()
    indices = range(len(image_ids))
    if reporter is not None:
        indices = reporter.track(indices, total=len(image_ids), description="Reading Visual Genome")
    try:
        for index in indices:
            try:
                _add_image(col, index, objects.take(index), relationships.take(index), *mappers)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise SgtoolError(f"{files[0].parent}: image {image_ids[index]} has a malformed object or relationship ({exc!r}).",
                                  "Objects need x, y, w, h and a name; relationships need subject, object, predicate.") from exc
        objects.finish()
        relationships.finish()
    finally:
        objects.close()
        relationships.close()
    return col


def _mappers(source: Path, recipe: dict) -> tuple[NameMapper, NameMapper, Vocabulary]:
    vocab = Vocabulary(list(recipe["objects"]), list(recipe["predicates"]))
    norm = recipe.get("normalize", {})
    obj_alias, pred_alias = dict(norm.get("object_aliases", {})), dict(norm.get("predicate_aliases", {}))
    if (source / "object_alias.txt").is_file():
        obj_alias = {**read_alias_file(source / "object_alias.txt"), **obj_alias}
    if (source / "relationship_alias.txt").is_file():
        pred_alias = {**read_alias_file(source / "relationship_alias.txt"), **pred_alias}
    return (NameMapper(vocab.objects, obj_alias, bool(norm.get("plurals", True))),
            NameMapper(vocab.predicates, pred_alias, plurals=False), vocab)


def read_raw(source: Path, files: tuple[Path, ...], recipe: dict, corrupted: set[int], reporter=None
             ) -> tuple[SceneGraphs, Vocabulary, dict]:
    if "objects" not in recipe or "predicates" not in recipe:
        raise SgtoolError("This recipe has no objects/predicates vocabulary, which raw Visual Genome needs.",
                          "Add `objects:` and `predicates:` to the recipe YAML.")
    image_ids, widths, heights, _ = read_image_data(files[2], corrupted)
    object_label, predicate_label, vocab = _mappers(source, recipe)
    col = parse_streams(files, image_ids, (object_label, predicate_label), corrupted, reporter)
    flat = col.flat()
    raw_relations = len(flat.predicates)
    flat, notes = _normalise(flat, widths, heights, recipe)
    notes.update({"source": "vg-raw-json", "raw_relations": raw_relations, "objects_dropped_vocabulary": col.dropped_objects,
                  "objects_taken_from_relationships": col.from_relationships})
    del col
    split = _split_in_order(len(image_ids), recipe)
    notes["images_without_objects"] = int((np.bincount(flat.box_image, minlength=len(image_ids)) == 0).sum())
    return assemble(flat, image_ids, widths, heights, split), vocab, notes


def _normalise(flat: FlatGraphs, widths: np.ndarray, heights: np.ndarray, recipe: dict) -> tuple[FlatGraphs, dict]:
    notes: dict = {}
    flat.boxes, notes["boxes_clipped"] = clip_boxes(flat.boxes, widths[flat.box_image], heights[flat.box_image])
    small = box_sides(flat.boxes) < float(recipe.get("min_box_size", 2))
    notes["relations_dropped_vocabulary"] = int(((flat.pairs < 0).any(axis=1)).sum())
    flat, notes["relations_dropped_small_box"] = drop_boxes(flat, ~small)
    notes["boxes_dropped_small"] = int(small.sum())
    flat, notes["boxes_merged_iou"] = merge_same_label_boxes(flat, float(recipe.get("merge_iou", 0.9)))
    flat, rel_notes = clean_relations(flat, dedupe=True)
    notes["relations_dropped_vocabulary"] += rel_notes["relations_dropped_unknown"]
    notes["relations_dropped_self"] = rel_notes["relations_dropped_self"]
    notes["relations_merged_duplicates"] = rel_notes["relations_merged_duplicates"]
    return flat, notes


def _split_in_order(num_images: int, recipe: dict) -> np.ndarray:
    shares = recipe.get("splits", {"train": 0.7, "test": 0.3})
    train = int(round(num_images * float(shares.get("train", 0.7)) / (float(shares.get("train", 0.7)) + float(shares.get("test", 0.3)))))
    split = np.full(num_images, 2, dtype=np.int8)
    split[:train] = 0
    return split
