"""The community's SGG files: sgg.h5, dicts.json, image_data.json.

sgg.h5 follows the Visual Genome layout of the community benchmark code: `labels` (N x 1,
1-based), `boxes_1024` (N x 4, [cx, cy, w, h] with the longest image side scaled to 1024,
int32), `relationships` (M x 2, global box rows), `predicates` (M x 1, 1-based),
`img_to_first_box/last_box/first_rel/last_rel` (inclusive, -1 when none) and `split`
(0 train, 1 val — our extension —, 2 test); also `attributes` (N x 10, zeros) and `boxes_512`,
which community loaders read. No box is written with zero width or height: one that rounds to
0 at the 1024 scale is kept 1 unit (1/1024 of the longest side) wide or high, and counted. The complete ground truth of synthetic data rides
along as `complete_relationships`, `complete_predicates`, `img_to_first/last_complete_rel`.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from sgtool import atomic
from sgtool.data.graphs import RelationSet, SceneGraphs, offsets_from_counts
from sgtool.errors import SgtoolError

BOX_SCALE = 1024
ATTRIBUTE_SLOTS = 10  # the community file's attributes dataset is N x 10
_CORE_DATASETS = (
    "labels", "boxes_1024", "relationships", "predicates", "split",
    "img_to_first_box", "img_to_last_box", "img_to_first_rel", "img_to_last_rel",
)


@dataclass
class Vocabulary:
    """Object and predicate names; index i of a list is class id i + 1 (0 is background)."""

    objects: list[str]
    predicates: list[str]

    @property
    def num_object_classes(self) -> int:
        """Including background, as classifiers size their output."""
        return len(self.objects) + 1

    @property
    def num_predicate_classes(self) -> int:
        return len(self.predicates) + 1

    def object_name(self, label: int) -> str:
        return self.objects[label - 1] if 0 < label <= len(self.objects) else "__background__"

    def predicate_name(self, predicate: int) -> str:
        return self.predicates[predicate - 1] if 0 < predicate <= len(self.predicates) else "__no_relation__"


# ---------------------------------------------------------------- boxes

def encode_boxes_1024(boxes: np.ndarray, widths: np.ndarray, heights: np.ndarray,
                      box_scale: int = BOX_SCALE) -> np.ndarray:
    """xyxy pixel boxes -> community [cx, cy, w, h] at longest side `box_scale` (int32, rounded).

    Community loaders assert cx, cy >= 0 and w, h > 0: a box that rounds to zero width or height
    (sub-pixel at this scale) is kept 1 unit wide / high, and centres are never negative.
    """
    scale = (box_scale / np.maximum(widths, heights).astype(np.float64))[:, None]
    xyxy = boxes.astype(np.float64) * scale
    cxcywh = np.rint(np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1))
    cxcywh[:, :2] = np.maximum(cxcywh[:, :2], 0)
    cxcywh[:, 2:] = np.maximum(cxcywh[:, 2:], 1)
    return cxcywh.astype(np.int32)


def count_sub_unit_boxes(boxes: np.ndarray, widths: np.ndarray, heights: np.ndarray) -> int:
    """How many boxes round to zero width or height at the 1024 scale (written 1 unit wide instead)."""
    scale = (BOX_SCALE / np.maximum(widths, heights).astype(np.float64))
    sides = (boxes[:, 2:].astype(np.float64) - boxes[:, :2]) * scale[:, None]
    return int((np.rint(sides) < 1).any(axis=1).sum())


def decode_boxes_1024(boxes_1024: np.ndarray, widths: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """Community [cx, cy, w, h] at 1024 -> xyxy pixel boxes (float32). widths/heights per box."""
    b = boxes_1024.astype(np.float64)
    x1y1 = b[:, :2] - b[:, 2:] / 2
    xyxy = np.concatenate([x1y1, x1y1 + b[:, 2:]], axis=1)
    scale = (np.maximum(widths, heights).astype(np.float64) / BOX_SCALE)[:, None]
    return (xyxy * scale).astype(np.float32)


# ---------------------------------------------------------------- h5

def _first_last(offsets: np.ndarray, base: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    counts = np.diff(offsets)
    first = np.where(counts > 0, offsets[:-1], -1).astype(np.int32)
    last = np.where(counts > 0, offsets[1:] - 1, -1).astype(np.int32)
    return first, last


def _write(h5: h5py.File, name: str, data: np.ndarray) -> None:
    h5.create_dataset(name, data=data, track_times=False)


def write_sgg_h5(path: Path, graphs: SceneGraphs) -> int:
    """Write graphs to `path` (the caller makes it atomic); returns the boxes kept 1 unit wide or high.

    Beside sgtool's datasets it writes what the community loaders also read: `attributes`
    (N x 10, zeros: sgtool keeps no attributes) and `boxes_512`.
    """
    box_rows = graphs.image_of_box()
    widths, heights = graphs.widths[box_rows], graphs.heights[box_rows]
    with atomic.h5_in_memory(path) as h5:
        _write(h5, "labels", graphs.labels.astype(np.int64)[:, None])
        _write(h5, "attributes", np.zeros((len(graphs.labels), ATTRIBUTE_SLOTS), np.int64))
        _write(h5, "boxes_1024", encode_boxes_1024(graphs.boxes, widths, heights))
        _write(h5, "boxes_512", encode_boxes_1024(graphs.boxes, widths, heights, box_scale=512))
        _write(h5, "split", graphs.split.astype(np.int32))
        first, last = _first_last(graphs.box_offsets)
        _write(h5, "img_to_first_box", first)
        _write(h5, "img_to_last_box", last)
        for prefix, rels in (("", graphs.relations), ("complete_", graphs.complete)):
            if rels is None:
                continue
            _write(h5, f"{prefix}relationships", rels.pairs.astype(np.int32).reshape(-1, 2))
            _write(h5, f"{prefix}predicates", rels.predicates.astype(np.int64)[:, None])
            first, last = _first_last(rels.offsets)
            _write(h5, f"img_to_first_{prefix}rel", first)
            _write(h5, f"img_to_last_{prefix}rel", last)
    return count_sub_unit_boxes(graphs.boxes, widths, heights)


def _offsets_from_first_last(first: np.ndarray, last: np.ndarray, total: int, what: str, path: Path) -> np.ndarray:
    """Validate inclusive first/last indices (-1 = none) and turn them into offsets."""
    present = first >= 0
    counts = np.where(present, last - first + 1, 0)
    bad = (present != (last >= 0)) | (counts < 0)
    offsets = offsets_from_counts(counts)
    contiguous = np.array_equal(first[present], offsets[:-1][present])
    if bad.any() or not contiguous or offsets[-1] != total:
        raise SgtoolError(
            f"{path} is inconsistent: img_to_first_{what}/img_to_last_{what} do not tile the {total} rows in order.",
            "Re-create the file with `sgtool prepare`, or check the tool that wrote it.",
        )
    return offsets


def _rows(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:5])
    return shown + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")


def check_boxes_finite(boxes: np.ndarray, path: Path) -> None:
    """A NaN or infinite box is refused naming its rows (every reader does the same; none drops it)."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(boxes, dtype=np.float64)).all(axis=1)) if len(boxes) else []
    if len(bad):
        raise SgtoolError(f"{path}: boxes_1024 holds NaN or infinite values in row(s) {_rows(bad)}.",
                          "Fix or drop those boxes in the tool that wrote the file.")


