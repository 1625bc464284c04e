"""`sgtool prepare vrd`: the VRD JSON release, on small fixtures in its exact format."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sgtool.data.prepared import load_prepared
from sgtool.workspace import Workspace

OBJECTS = ["person", "café", "table", "dog"]
PREDICATES = ["on", "next to", "has"]


def ent(cat: int, ymin: int, ymax: int, xmin: int, xmax: int) -> dict:
    return {"category": cat, "bbox": [ymin, ymax, xmin, xmax]}


def rel(s: dict, p: int, o: dict) -> dict:
    return {"predicate": p, "subject": s, "object": o}


PERSON, CAFE, TABLE = ent(0, 10, 200, 20, 120), ent(1, 0, 500, 0, 1000), ent(2, 300, 600, 100, 400)
TRAIN = {
    # duplicate triplet (merged by default) and two predicates on one pair (both kept)
    "a.jpg": [rel(PERSON, 0, TABLE), rel(PERSON, 0, TABLE), rel(PERSON, 1, TABLE), rel(TABLE, 0, CAFE)],
    "b.jpg": [rel(ent(3, 5, 50, 5, 60), 2, ent(0, 0, 1023, 500, 700))],
    "c.jpg": [],  # an image without relations: kept
    "d.jpg": [rel(ent(0, 10, 10, 0, 50), 0, PERSON), rel(PERSON, 1, TABLE)],  # a zero-area subject
}
TEST = {"t1.jpg": [rel(ent(3, 100, 1100, 100, 300), 0, CAFE)],  # reaches beyond its 1024 x 768 image
        "t2.jpg": [rel(PERSON, 2, TABLE)]}
SIZES = {"a.jpg": (1024, 768), "b.jpg": (768, 1024), "c.jpg": (640, 480), "d.jpg": (1024, 1024),
         "t1.jpg": (768, 1024), "t2.jpg": (1024, 768)}


def write_vrd(folder: Path, metadata: bool = True, images: bool = False, train: dict | None = None,
              test: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"annotations_train.json": train or TRAIN, "annotations_test.json": test or TEST,
             "objects.json": OBJECTS, "predicates.json": PREDICATES}
    for name, payload in files.items():
        (folder / name).write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    if metadata:
        (folder / "train_image_metadata.json").write_text(json.dumps(
            {n: {"width": w, "height": h} for n, (w, h) in SIZES.items() if n in TRAIN}))
    if images:
        for split, names in (("train", TRAIN), ("test", TEST)):
            (folder / "sg_dataset" / f"sg_{split}_images").mkdir(parents=True, exist_ok=True)
            for n in names:
                Image.new("RGB", SIZES[n]).save(folder / "sg_dataset" / f"sg_{split}_images" / n)
    return folder


def triplets(graphs, vocab, index: int) -> list:
    """Sorted (subject, predicate, object names; subject box + object box). The community [cx, cy, w, h]
    integer encoding moves odd-sized boxes by half a pixel, so boxes are compared within 1 px."""
    g = graphs.image(index)
    return sorted(((vocab.objects[g["labels"][s] - 1], vocab.predicates[p - 1], vocab.objects[g["labels"][o] - 1]),
                   tuple(g["boxes"][s]) + tuple(g["boxes"][o])) for (s, o), p in zip(g["pairs"], g["predicates"]))


def same(ours: list, theirs: list) -> bool:
    return (len(ours) == len(theirs) and [n for n, _ in ours] == [n for n, _ in theirs]
            and np.allclose([b for _, b in ours], [b for _, b in theirs], atol=1.0))


def source_triplets(relations: list) -> list:
    def box(e):
        y1, y2, x1, x2 = e["bbox"]
        return (x1, y1, x2, y2)
    distinct = {((OBJECTS[r["subject"]["category"]], PREDICATES[r["predicate"]], OBJECTS[r["object"]["category"]]),
                 box(r["subject"]) + box(r["object"])) for r in relations}
    return sorted(distinct)


def test_round_trip_counts_and_manifest(tmp_path, cli):
    src = write_vrd(tmp_path / "vrd")
    result = cli("-w", tmp_path / "ws", "prepare", "vrd", "--source", src)
    assert result.code == 0, result.err
    data = load_prepared(Workspace(tmp_path / "ws"), "vrd")
    m, g = data.manifest, data.graphs
    assert m["counts"]["train"]["images"] == 4 and m["counts"]["test"]["images"] == 2 and m["counts"]["val"]["images"] == 0
    assert m["annotated_relations"]["train"] == 7 and m["distinct_triplets"]["train"] == 6
    assert m["duplicates_merged"]["train"] == 1
    # a.jpg: 3 distinct objects (PERSON shared by 3 relations), 3 relations, both predicates of one pair kept
    assert g.box_counts()[0] == 3 and g.relations.counts()[0] == 3
    assert same(triplets(g, data.vocab, 0), source_triplets(TRAIN["a.jpg"]))
    assert same(triplets(g, data.vocab, 1), source_triplets(TRAIN["b.jpg"]))
    assert data.vocab.objects == OBJECTS and data.vocab.predicates == PREDICATES  # 0-based -> 1-based, unicode kept
    assert g.relations.counts()[2] == 0 and m["images_without_relations"]["train"] == 1
    # the zero-area subject of d.jpg is dropped with its relation, counted
    assert m["boxes_dropped_zero_area"] == 1 and m["relations_dropped_zero_area"] == 1
    assert same(triplets(g, data.vocab, 3), source_triplets(TRAIN["d.jpg"][1:]))
    assert m["counts"]["train"]["relations"] == 6 - 1
    # no images: annotation-only, sizes from metadata or, for test, from the boxes' extent
    assert m["has_images"] is False and all("file" not in r for r in json.loads((data.path / "image_data.json").read_text()))
    assert m["sizes_from_boxes"] is True and m["image_sizes"]["metadata"] == 4 and m["image_sizes"]["box_extent"] == 2
    assert (int(g.widths[4]), int(g.heights[4])) == (1000, 1100)
    names = json.loads((data.path / "source_images.json").read_text(encoding="utf-8"))
    assert [n["name"] for n in names] == list(TRAIN) + list(TEST)
    assert (tmp_path / "ws" / "priors" / "vrd.npz").exists()


def test_keep_duplicates_and_val(tmp_path, cli):
    src = write_vrd(tmp_path / "vrd")
    result = cli("-w", tmp_path / "ws", "--json", "prepare", "vrd", "--source", src, "--keep-duplicates", "--val", "1")
    assert result.code == 0, result.err
    counts = json.loads(result.out)["counts"]
    assert counts["val"]["images"] == 1 and counts["train"]["images"] == 3
    assert counts["train"]["relations"] + counts["val"]["relations"] == 7 - 1  # the duplicate kept, zero-area one dropped
    assert load_prepared(Workspace(tmp_path / "ws"), "vrd").manifest["duplicates_merged"]["train"] == 0


@pytest.mark.parametrize("option, test_relations", [(None, 3), ("--merge-test-duplicates", 2)])
def test_test_split_keeps_every_annotated_relation_by_default(tmp_path, cli, option, test_relations):
    test = {"t1.jpg": TEST["t1.jpg"] * 2, "t2.jpg": TEST["t2.jpg"]}  # an exact duplicate test triplet
    src = write_vrd(tmp_path / "vrd", test=test)
    result = cli("-w", tmp_path / "ws", "prepare", "vrd", "--source", src, *([option] if option else []))
    assert result.code == 0, result.err
    manifest = load_prepared(Workspace(tmp_path / "ws"), "vrd").manifest
    assert manifest["counts"]["test"]["relations"] == test_relations
    assert manifest["duplicates_merged"] == {"train": 1, "val": 0, "test": 3 - test_relations}


def test_images_give_sizes_and_boxes_outside_are_clipped(tmp_path, cli):
    src = write_vrd(tmp_path / "vrd", metadata=False, images=True)
    assert cli("-w", tmp_path / "ws", "prepare", "vrd", "--source", src).code == 0
    data = load_prepared(Workspace(tmp_path / "ws"), "vrd")
    m, g = data.manifest, data.graphs
    assert m["has_images"] is True and m["image_sizes"]["image_file"] == 6 and m["sizes_from_boxes"] is False
    assert (data.path / "images" / "train" / "a.jpg").exists()
    assert json.loads((data.path / "image_data.json").read_text())[0]["file"] == "images/train/a.jpg"
    # t1.jpg is 768 x 1024: its dog box [100, 100, 300, 1100] and CAFE [0, 0, 1000, 500] are clipped
    assert m["boxes_clipped"] >= 2
    t1 = g.image(4)
    assert t1["boxes"][:, 2].max() <= 768 and t1["boxes"][:, 3].max() <= 1024


def test_metadata_overrun_by_boxes_is_enlarged(tmp_path, cli):
    src = write_vrd(tmp_path / "vrd")
    meta = json.loads((src / "train_image_metadata.json").read_text())
    meta["b.jpg"] = {"width": 500, "height": 374}  # as one real VRD image: its boxes reach y = 1023
    (src / "train_image_metadata.json").write_text(json.dumps(meta))
    assert cli("-w", tmp_path / "ws", "prepare", "vrd", "--source", src).code == 0
    data = load_prepared(Workspace(tmp_path / "ws"), "vrd")
    assert data.manifest["image_sizes"]["metadata_enlarged_to_boxes"] == 1
    assert (int(data.graphs.widths[1]), int(data.graphs.heights[1])) == (700, 1023)


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def prepared_ws(tmp_path, cli):
    ws = tmp_path / "ws"
    assert cli("-w", ws, "prepare", "vrd", "--source", write_vrd(tmp_path / "vrd")).code == 0
    return ws


def test_folder_without_vrd_files_is_refused(tmp_path, cli, prepared_ws):
    before = _digest(prepared_ws)
    (tmp_path / "empty").mkdir()
    result = cli("-w", prepared_ws, "prepare", "vrd", "--source", tmp_path / "empty", "--force")
    assert result.code == 2
    assert "holds none of the VRD files" in result.err and "empty" in result.err
    assert _digest(prepared_ws) == before


def test_category_out_of_range_names_file_and_image(tmp_path, cli, prepared_ws):
    before = _digest(prepared_ws)
    bad = dict(TRAIN, **{"x.jpg": [rel(ent(7, 0, 5, 0, 5), 0, PERSON)]})
    src = write_vrd(tmp_path / "bad", train=bad)
    result = cli("-w", prepared_ws, "prepare", "vrd", "--source", src, "--force")
    assert result.code == 2
    assert "annotations_train.json: image 'x.jpg', relation 0 has subject category 7, outside 0..3" in " ".join(result.err.split())
    assert _digest(prepared_ws) == before


def test_missing_one_file_and_too_large_val(tmp_path, cli):
    src = write_vrd(tmp_path / "vrd")
    result = cli("-w", tmp_path / "ws", "prepare", "vrd", "--source", src, "--val", "4")
    assert result.code == 2 and "Cannot take 4 validation images" in result.err
    (src / "predicates.json").unlink()
    result = cli("-w", tmp_path / "ws", "prepare", "vrd", "--source", src)
    assert result.code == 2 and "lacks predicates.json" in result.err
    assert not (tmp_path / "ws" / "data" / "vrd").exists()


def test_info_shows_vrd(tmp_path, cli, prepared_ws):
    result = cli("-w", prepared_ws, "info", "--json")
    summary = json.loads(result.out)["datasets"]["vrd"]
    assert summary["recipe"] == "vrd" and summary["counts"]["train"]["images"] == 4 and summary["has_images"] is False
