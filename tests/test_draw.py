"""graph.json validation and `sgtool draw`: files of the right type and size, clear errors."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from sgtool.viz.draw import DPI, PANEL_INCHES
from sgtool.viz.graph_json import top_relations

GRAPH = {
    "image": None, "width": 100, "height": 80,
    "objects": [{"id": 0, "label": "dog", "box": [5, 5, 50, 60], "score": 0.9},
                {"id": 1, "label": "hat", "box": [10, 0, 30, 15], "score": 0.8},
                {"id": 2, "label": "table", "box": [0, 40, 100, 80], "score": 0.7}],
    "relations": [{"subject": 0, "predicate": "wears", "object": 1, "score": 0.6, "hit": True},
                  {"subject": 0, "predicate": "on", "object": 2, "score": 0.3, "hit": False},
                  {"subject": 1, "predicate": "near", "object": 2, "score": 0.1}],
}


def write(tmp_path, graph, name="g.json"):
    path = tmp_path / name
    path.write_text(json.dumps(graph))
    return path


def test_draw_png_without_image(tmp_path, cli):
    path = write(tmp_path, GRAPH)
    result = cli("draw", path, "--json")
    assert result.code == 0, result.err
    out = tmp_path / "g.png"
    assert json.loads(result.out)["path"] == str(out)
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size == (int(PANEL_INCHES * DPI), int(PANEL_INCHES * DPI))


def test_draw_svg_with_image_beside_graph(tmp_path, cli):
    Image.new("RGB", (100, 80), (10, 120, 200)).save(tmp_path / "pic.png")
    path = write(tmp_path, {**GRAPH, "image": "pic.png"})
    out = tmp_path / "drawn.svg"
    result = cli("draw", path, "--out", out, "--json")
    assert result.code == 0, result.err
    text = out.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    width = 2 * PANEL_INCHES * 72  # matplotlib writes SVG sizes in points
    assert f'width="{width:g}pt"' in text and f'height="{PANEL_INCHES * 72:g}pt"' in text
    assert json.loads(result.out)["with_image"] is True
    png = cli("draw", path, "--out", tmp_path / "drawn.png")
    with Image.open(tmp_path / "drawn.png") as img:
        assert img.size == (int(2 * PANEL_INCHES * DPI), int(PANEL_INCHES * DPI))


def test_top_keeps_the_highest_scoring_relations(tmp_path, cli):
    kept = top_relations(GRAPH["relations"], 2)
    assert [r["predicate"] for r in kept] == ["wears", "on"]
    result = cli("draw", write(tmp_path, GRAPH), "--top", "1", "--json")
    assert result.code == 0 and json.loads(result.out)["relations"] == 1 and json.loads(result.out)["objects"] == 2


@pytest.mark.parametrize("graph, words", [
    ({k: v for k, v in GRAPH.items() if k != "objects"}, "no 'objects'"),
    ({**GRAPH, "relations": [{"subject": 0, "predicate": "on", "object": 9}]}, "unknown object id 9"),
    ({**GRAPH, "objects": [{"id": 0, "label": "dog", "box": [1, 2, 3]}]}, "not 4 numbers"),
    ({**GRAPH, "objects": [{"id": 0, "label": "dog", "box": [1, 2, "x", 4]}]}, "not 4 numbers"),
    ({**GRAPH, "objects": [{"id": 0, "box": [1, 2, 3, 4]}]}, "no text 'label'"),
    ([1, 2], "top level"),
])
def test_malformed_graph_json_is_one_sentence_exit_2(tmp_path, cli, graph, words):
    path = write(tmp_path, graph)
    result = cli("draw", path)
    assert result.code == 2
    message = " ".join(result.err.split())
    assert words in message and str(path.name) in message and "Traceback" not in result.err
    assert not (tmp_path / "g.png").exists()


def test_draw_refuses_unknown_extension_and_missing_file(tmp_path, cli):
    path = write(tmp_path, GRAPH)
    assert cli("draw", path, "--out", tmp_path / "x.gif").code == 2
    missing = cli("draw", tmp_path / "none.json")
    assert missing.code == 2 and "does not exist" in missing.err
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert cli("draw", broken).code == 2