def check_split_codes(split: np.ndarray, path: Path) -> None:
    """split is 0 (train), 1 (val) or 2 (test); anything else is refused, not read as train."""
    bad = np.flatnonzero(~np.isin(split, (0, 1, 2)))
    if len(bad):
        raise SgtoolError(f"{path}: split holds {split[bad[0]].item()!r}, not 0 (train), 1 (val) or 2 (test), for image "
                          f"row(s) {_rows(bad)}.", "Write 0, 1 or 2 for every image.")


def read_sgg_h5(path: Path, widths: np.ndarray, heights: np.ndarray) -> SceneGraphs:
    """Read an sgg.h5 whose images have the given sizes (from image_data.json)."""
    try:
        with h5py.File(path, "r") as h5:
            missing = [name for name in _CORE_DATASETS if name not in h5]
            if missing:
                raise SgtoolError(f"{path} lacks the dataset(s) {', '.join(missing)}.",
                                  "Is this an SGG h5 file? Re-create it with `sgtool prepare`.")
            data = {name: h5[name][()] for name in h5.keys() if isinstance(h5[name], h5py.Dataset)}
    except OSError as exc:
        raise SgtoolError(f"{path} cannot be read as HDF5 ({exc}).", "The file may be truncated or corrupt; prepare it again.") from exc
    return graphs_from_arrays(data, widths, heights, path)


