"""`sgtool prepare custom`: sgtool's own JSON schema and COCO-style JSON with relations."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from sgtool.data.prepared import load_prepared
from sgtool.workspace import Workspace


def record(file: str, objects: list, relations: list, split: str | None = "train", w: int = 200, h: int = 100) -> dict:
    out = {"file": file, "width": w, "height": h, "objects": objects, "relations": relations}
    if split:
        out["split"] = split
    return out


RECORDS = [
    record("a.jpg", [{"box": [10, 10, 50, 50], "label": "chat noir"}, {"box": [40, 20, 260, 90], "label": "tablé"}],
           [{"subject": 0, "predicate": "sur", "object": 1}, {"subject": 0, "predicate": "sur", "object": 1}]),
    record("b.jpg", [{"id": "x", "box": [0, 0, 30, 30], "label": "tablé"}, {"id": "y", "box": [5, 5, 5, 40], "label": "chat noir"},
                     {"id": "z", "box": [1, 1, 20, 20], "label": "chat noir"}],
           [{"subject": "y", "predicate": "près de", "object": "x"}, {"subject": "z", "predicate": "sur", "object": "x"}]),
    record("c.jpg", [{"box": [0, 0, 10, 10], "label": "tablé"}], [], split="test"),  # no relations: kept
    record("d.jpg", [{"box": [0, 0, 10, 10], "label": "tablé"}, {"box": [2, 2, 8, 8], "label": "chat noir"}],
           [{"subject": 1, "predicate": "sur", "object": 0}], split="val"),
]


def write(path: Path, payload: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    return path


def test_custom_schema_outcomes(tmp_path, cli):
    src = write(tmp_path / "mine" / "graphs.json", {"images": RECORDS})
    Image.new("RGB", (200, 100)).save(tmp_path / "mine" / "a.jpg")
    result = cli("-w", tmp_path / "ws", "prepare", "custom", "--source", src)
    assert result.code == 0, result.err
    data = load_prepared(Workspace(tmp_path / "ws"), "custom")
    m, g, v = data.manifest, data.graphs, data.vocab
    assert v.objects == ["chat noir", "tablé"] and v.predicates == ["près de", "sur"]  # inferred, sorted, unicode kept
    assert list(g.split) == [0, 0, 2, 1] and m["splits"] == "given"
    assert m["boxes_clipped"] == 1 and np.allclose(g.image(0)["boxes"][1], [40, 20, 200, 90], atol=0.5)  # clipped to 200 wide
    assert m["boxes_dropped_zero_area"] == 1 and m["relations_dropped_zero_area"] == 1  # y's box is 0 px wide
    assert m["relations_merged_duplicates"] == 1
    assert m["images_without_relations"]["test"] == 1 and g.relations.counts()[2] == 0
    b = g.image(1)  # relations by object id: z -> sur -> x
    assert [v.object_name(int(x)) for x in b["labels"]] == ["tablé", "chat noir"]
    assert [tuple(p) for p in b["pairs"]] == [(1, 0)] and v.predicate_name(int(b["predicates"][0])) == "sur"
    assert m["has_images"] is True and m["images_missing"] == 3 and (data.path / "images" / "a.jpg").exists()


def test_given_vocabulary_and_seeded_splits(tmp_path, cli):
    records = [{k: v for k, v in r.items() if k != "split"} for r in RECORDS * 5]
    payload = {"objects": ["tablé", "chat noir", "unused"], "predicates": ["sur", "près de"], "images": records}
    src = write(tmp_path / "g.json", payload)
    first = cli("-w", tmp_path / "ws1", "--seed", "3", "prepare", "custom", "--source", src)
    second = cli("-w", tmp_path / "ws2", "--seed", "3", "prepare", "custom", "--source", src)
    assert first.code == 0 and second.code == 0, first.err
    a, b = (load_prepared(Workspace(tmp_path / w), "custom") for w in ("ws1", "ws2"))
    assert a.vocab.objects == ["tablé", "chat noir", "unused"]
    assert np.array_equal(a.graphs.split, b.graphs.split) and a.manifest["splits"] == "seeded"
    assert a.manifest["counts"]["test"]["images"] == 4 and a.manifest["counts"]["val"]["images"] == 2


def test_missing_object_points_at_record(tmp_path, cli):
    records = [record(f"{k}.jpg", [{"box": [0, 0, 5, 5], "label": "a"}, {"box": [1, 1, 6, 6], "label": "b"}],
                      [{"subject": 0, "predicate": "p", "object": 1}]) for k in range(17)]
    objects = [{"box": [0, 0, 5 + k, 5 + k], "label": "a"} for k in range(4)]
    relations = [{"subject": 0, "predicate": "p", "object": 1}] * 2 + [{"subject": 0, "predicate": "p", "object": 9}]
    records.append(record("a.jpg", objects, relations))
    result = cli("-w", tmp_path / "ws", "prepare", "custom", "--source", write(tmp_path / "g.json", records))
    assert result.code == 2
    assert "record 17 (image 'a.jpg'): relation 2 names object 9, but the image has 4 objects." in " ".join(result.err.split())


def test_other_bad_records(tmp_path, cli):
    cases = [
        ([record("a.jpg", [{"box": [0, 0, 5], "label": "a"}], [])], "record 0 (image 'a.jpg'), object 0: a box must be 4 finite numbers"),
        ([record("a.jpg", [], [], w=0)], "record 0 (image 'a.jpg'): width must be a positive whole number of pixels"),
        ([record("a.jpg", [], []), record("b.jpg", [], [], split=None)], "record 1 (image 'b.jpg') has no split, but other records do"),
        ({"objects": ["a"], "images": [record("a.jpg", [{"box": [0, 0, 5, 5], "label": "zz"}], [])]},
         "record 0 (image 'a.jpg'): object label 'zz' is not in the given vocabulary"),
        ([record("a.jpg", [{"id": 1, "box": [0, 0, 5, 5], "label": "a"}], [{"subject": 1, "predicate": "p", "object": 7}])],
         "relation 0 names object id 7, but the image has no object with that id"),
    ]
    for k, (payload, message) in enumerate(cases):
        result = cli("-w", tmp_path / "ws", "prepare", "custom", "--source", write(tmp_path / f"{k}.json", payload))
        assert result.code == 2 and message in " ".join(result.err.split()), (message, result.err)
    assert not (tmp_path / "ws" / "data").exists() or not any((tmp_path / "ws" / "data").iterdir())


COCO = {
    "images": [{"id": 7, "file_name": "p.jpg", "width": 100, "height": 80, "split": "train"},
               {"id": 9, "file_name": "q.jpg", "width": 50, "height": 50, "split": "test"}],
    "annotations": [{"id": 70, "image_id": 7, "bbox": [10, 10, 20, 30], "category_id": 5},
                    {"id": 71, "image_id": 7, "bbox": [0, 0, 100, 80], "category_id": 2},
                    {"id": 90, "image_id": 9, "bbox": [5, 5, 10, 10], "category_id": 5}],
    "categories": [{"id": 5, "name": "person"}, {"id": 2, "name": "room"}],
    "relations": [{"image_id": 7, "subject_id": 70, "object_id": 71, "predicate_id": 1}],
    "rel_categories": [{"id": 1, "name": "in"}],
}


def test_coco_style_with_relations(tmp_path, cli):
    result = cli("-w", tmp_path / "ws", "--json", "prepare", "custom", "--source", write(tmp_path / "coco.json", COCO))
    assert result.code == 0, result.err
    data = load_prepared(Workspace(tmp_path / "ws"), "custom")
    assert data.vocab.objects == ["room", "person"] and data.vocab.predicates == ["in"]  # by category id
    first = data.graphs.image(0)
    assert np.allclose(first["boxes"], [[10, 10, 30, 40], [0, 0, 100, 80]], atol=0.1)  # [x, y, w, h] -> xyxy
    assert [data.vocab.object_name(int(x)) for x in first["labels"]] == ["person", "room"]
    assert [tuple(p) for p in first["pairs"]] == [(0, 1)] and list(data.graphs.image_ids) == [0, 1]
    assert data.manifest["counts"]["test"]["images"] == 1 and data.manifest["has_images"] is False


def test_coco_relation_to_missing_annotation_is_refused_and_workspace_untouched(tmp_path, cli):
    ws = tmp_path / "ws"
    assert cli("-w", ws, "prepare", "custom", "--source", write(tmp_path / "coco.json", COCO)).code == 0
    before = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(ws.rglob("*")) if p.is_file()}
    bad = dict(COCO, relations=[{"image_id": 7, "subject_id": 70, "object_id": 72, "predicate_id": 1}])
    result = cli("-w", ws, "prepare", "custom", "--source", write(tmp_path / "bad.json", bad), "--force")
    assert result.code == 2 and "relation 0 names object annotation 72, which 'annotations' lacks" in " ".join(result.err.split())
    after = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(ws.rglob("*")) if p.is_file()}
    assert after == before
    info = json.loads(cli("-w", ws, "info", "--json").out)
    assert info["datasets"]["custom"]["counts"]["train"]["images"] == 1
