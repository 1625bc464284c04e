"""`sgtool prepare vg`: the community VG-SGG files and raw Visual Genome JSON, on small fixtures."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from sgtool.data import recipes
from sgtool.data.prepared import load_prepared
from sgtool.workspace import Workspace

# ---------------------------------------------------------------- community files

LABELS = ["bowl", "cup", "tablé"]  # any vocabulary size works; unicode kept
PREDS = ["near", "on"]
# six images (ids as image_data.json lists them; 1592 is a community 'corrupted' id the h5 leaves out)
IDS = [1, 2, 3, 4, 5, 6]
SIZES = [(1024, 512), (512, 1024), (800, 600), (1024, 768), (1024, 1024), (640, 480)]
SPLIT = [0, 0, 0, 0, 2, 2]
# per image: boxes xyxy at 1024 scale, labels, relations (local subject, local object, predicate)
IMAGES = [
    ([[0, 0, 100, 100], [50, 50, 150, 150], [500, 0, 600, 100]], [1, 2, 3], [(0, 1, 2), (0, 1, 2), (0, 1, 1), (0, 2, 1)]),
    ([[10, 10, 60, 60], [20, 20, 80, 80]], [2, 2], [(0, 1, 1)]),
    ([[0, 0, 10, 10]], [1], []),  # no relations: dropped by filter_empty_rels
    ([[0, 0, 100, 100], [200, 200, 300, 300]], [3, 1], [(0, 1, 2)]),  # non-overlapping pair only
    ([[0, 0, 1024, 1024], [100, 100, 400, 400]], [3, 2], [(1, 0, 2)]),
    ([[0, 0, 300, 200], [10, 10, 200, 100]], [1, 3], [(0, 1, 1)]),
]


def write_community(folder: Path, attri: bool = True, images=IMAGES, labels=LABELS, corrupted: bool = True,
                    ids=IDS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    boxes, labs, rels, preds, fb, lb, fr, lr = [], [], [], [], [], [], [], []
    for box, lab, rel in images:
        start = len(labs)
        fb.append(start), lb.append(start + len(lab) - 1)
        fr.append(len(rels) if rel else -1), lr.append(len(rels) + len(rel) - 1 if rel else -1)
        for b in box:
            x1, y1, x2, y2 = b
            boxes.append([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
        labs += lab
        rels += [[start + s, start + o] for s, o, _ in rel]
        preds += [p for _, _, p in rel]
    name = "VG-SGG-with-attri.h5" if attri else "VG-SGG.h5"
    with h5py.File(folder / name, "w") as h5:
        h5["labels"] = np.array(labs, np.int64)[:, None]
        h5["boxes_1024"] = np.array(boxes, np.int32)
        h5["boxes_512"] = np.array(boxes, np.int32) // 2
        h5["relationships"] = np.array(rels, np.int32).reshape(-1, 2)
        h5["predicates"] = np.array(preds, np.int64)[:, None]
        h5["img_to_first_box"], h5["img_to_last_box"] = np.array(fb, np.int32), np.array(lb, np.int32)
        h5["img_to_first_rel"], h5["img_to_last_rel"] = np.array(fr, np.int32), np.array(lr, np.int32)
        h5["split"] = np.array(SPLIT[:len(images)], np.int32)
        if attri:
            h5["attributes"] = np.zeros((len(labs), 10), np.int64)
    dicts = {"idx_to_label": {str(i + 1): n for i, n in enumerate(labels)}, "label_to_idx": {n: i + 1 for i, n in enumerate(labels)},
             "idx_to_predicate": {str(i + 1): n for i, n in enumerate(PREDS)}, "predicate_to_idx": {n: i + 1 for i, n in enumerate(PREDS)},
             "object_count": {}, "predicate_count": {}}
    (folder / ("VG-SGG-dicts-with-attri.json" if attri else "VG-SGG-dicts.json")).write_text(json.dumps(dicts), encoding="utf-8")
    records = [{"image_id": i, "width": w, "height": h, "url": f"x/{i}.jpg", "coco_id": None, "flickr_id": None}
               for i, (w, h) in zip(ids, SIZES)][:len(images)]
    if corrupted:
        records.insert(2, {"image_id": 1592, "width": 10, "height": 10})
    (folder / "image_data.json").write_text(json.dumps(records), encoding="utf-8")
    return folder


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_community_files_split_val_and_empty_filter(tmp_path, cli):
    src = write_community(tmp_path / "vg")
    result = cli("-w", tmp_path / "ws", "prepare", "vg", "--split", "vg150", "--source", src, "--val", "1")
    assert result.code == 0, result.err
    data = load_prepared(Workspace(tmp_path / "vg" / ".." / "ws"), "vg150")
    m, g = data.manifest, data.graphs
    assert data.vocab.objects == LABELS and data.vocab.predicates == PREDS
    assert m["images_dropped_without_relations"]["train"] == 1  # image 3
    assert list(g.image_ids) == [1, 2, 4, 5, 6]  # the corrupted id 1592 left out, image 3 filtered
    assert m["counts"]["val"]["images"] == 1 and m["counts"]["train"]["images"] == 2 and m["counts"]["test"]["images"] == 2
    assert m["counts"]["test"]["relations"] == 2 and g.relations.counts().sum() == 8
    first = g.image(0)  # boxes decoded back to pixels: image 1 is 1024 x 512, scale 1
    assert np.allclose(first["boxes"], IMAGES[0][0]) and list(first["labels"]) == [1, 2, 3]
    assert [tuple(p) for p in first["pairs"]] == [(0, 1), (0, 1), (0, 1), (0, 2)]
    second = g.image(1)  # image 2 is 512 x 1024 as well: longest side 1024, scale 1
    assert np.allclose(second["boxes"], IMAGES[1][0])
    assert m["source"] == "vg-community-h5" and m["filters"]["filter_empty_rels"] is True
    assert m["image_records_removed_corrupted"] == 1
    assert list(g.split) == [1, 0, 0, 2, 2] and m["val_pick"] == "first"  # val: the first filtered train image


def test_val_pick_random_draws_with_the_seed(tmp_path, cli):
    src = write_community(tmp_path / "vg")
    picked = []
    for seed in range(6):
        ws = tmp_path / f"ws{seed}"
        result = cli("-w", ws, "--seed", seed, "prepare", "vg", "--source", src, "--val", "1", "--val-pick", "random")
        assert result.code == 0, result.err
        split = load_prepared(Workspace(ws), "vg150").graphs.split
        assert (split == 1).sum() == 1 and (split[:3] != 2).all()
        picked.append(int(np.flatnonzero(split == 1)[0]))
    expected = [int(np.random.default_rng(seed).choice([0, 1, 2], size=1, replace=False)[0]) for seed in range(6)]
    assert picked == expected and len(set(picked)) > 1


def test_community_filters_duplicates_and_non_overlap(tmp_path, cli):
    src = write_community(tmp_path / "vg", attri=False)
    result = cli("-w", tmp_path / "ws", "--json", "prepare", "vg", "--source", src, "--val", "0",
                 "--keep-empty", "--filter-duplicates", "--filter-non-overlap")
    assert result.code == 0, result.err
    m = load_prepared(Workspace(tmp_path / "ws"), "vg150").manifest
    assert m["source_files"][0] == "VG-SGG.h5"
    # image 1: pair (0, 1) has three predicate rows -> one kept; image 4's only pair does not overlap -> image dropped
    assert m["relations_dropped_duplicate_pairs"] == 2
    assert m["relations_dropped_non_overlap"] == 2 and m["images_dropped_non_overlap"] == 1  # (0, 2) of image 1 too
    assert m["counts"]["train"]["images"] == 3 and m["counts"]["train"]["relations"] == 2


def test_vg_format_dataset_whose_image_data_matches_its_h5(tmp_path, cli):
    """Another dataset in the VG-SGG layout: its records already line up, so no 'corrupted' id is removed."""
    ids = [7, 1592, 1722, 8, 9, 10]  # VG150's corrupted ids are ordinary images here
    src = write_community(tmp_path / "rs", corrupted=False, ids=ids)
    result = cli("-w", tmp_path / "ws", "prepare", "vg", "--source", src, "--val", "0", "--name", "rs")
    assert result.code == 0, result.err
    data = load_prepared(Workspace(tmp_path / "ws"), "rs")
    assert list(data.graphs.image_ids) == [7, 1592, 8, 9, 10]  # image 1722 has no relation: filtered
    assert data.vocab.objects == LABELS and data.manifest["image_records_removed_corrupted"] == 0


def test_image_data_not_reconcilable_with_h5_is_refused(tmp_path, cli):
    src = write_community(tmp_path / "vg")
    records = json.loads((src / "image_data.json").read_text(encoding="utf-8"))
    (src / "image_data.json").write_text(json.dumps(records[:-2]), encoding="utf-8")
    result = cli("-w", tmp_path / "ws", "prepare", "vg", "--source", src)
    err = " ".join(result.err.split())
    assert result.code == 2
    assert "VG-SGG-with-attri.h5 has 6 images but image_data.json lists 5 (4 without the recipe's corrupted ids)" in err
    assert not (tmp_path / "ws" / "data" / "vg150").exists()


def test_truncated_h5_is_refused_and_workspace_untouched(tmp_path, cli):
    ws = tmp_path / "ws"
    assert cli("-w", ws, "prepare", "vg", "--source", write_community(tmp_path / "good"), "--val", "0").code == 0
    before = _digest(ws)
    bad = write_community(tmp_path / "bad")
    raw = (bad / "VG-SGG-with-attri.h5").read_bytes()
    (bad / "VG-SGG-with-attri.h5").write_bytes(raw[: len(raw) // 3])
    result = cli("-w", ws, "prepare", "vg", "--source", bad, "--force", "--val", "0")
    assert result.code == 2 and "VG-SGG-with-attri.h5 cannot be read as HDF5" in result.err
    assert _digest(ws) == before


def test_dicts_not_matching_h5_labels_is_refused(tmp_path, cli):
    ws = tmp_path / "ws"
    assert cli("-w", ws, "prepare", "vg", "--source", write_community(tmp_path / "good"), "--val", "0").code == 0
    before = _digest(ws)
    src = write_community(tmp_path / "bad", labels=["bowl", "cup"])  # the h5 uses label 3
    result = cli("-w", ws, "prepare", "vg", "--source", src, "--force", "--val", "0")
    err = " ".join(result.err.split())
    assert result.code == 2 and "VG-SGG-dicts-with-attri.json does not match VG-SGG-with-attri.h5" in err
    assert "object label 3 is outside the vocabulary of 2 classes" in err
    assert _digest(ws) == before


def test_offsets_disagreeing_with_arrays_are_refused(tmp_path, cli):
    src = write_community(tmp_path / "vg")
    with h5py.File(src / "VG-SGG-with-attri.h5", "a") as h5:
        last = h5["img_to_last_box"][()]
        last[0] += 1  # image 1 now claims image 2's first box
        h5["img_to_last_box"][...] = last
    result = cli("-w", tmp_path / "ws", "prepare", "vg", "--source", src)
    assert result.code == 2 and "img_to_first_box/img_to_last_box do not tile" in " ".join(result.err.split())
    assert not (tmp_path / "ws" / "data" / "vg150").exists()


def test_pixel_scale_boxes_are_refused(tmp_path, cli):
    images = [([[0, 0, 3000, 2000]], [1], [])] + IMAGES[1:]
    src = write_community(tmp_path / "vg", images=images)
    result = cli("-w", tmp_path / "ws", "prepare", "vg", "--source", src)
    assert result.code == 2 and "beyond the 1024 scale" in result.err


def test_folder_without_vg_files_is_refused(tmp_path, cli):
    (tmp_path / "nothing").mkdir()
    result = cli("-w", tmp_path / "ws", "prepare", "vg", "--source", tmp_path / "nothing")
    assert result.code == 2 and "holds neither the community files" in " ".join(result.err.split())
    result = cli("-w", tmp_path / "ws", "prepare", "vg", "--split", "nope", "--source", tmp_path / "nothing")
    assert result.code == 2 and "No dataset recipe named 'nope'" in result.err


# ---------------------------------------------------------------- raw Visual Genome JSON

def obj(oid: int, name: str, x: float, y: float, w: float, h: float, key: str = "names") -> dict:
    return {"object_id": oid, "x": x, "y": y, "w": w, "h": h, key: [name] if key == "names" else name, "synsets": []}


def write_raw(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    man, shirt = obj(1, "Man", 10, 10, 100, 200), obj(2, "t-shirt", 20, 40, 60, 60)
    shirt_dup = obj(3, "shirt", 21, 41, 60, 60)  # IoU >= 0.9 with the t-shirt: merged
    tiny = obj(4, "tree", 300, 300, 1, 1)  # smaller than min_box_size: dropped
    wall = obj(5, "wall", 0, 0, 50, 50)  # not in VG150: dropped
    outside = obj(6, "trees", 600, 300, 200, 100)  # image is 640 wide: clipped to 40 px wide
    objects = [
        {"image_id": 10, "objects": [man, shirt, shirt_dup, tiny, wall, outside]},
        {"image_id": 11, "objects": [obj(7, "Zébra", 0, 0, 30, 30), obj(8, "women", 10, 10, 100, 100)]},
        {"image_id": 12, "objects": [obj(9, "dog", 5, 5, 50, 50, key="name")]},  # older release: 'name'
        {"image_id": 13, "objects": [obj(10, "man", 5, 5, 50, 50), obj(11, "horse", 100, 100, 80, 80)]},
    ]
    relationships = [
        {"image_id": 10, "relationships": [
            {"predicate": "WEARING", "subject": man, "object": shirt},
            {"predicate": "wears", "subject": man, "object": shirt_dup},  # same pair after the merge, other predicate
            {"predicate": "wearing", "subject": man, "object": shirt_dup},  # duplicate after the merge
            {"predicate": "near", "subject": man, "object": tiny},  # its object is dropped
            {"predicate": "near", "subject": man, "object": wall},  # outside the vocabulary
            {"predicate": "flibbers", "subject": man, "object": outside},  # predicate outside the vocabulary
            {"predicate": "next to", "subject": outside, "object": man},  # alias -> near
        ]},
        {"image_id": 11, "relationships": [
            # the subject is missing from objects.json: taken from the relationship itself
            {"predicate": "on", "subject": obj(99, "hats", 1, 1, 20, 20), "object": obj(8, "women", 10, 10, 100, 100)}]},
        {"image_id": 13, "relationships": [{"predicate": "riding", "subject": obj(10, "man", 5, 5, 50, 50),
                                            "object": obj(11, "horse", 100, 100, 80, 80)}]},
        # image 12 has no relationships record at all
    ]
    images = [{"image_id": 10, "width": 640, "height": 480}, {"image_id": 11, "width": 300, "height": 300},
              {"image_id": 12, "width": 100, "height": 100}, {"image_id": 13, "width": 400, "height": 300}]
    for name, payload in (("objects.json", objects), ("relationships.json", relationships), ("image_data.json", images)):
        (folder / name).write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    return folder


def test_raw_json_normalises_and_counts(tmp_path, cli):
    src = write_raw(tmp_path / "raw")
    result = cli("-w", tmp_path / "ws", "prepare", "vg", "--source", src, "--keep-empty", "--val", "0")
    assert result.code == 0, result.err
    data = load_prepared(Workspace(tmp_path / "ws"), "vg150")
    m, g, v = data.manifest, data.graphs, data.vocab
    assert len(v.objects) == 150 and len(v.predicates) == 50
    assert m["source"] == "vg-raw-json"
    assert m["objects_dropped_vocabulary"] == 1 and m["boxes_dropped_small"] == 1 and m["boxes_merged_iou"] == 1
    assert m["boxes_clipped"] == 1 and m["objects_taken_from_relationships"] == 1
    assert m["relations_dropped_vocabulary"] == 2 and m["relations_dropped_small_box"] == 1
    assert m["relations_merged_duplicates"] == 1
    first = g.image(0)
    names = [v.object_name(int(label)) for label in first["labels"]]
    assert names == ["man", "shirt", "tree"]  # Man -> man, t-shirt -> shirt (merged with shirt), trees -> tree
    assert np.allclose(first["boxes"][2], [600, 300, 640, 400])
    rels = sorted((names[s], v.predicate_name(int(p)), names[o]) for (s, o), p in zip(first["pairs"], first["predicates"]))
    assert rels == [("man", "wearing", "shirt"), ("man", "wears", "shirt"), ("tree", "near", "man")]
    second = g.image(1)
    assert sorted(v.object_name(int(x)) for x in second["labels"]) == ["hat", "woman", "zebra"]  # hats -> hat, women -> woman, Zébra -> zebra
    assert g.relations.counts()[2] == 0 and list(g.image_ids) == [10, 11, 12, 13]
    # 70/30 in image order: 3 train, 1 test
    assert list(g.split) == [0, 0, 0, 2]


def test_raw_json_out_of_order_is_refused(tmp_path, cli):
    src = write_raw(tmp_path / "raw")
    objects = json.loads((src / "objects.json").read_text(encoding="utf-8"))
    (src / "objects.json").write_text(json.dumps(objects[::-1]), encoding="utf-8")
    result = cli("-w", tmp_path / "ws", "prepare", "vg", "--source", src)
    assert result.code == 2 and "objects.json: record 1 (image 12)" in " ".join(result.err.split())


def test_raw_json_truncated_is_refused(tmp_path, cli):
    src = write_raw(tmp_path / "raw")
    text = (src / "relationships.json").read_text(encoding="utf-8")
    (src / "relationships.json").write_text(text[: len(text) // 2], encoding="utf-8")
    result = cli("-w", tmp_path / "ws", "prepare", "vg", "--source", src)
    assert result.code == 2 and "relationships.json is not valid JSON" in result.err


def test_a_new_vocabulary_is_a_new_yaml(tmp_path, cli, monkeypatch):
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "mini.yaml").write_text(
        "name: mini\nobjects: {man: 1, horse: 1}\npredicates: {riding: 1}\nval_images: 0\n"
        "filters: {filter_empty_rels: true}\npredicate_groups: {method: thirds}\n", encoding="utf-8")
    monkeypatch.setattr(recipes, "SOURCE_RECIPES", tmp_path / "no-checkout")  # as installed from a wheel
    monkeypatch.setattr(recipes, "INSTALLED_RECIPES", folder)
    src = write_raw(tmp_path / "raw")
    result = cli("-w", tmp_path / "ws", "--json", "prepare", "vg", "--split", "mini", "--source", src)
    assert result.code == 0, result.err
    data = load_prepared(Workspace(tmp_path / "ws"), "mini")
    assert data.vocab.objects == ["man", "horse"] and data.vocab.predicates == ["riding"]
    assert list(data.graphs.image_ids) == [13]  # the only image with a man riding a horse


@pytest.mark.parametrize("name", ["vg150"])
def test_recipe_holds_the_vg150_vocabulary(name):
    spec = recipes.load_recipe(name)
    assert len(spec["objects"]) == 150 and len(spec["predicates"]) == 50
    assert list(spec["objects"]) == sorted(spec["objects"]) and "on" in spec["predicates"]
    assert spec["predicate_groups"]["method"] == "thresholds"


# ---------------------------------------------------------------- what the community loader asserts

def community_loader_view(path: Path, split: str, num_val: int) -> list[dict]:
    """The checks and the image selection of the community loader (SGB's load_graphs), written here
    from its description: it reads these datasets, asserts boxes_1024[:, :2] >= 0 and [:, 2:] > 0 in
    [cx, cy, w, h], keeps the images of its split flag (2 test, else 0) that have boxes and relations,
    takes the first `num_val` of train as val, and asserts every relation's boxes lie in its image."""
    with h5py.File(path, "r") as h5:
        data = {name: h5[name][()] for name in (
            "split", "labels", "attributes", "boxes_1024", "boxes_512", "img_to_first_box", "img_to_last_box",
            "img_to_first_rel", "img_to_last_rel", "relationships", "predicates")}
    n_boxes, n_rels = len(data["labels"]), len(data["relationships"])
    assert data["labels"].shape == (n_boxes, 1) and data["attributes"].shape == (n_boxes, 10)
    assert data["boxes_1024"].shape == (n_boxes, 4) and data["boxes_512"].shape == (n_boxes, 4)
    assert data["predicates"].shape == (n_rels, 1) and data["relationships"].shape == (n_rels, 2)
    assert (data["labels"] >= 1).all() and (data["predicates"] >= 1).all()
    for scale in ("boxes_1024", "boxes_512"):
        assert (data[scale][:, :2] >= 0).all() and (data[scale][:, 2:] >= 1).all()  # no empty box
    boxes = data["boxes_1024"].astype(np.float64)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    mask = (data["split"] == (2 if split == "test" else 0)) & (data["img_to_first_box"] >= 0)
    mask &= data["img_to_first_rel"] >= 0
    index = np.flatnonzero(mask)
    index = index[:num_val] if split == "val" else index[num_val:] if split == "train" else index
    images = []
    for i in index:
        b0, b1 = data["img_to_first_box"][i], data["img_to_last_box"][i]
        r0, r1 = data["img_to_first_rel"][i], data["img_to_last_rel"][i]
        local = data["relationships"][r0:r1 + 1] - b0
        assert (local >= 0).all() and (local < b1 - b0 + 1).all()
        images.append({"index": int(i), "boxes": boxes[b0:b1 + 1], "labels": data["labels"][b0:b1 + 1, 0],
                       "rels": np.column_stack([local, data["predicates"][r0:r1 + 1, 0]])})
    return images


def test_prepared_file_passes_the_community_loader(tmp_path, cli):
    src = write_community(tmp_path / "vg")
    with h5py.File(src / "VG-SGG-with-attri.h5", "a") as h5:  # float boxes, one of them sub-pixel wide
        boxes = h5["boxes_1024"][()].astype(np.float64)
        boxes[2] = [550.0, 50.0, 0.3, 100.0]  # image 1's third box: 0.3 units wide
        del h5["boxes_1024"]
        h5["boxes_1024"] = boxes
    result = cli("-w", tmp_path / "ws", "prepare", "vg", "--source", src, "--val", "0")
    assert result.code == 0, result.err
    data = load_prepared(Workspace(tmp_path / "ws"), "vg150")
    assert data.manifest["boxes_kept_1_unit_wide"] == 1
    path = data.path / "sgg.h5"
    for split in ("train", "test"):
        seen = community_loader_view(path, split, 0)
        mine = data.graphs.split_subset(split)
        assert [im["index"] for im in seen] == list(np.flatnonzero(data.graphs.split == (2 if split == "test" else 0)))
        for im, k in zip(seen, range(mine.num_images)):
            ours = mine.image(k)
            assert list(im["labels"]) == list(ours["labels"])
            unit = max(mine.widths[k], mine.heights[k]) / 1024  # one unit of the 1024 scale, in pixels
            assert np.abs(im["boxes"] * unit - ours["boxes"]).max() <= unit  # integer rounding at that scale
            assert [tuple(r) for r in im["rels"]] == [(*p, q) for p, q in zip(map(tuple, ours["pairs"]), ours["predicates"])]
    first = community_loader_view(path, "train", 0)[0]
    assert first["boxes"][2, 2] - first["boxes"][2, 0] == 1  # the sub-pixel box: 1 unit, not 0


def test_val_is_carved_from_train_images_with_boxes_first_in_file_order():
    from sgtool.data.normalize import carve_val

    split = np.array([2, 0, 0, 0, 2, 0, 0], np.int8)
    has_boxes = np.array([True, False, True, True, True, True, True])
    assert carve_val(split, 2, 0, "x", "first", eligible=has_boxes).tolist() == [2, 0, 1, 1, 2, 0, 0]
    drawn = carve_val(split, 2, 5, "x", "random", eligible=has_boxes)
    assert (drawn == 1).sum() == 2 and drawn[1] == 0 and (drawn[[0, 4]] == 2).all()