def graphs_from_arrays(data: dict[str, np.ndarray], widths: np.ndarray, heights: np.ndarray, path: Path) -> SceneGraphs:
    num_images = len(data["split"])
    if len(widths) != num_images:
        raise SgtoolError(f"{path} has {num_images} images but image_data.json lists {len(widths)}.",
                          "Use the image_data.json that belongs to this h5 file.")
    labels = data["labels"].reshape(-1).astype(np.int64)
    if data["boxes_1024"].shape != (len(labels), 4):
        raise SgtoolError(f"{path}: boxes_1024 has shape {data['boxes_1024'].shape}, expected ({len(labels)}, 4).",
                          "The labels and boxes arrays must have one row per object.")
    check_boxes_finite(data["boxes_1024"], path)
    check_split_codes(data["split"], path)
    box_offsets = _offsets_from_first_last(data["img_to_first_box"], data["img_to_last_box"], len(labels), "box", path)

    def relations(prefix: str) -> RelationSet | None:
        if f"{prefix}relationships" not in data:
            return None
        pairs = data[f"{prefix}relationships"].reshape(-1, 2).astype(np.int64)
        predicates = data[f"{prefix}predicates"].reshape(-1).astype(np.int64)
        if len(pairs) != len(predicates):
            raise SgtoolError(f"{path}: {prefix}relationships and {prefix}predicates differ in length.",
                              "Each relationship needs exactly one predicate row.")
        offsets = _offsets_from_first_last(data[f"img_to_first_{prefix}rel"], data[f"img_to_last_{prefix}rel"],
                                           len(pairs), f"{prefix}rel", path)
        owner = np.repeat(np.arange(num_images), np.diff(offsets))
        inside = (pairs >= box_offsets[owner][:, None]) & (pairs < box_offsets[owner + 1][:, None])
        if not inside.all():
            raise SgtoolError(f"{path}: some {prefix}relationships point at boxes of another image.",
                              "relationships must hold global box rows within the relation's own image.")
        if len(predicates) and predicates.min() < 1:
            raise SgtoolError(f"{path}: {prefix}predicates must be 1-based (found {predicates.min()}).",
                              "0 is reserved for 'no relation'.")
        return RelationSet(pairs, predicates, offsets)

    if len(labels) and labels.min() < 1:
        raise SgtoolError(f"{path}: labels must be 1-based (found {labels.min()}).", "0 is reserved for background.")
    box_image = np.repeat(np.arange(num_images), np.diff(box_offsets))
    boxes = decode_boxes_1024(data["boxes_1024"], widths[box_image], heights[box_image])
    return SceneGraphs(
        image_ids=np.arange(num_images, dtype=np.int64),
        widths=np.asarray(widths, dtype=np.int64),
        heights=np.asarray(heights, dtype=np.int64),
        split=data["split"].astype(np.int8),
        box_offsets=box_offsets,
        boxes=boxes,
        labels=labels,
        relations=relations(""),
        complete=relations("complete_"),
    )


