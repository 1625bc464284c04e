"""Users' own scene graphs: sgtool's custom JSON schema, or COCO-style JSON with relations.

The schema is documented in docs/custom-format.md. Both formats are read into per-image
records {file, width, height, split, boxes (xyxy), labels (names), relations (subject index,
predicate name, object index)}; every problem is reported with the record it is in.
Boxes outside the image are clipped and zero-area boxes dropped with their relations (both
counted in the manifest); a relation naming a missing object is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from sgtool.config import option
from sgtool.data.formats import DatasetFormat, register_format
from sgtool.data.normalize import (
    FlatGraphs, assemble, clean_relations, drop_boxes, link_images, split_counts,
)
from sgtool.data.prepared import PreparedDataset, Staged, save_prepared
from sgtool.data.sgg_h5 import Vocabulary, read_json
from sgtool.errors import SgtoolError
from sgtool.flags import flag
from sgtool.geometry import box_sides, clip_boxes
from sgtool.priors import GroupRule
from sgtool.workspace import Workspace

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
MAX_SIDE = 1 << 20  # pixels: far beyond any photograph, well inside every integer type used
MAX_IMAGE_ID = (1 << 63) - 1
_HINT = "See docs/custom-format.md for the schema."


@dataclass
class Record:
    file: str | None
    width: int
    height: int
    split: str | None
    boxes: list = field(default_factory=list)  # [x1, y1, x2, y2]
    labels: list = field(default_factory=list)  # names
    relations: list = field(default_factory=list)  # (subject index, predicate name, object index)
    image_id: int | None = None


def _where(index: int, record: object) -> str:
    name = record.get("file", record.get("file_name")) if isinstance(record, dict) else None
    return f"record {index}" + (f" (image '{name}')" if name else "")


def _size(value: object, what: str, where: str) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value)
            or value != int(value) or not 1 <= value <= MAX_SIDE):
        raise SgtoolError(f"{where}: {what} must be a positive whole number of pixels up to {MAX_SIDE:,}, not {value!r}.", _HINT)
    return int(value)


def _image_id(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_IMAGE_ID:
        raise SgtoolError(f"{where}: image_id must be a whole number from 0 to 2**63 - 1, not {value!r}.", _HINT)
    return value


def check_unique_image_ids(records: list[Record], source: Path) -> None:
    """Every image id names one image: records sharing one would merge their annotations."""
    ids = [r.image_id for r in records]
    given = [i is not None for i in ids]
    if any(given) and not all(given):
        k = given.index(False)
        raise SgtoolError(f"{source}: record {k}{_file_part(records[k])} has no image_id, but other records do.",
                          "Give every record an image_id, or none (then they are numbered in order).")
    first: dict[int, int] = {}
    for k, image_id in enumerate(ids):
        if image_id is not None and first.setdefault(image_id, k) != k:
            raise SgtoolError(f"{source}: records {first[image_id]} and {k} share the image_id {image_id}.",
                              "Put all of an image's objects and relations in one record, under one id.")


def _box(value: object, where: str) -> list[float]:
    if (not isinstance(value, list) or len(value) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value)):
        raise SgtoolError(f"{where}: a box must be 4 finite numbers, not {value!r}.", _HINT)
    return [float(v) for v in value]


def _split(value: object, where: str) -> str | None:
    if value is None or value in SPLIT_CODES:
        return value
    raise SgtoolError(f"{where}: split must be train, val or test, not {value!r}.", _HINT)


# ---------------------------------------------------------------- sgtool's custom schema

def parse_custom_record(index: int, raw: object) -> Record:
    where = _where(index, raw)
    if not isinstance(raw, dict):
        raise SgtoolError(f"record {index} is not a JSON object.", _HINT)
    objects, relations = raw.get("objects", []), raw.get("relations", [])
    if not isinstance(objects, list) or not isinstance(relations, list):
        raise SgtoolError(f"{where}: objects and relations must be lists.", _HINT)
    record = Record(raw.get("file"), _size(raw.get("width"), "width", where), _size(raw.get("height"), "height", where),
                    _split(raw.get("split"), where), image_id=_image_id(raw.get("image_id"), where))
    use_ids = bool(objects) and all(isinstance(o, dict) and "id" in o for o in objects)
    ids = {}
    for k, obj in enumerate(objects):
        if not isinstance(obj, dict) or not isinstance(obj.get("label"), str) or not obj["label"].strip():
            raise SgtoolError(f"{where}: object {k} needs a 'label' name and a 'box'.", _HINT)
        record.boxes.append(_box(obj.get("box"), f"{where}, object {k}"))
        record.labels.append(obj["label"].strip())
        if use_ids:
            if obj["id"] in ids:
                raise SgtoolError(f"{where}: object id {obj['id']!r} is used twice.", "Object ids must be unique within an image.")
            ids[obj["id"]] = k
    for k, rel in enumerate(relations):
        record.relations.append(_custom_relation(rel, k, ids if use_ids else None, len(objects), where))
    return record


def _custom_relation(rel: object, k: int, ids: dict | None, num_objects: int, where: str) -> tuple[int, str, int]:
    if not isinstance(rel, dict) or not all(key in rel for key in ("subject", "predicate", "object")):
        raise SgtoolError(f"{where}: relation {k} needs subject, predicate and object.", _HINT)
    if not isinstance(rel["predicate"], str) or not rel["predicate"].strip():
        raise SgtoolError(f"{where}: relation {k} needs a predicate name.", _HINT)
    ends = []
    for role in ("subject", "object"):
        ref = rel[role]
        if ids is not None:
            if ref not in ids:
                raise SgtoolError(f"{where}: relation {k} names {role} id {ref!r}, but the image has no object with that id.", _HINT)
            ends.append(ids[ref])
        elif isinstance(ref, bool) or not isinstance(ref, int) or not 0 <= ref < num_objects:
            raise SgtoolError(f"{where}: relation {k} names object {ref!r}, but the image has {num_objects} objects.",
                              "Without object ids, subject and object are 0-based indices into the image's objects.")
        else:
            ends.append(ref)
    return ends[0], rel["predicate"].strip(), ends[1]


# ---------------------------------------------------------------- COCO-style

def parse_coco(payload: dict, path: Path) -> tuple[list[Record], list[str], list[str]]:
    """images / annotations (bbox [x, y, w, h], category_id) / categories + relations / rel_categories."""
    categories = _categories(payload.get("categories"), "categories", path)
    predicates = _categories(payload.get("rel_categories", payload.get("predicate_categories")), "rel_categories", path)
    records, position, ann_owner = [], {}, {}
    for k, image in enumerate(_list(payload, "images", path)):
        where = _where(k, image)
        if not isinstance(image, dict) or "id" not in image:
            raise SgtoolError(f"{path}: images {where} needs an id.", _HINT)
        if image["id"] in position:
            raise SgtoolError(f"{path}: images {position[image['id']]} and {k} share the id {image['id']!r}.",
                              "Each image needs its own id; annotations name their image by it.")
        position[image["id"]] = k
        records.append(Record(image.get("file_name"), _size(image.get("width"), "width", where),
                              _size(image.get("height"), "height", where), _split(image.get("split"), where)))
    for k, ann in enumerate(_list(payload, "annotations", path)):
        where = f"{path}: annotation {k}"
        if not isinstance(ann, dict) or ann.get("image_id") not in position:
            raise SgtoolError(f"{where} names image {ann.get('image_id') if isinstance(ann, dict) else None!r}, which 'images' lacks.", _HINT)
        if ann.get("category_id") not in categories:
            raise SgtoolError(f"{where} has category_id {ann.get('category_id')!r}, which 'categories' lacks.", _HINT)
        x, y, w, h = _box(ann.get("bbox"), where)
        record = records[position[ann["image_id"]]]
        ann_owner[ann.get("id", k)] = (position[ann["image_id"]], len(record.boxes))
        record.boxes.append([x, y, x + w, y + h])
        record.labels.append(categories[ann["category_id"]])
    for k, rel in enumerate(_list(payload, "relations", path)):
        _coco_relation(rel, k, records, ann_owner, predicates, path)
    return records, list(categories.values()), list(predicates.values())


def _coco_relation(rel: object, k: int, records: list[Record], owner: dict, predicates: dict, path: Path) -> None:
    where = f"{path}: relation {k}"
    if not isinstance(rel, dict):
        raise SgtoolError(f"{where} is not a JSON object.", _HINT)
    subj, obj = rel.get("subject_id"), rel.get("object_id")
    pred = rel.get("predicate_id", rel.get("category_id"))
    for role, ann in (("subject", subj), ("object", obj)):
        if ann not in owner:
            raise SgtoolError(f"{where} names {role} annotation {ann!r}, which 'annotations' lacks.", _HINT)
    if owner[subj][0] != owner[obj][0]:
        raise SgtoolError(f"{where} links annotations of two different images.", "A relation's boxes must share one image.")
    if pred not in predicates:
        raise SgtoolError(f"{where} has predicate_id {pred!r}, which 'rel_categories' lacks.", _HINT)
    records[owner[subj][0]].relations.append((owner[subj][1], predicates[pred], owner[obj][1]))


def _list(payload: dict, key: str, path: Path) -> list:
    value = payload.get(key, [])
    if not isinstance(value, list):
        raise SgtoolError(f"{path}: '{key}' must be a list.", _HINT)
    return value


def _categories(value: object, key: str, path: Path) -> dict:
    if not isinstance(value, list) or not value:
        raise SgtoolError(f"{path}: '{key}' must be a non-empty list of {{id, name}}.", _HINT)
    out: dict = {}
    for k, category in enumerate(value):
        if not isinstance(category, dict) or "id" not in category:
            raise SgtoolError(f"{path}: entry {k} of '{key}' needs an id and a name.", _HINT)
        name = category.get("name")
        if not isinstance(name, str) or not name.strip():
            raise SgtoolError(f"{path}: entry {k} of '{key}' has the name {name!r}; a name must be a non-empty string.", _HINT)
        if category["id"] in out:
            raise SgtoolError(f"{path}: '{key}' lists the id {category['id']!r} twice ('{out[category['id']]}' and '{name}').",
                              "Each class needs its own id.")
        out[category["id"]] = name.strip()
    if len(set(out.values())) != len(out):
        raise SgtoolError(f"{path}: '{key}' lists a name twice.", "Each class needs a unique name.")
    try:
        return dict(sorted(out.items()))
    except TypeError as exc:
        raise SgtoolError(f"{path}: the ids of '{key}' mix kinds ({exc}).", "Use whole numbers as ids.") from exc


# ---------------------------------------------------------------- records -> graphs

def read_records(path: Path) -> tuple[list[Record], list[str] | None, list[str] | None, str]:
    payload = read_json(path)
    if isinstance(payload, dict) and "annotations" in payload and "categories" in payload:
        records, objects, predicates = parse_coco(payload, path)
        return records, objects, predicates, "coco"
    raw = payload.get("images") if isinstance(payload, dict) else payload
    if not isinstance(raw, list):
        raise SgtoolError(f"{path} is neither a list of image records, an object with 'images', nor COCO-style JSON.", _HINT)
    objects = payload.get("objects") if isinstance(payload, dict) else None
    predicates = payload.get("predicates") if isinstance(payload, dict) else None
    for key, names in (("objects", objects), ("predicates", predicates)):
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)
                                  or len(set(names)) != len(names)):
            raise SgtoolError(f"{path}: '{key}' must be a list of unique names.", _HINT)
    return [parse_custom_record(k, r) for k, r in enumerate(raw)], objects, predicates, "sgtool"


def vocabulary(records: list[Record], objects: list[str] | None, predicates: list[str] | None) -> Vocabulary:
    """The given vocabulary (every name used must be in it), else the sorted names used."""
    used_objects = {label for r in records for label in r.labels}
    used_predicates = {p for r in records for _, p, _ in r.relations}
    for kind, given, used in (("object label", objects, used_objects), ("predicate", predicates, used_predicates)):
        if given is not None:
            unknown = used - set(given)
            if unknown:
                k, record = next((k, r) for k, r in enumerate(records)
                                 if unknown & (set(r.labels) | {p for _, p, _ in r.relations}))
                name = sorted(unknown & (set(record.labels) | {p for _, p, _ in record.relations}))[0]
                raise SgtoolError(f"record {k}{_file_part(record)}: {kind} '{name}' is not in the given vocabulary.",
                                  "Add it to the vocabulary list, or leave the list out to infer it.")
    objects = list(objects) if objects is not None else sorted(used_objects)
    predicates = list(predicates) if predicates is not None else sorted(used_predicates)
    if not objects or not predicates:
        raise SgtoolError("The file names no object classes or no predicates.", "A scene graph dataset needs both.")
    return Vocabulary(objects, predicates)


def _file_part(record: Record) -> str:
    return f" (image '{record.file}')" if record.file else ""


def flatten(records: list[Record], vocab: Vocabulary) -> FlatGraphs:
    obj_index = {n: i + 1 for i, n in enumerate(vocab.objects)}
    pred_index = {n: i + 1 for i, n in enumerate(vocab.predicates)}
    counts = np.array([len(r.labels) for r in records], dtype=np.int64)
    base = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    rel_counts = np.array([len(r.relations) for r in records], dtype=np.int64)
    rels = np.array([(s, pred_index[p], o) for r in records for s, p, o in r.relations], dtype=np.int64).reshape(-1, 3)
    rel_image = np.repeat(np.arange(len(records)), rel_counts)
    return FlatGraphs(np.repeat(np.arange(len(records)), counts),
                      np.array([b for r in records for b in r.boxes], dtype=np.float64).reshape(-1, 4),
                      np.array([obj_index[n] for r in records for n in r.labels], dtype=np.int64),
                      rel_image, rels[:, [0, 2]] + base[rel_image][:, None], rels[:, 1])


def assign_splits(records: list[Record], val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, str]:
    given = [r.split is not None for r in records]
    if all(given):
        return np.array([SPLIT_CODES[r.split] for r in records], dtype=np.int8), "given"
    if any(given):
        k = given.index(False)
        raise SgtoolError(f"record {k}{_file_part(records[k])} has no split, but other records do.",
                          "Give every record a split, or none (then it is drawn with the seed).")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise SgtoolError(f"{flag('val_fraction')} and {flag('test_fraction')} must be in [0, 1) and sum to less than 1.", "Example: 0.1 and 0.2.")
    n = len(records)
    order = np.random.default_rng(seed).permutation(n)
    split = np.zeros(n, dtype=np.int8)
    n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
    split[order[:n_test]] = 2
    split[order[n_test:n_test + n_val]] = 1
    return split, "seeded"


def build_custom(path: Path, images: Path | None, val_fraction: float, test_fraction: float, seed: int,
                 staging: Path) -> Staged:
    records, objects, predicates, kind = read_records(path)
    if not records:
        raise SgtoolError(f"{path} holds no image records.", _HINT)
    check_unique_image_ids(records, path)
    split, split_origin = assign_splits(records, val_fraction, test_fraction, seed)
    vocab = vocabulary(records, objects, predicates)
    flat = flatten(records, vocab)
    widths = np.array([r.width for r in records], dtype=np.int64)
    heights = np.array([r.height for r in records], dtype=np.int64)
    flat.boxes, clipped = clip_boxes(flat.boxes, widths[flat.box_image], heights[flat.box_image])
    positive = box_sides(flat.boxes) > 0
    flat, lost = drop_boxes(flat, positive)
    flat, rel_notes = clean_relations(flat, dedupe=True, drop_self=True)
    notes = {"source": f"custom-{kind}", "splits": split_origin, "boxes_clipped": clipped,
             "boxes_dropped_zero_area": int((~positive).sum()), "relations_dropped_zero_area": lost,
             "relations_dropped_self": rel_notes["relations_dropped_self"],
             "relations_merged_duplicates": rel_notes["relations_merged_duplicates"],
             "images_without_relations": split_counts(split, (np.bincount(flat.rel_image, minlength=len(records)) == 0).astype(np.int64))}
    ids = [r.image_id for r in records]
    image_ids = np.array(ids, dtype=np.int64) if all(i is not None for i in ids) else np.arange(len(records))
    graphs = assemble(flat, image_ids, widths, heights, split)
    graphs.files, notes["images_missing"] = _stage_images(records, images or path.parent, staging)
    return Staged(graphs, vocab, notes)


def _stage_images(records: list[Record], folder: Path, staging: Path) -> tuple[list[str | None], int]:
    for k, r in enumerate(records):
        if r.file and (".." in Path(r.file).parts or Path(r.file).is_absolute()):
            raise SgtoolError(f"record {k}: the image path '{r.file}' leaves the image folder.",
                              f"Give file paths relative to the image folder ({flag('images')}).")
    sources = [folder / r.file if r.file and (folder / r.file).is_file() else None for r in records]
    targets = [f"images/{r.file}" if src is not None else None for r, src in zip(records, sources)]
    return link_images(staging, sources, targets), int(sum(s is None for s in sources))


def prepare_custom(ws: Workspace, source: Path, name: str = "custom", images: Path | None = None,
                   val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
                   force: bool = False) -> PreparedDataset:
    source = Path(source).expanduser().resolve()
    if source.is_dir():
        raise SgtoolError(f"The custom dataset source {source} is a directory, not a JSON file.",
                          f"Pass the JSON file itself with {flag('source')}.")
    if not source.is_file():
        raise SgtoolError(f"The custom dataset file {source} does not exist.", f"Pass the JSON file with {flag('source')}.")
    parameters = {"source": str(source), "images": str(images) if images else None, "val_fraction": val_fraction,
                  "test_fraction": test_fraction, "seed": seed}
    return save_prepared(ws, name, "custom", parameters,
                         lambda staging: build_custom(source, images, val_fraction, test_fraction, seed, staging),
                         GroupRule(method="thirds"), force)


@dataclass
class CustomOptions:
    """`sgtool prepare custom`'s options."""

    source: Path = option(None, "Your JSON file: sgtool's custom schema or COCO-style with relations.", required=True)
    name: str = option("custom", "Dataset name in the workspace.")
    images: Optional[Path] = option(None, "Folder the image file names are relative to (default: the JSON's folder).")
    val_fraction: float = option(0.1, "Share of images in val when records carry no split.", min=0.0, max=1.0)
    test_fraction: float = option(0.2, "Share of images in test when records carry no split.", min=0.0, max=1.0)
    force: bool = option(False, "Replace a dataset of this name prepared with other parameters.")


def _prepare_custom_options(ws: Workspace, options: CustomOptions, seed: int, reporter: Any) -> PreparedDataset:
    return prepare_custom(ws, options.source, name=options.name, images=options.images,
                          val_fraction=options.val_fraction, test_fraction=options.test_fraction, seed=seed,
                          force=options.force)


register_format(DatasetFormat("custom", "Your own scene graphs (schema in docs/custom-format.md).",
                              CustomOptions, _prepare_custom_options))