# ---------------------------------------------------------------- dicts.json / image_data.json

def dicts_payload(vocab: Vocabulary, graphs: SceneGraphs) -> dict:
    """dicts.json content; counts are over the training split, as the community's file has them."""
    train = graphs.split == 0
    box_image = graphs.image_of_box()
    obj_counts = np.bincount(graphs.labels[train[box_image]], minlength=vocab.num_object_classes)
    rel_image = np.repeat(np.arange(graphs.num_images), graphs.relations.counts())
    pred_counts = np.bincount(graphs.relations.predicates[train[rel_image]], minlength=vocab.num_predicate_classes)
    return {
        "idx_to_label": {str(i + 1): name for i, name in enumerate(vocab.objects)},
        "label_to_idx": {name: i + 1 for i, name in enumerate(vocab.objects)},
        "idx_to_predicate": {str(i + 1): name for i, name in enumerate(vocab.predicates)},
        "predicate_to_idx": {name: i + 1 for i, name in enumerate(vocab.predicates)},
        "object_count": {name: int(obj_counts[i + 1]) for i, name in enumerate(vocab.objects)},
        "predicate_count": {name: int(pred_counts[i + 1]) for i, name in enumerate(vocab.predicates)},
    }


def vocabulary_from_dicts(payload: dict, path: Path) -> Vocabulary:
    try:
        def ordered(mapping: dict) -> list[str]:
            keys = sorted(int(k) for k in mapping)
            if keys != list(range(1, len(keys) + 1)):
                raise ValueError("indices are not 1..n")
            return [mapping[str(k)] for k in keys]

        return Vocabulary(ordered(payload["idx_to_label"]), ordered(payload["idx_to_predicate"]))
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise SgtoolError(f"{path} is not a valid dicts file ({exc}).",
                          "It needs idx_to_label and idx_to_predicate maps with keys '1'..'n'.") from exc


def read_json(path: Path) -> object:
    """A JSON file (regular, at most 8 GB, no key twice, nested at most 100 deep), each problem one sentence."""
    from sgtool.inputs import DATA_BYTES, parse_json, read_text

    hint = "The file may be truncated or hand-edited; re-create it."
    text = read_text(path, "The file", DATA_BYTES, hint)
    return parse_json(text, Path(path), hint)


def image_data_payload(graphs: SceneGraphs) -> list[dict]:
    records = []
    for i in range(graphs.num_images):
        record = {"image_id": int(graphs.image_ids[i]), "width": int(graphs.widths[i]), "height": int(graphs.heights[i])}
        if graphs.files and graphs.files[i] is not None:
            record["file"] = graphs.files[i]
        records.append(record)
    return records


def read_image_data(path: Path, leave_out: Collection[int] = ()
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None]]:
    """image_data.json: ids, widths, heights and files (None when a record names none) of its records in
    order, without the ids in leave_out (the community's corrupted images); VG names the id `image_id` or `id`."""
    records = read_json(path)
    if not isinstance(records, list):
        raise SgtoolError(f"{path} must hold a list of image records.", "Each record needs image_id, width and height.")
    try:
        table = np.array([(int(r.get("image_id", r.get("id"))), int(r["width"]), int(r["height"])) for r in records],
                         dtype=np.int64).reshape(-1, 3)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SgtoolError(f"{path} has an image record without a valid image_id, width or height ({exc!r}).",
                          "Each record needs image_id, width and height.") from exc
    kept = ~np.isin(table[:, 0], list(leave_out))
    table, files = table[kept], [r.get("file") for r, k in zip(records, kept) if k]
    if len(table) and (table[:, 1:] < 1).any():
        bad = int(table[(table[:, 1:] < 1).any(axis=1), 0][0])
        raise SgtoolError(f"{path}: image {bad} has a zero or negative size.", "Widths and heights must be positive.")
    return table[:, 0], table[:, 1], table[:, 2], files
