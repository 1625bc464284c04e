"""The Simple Shape dataset: node counts, edges that follow the drawn strokes, determinism, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sgtool.data.prepared import load_prepared
from sgtool.data.shapes import load_spec, make_shape, node_points, render, shape_edges
from sgtool.workspace import Workspace


@pytest.fixture(scope="module")
def shapes_ws(tmp_path_factory):
    from sgtool.data.shapes import prepare_shapes

    ws = Workspace(tmp_path_factory.mktemp("shapes"))
    prepare_shapes(ws, images=40, seed=3, workers=1)
    return ws


def test_node_counts_and_edges(shapes_ws):
    g = load_prepared(shapes_ws, "shapes").graphs
    counts = g.box_counts()
    assert set(counts) <= {2, 3, 4} and len(set(counts)) == 3
    rel_counts = g.relations.counts()
    assert np.array_equal(rel_counts, np.where(counts == 2, 1, counts))  # line: 1 edge, polygons: a closed ring
    assert np.all(g.relations.predicates == 1) and np.all(g.labels == 1)
    assert np.all(g.relations.pairs[:, 0] < g.relations.pairs[:, 1])
    assert np.allclose(g.boxes[:, 2:] - g.boxes[:, :2], 4.0)  # 4x4 node boxes


def test_edges_match_the_drawn_segments(shapes_ws):
    prepared = load_prepared(shapes_ws, "shapes")
    g = prepared.graphs
    for i in range(8):
        image = np.asarray(Image.open(prepared.path / g.files[i])) > 127
        near = image.copy()  # ink within one pixel (strokes are 2 px wide, points sub-pixel)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                near |= np.roll(image, (dy, dx), axis=(0, 1))
        pts = node_points(g.boxes[g.box_offsets[i]:g.box_offsets[i + 1]])
        n = len(pts)
        t = np.linspace(0.15, 0.85, 15)[:, None]
        for a in range(n):
            for b in range(a + 1, n):
                along = np.round(pts[a] + t * (pts[b] - pts[a])).astype(int)
                lit = near[along[:, 1], along[:, 0]].mean()
                joined = any((a, b) == tuple(e - g.box_offsets[i]) for e in g.relations.pairs[g.relations.offsets[i]:g.relations.offsets[i + 1]])
                assert (lit == 1.0) if joined else (lit < 0.7), (i, a, b, lit)
        assert image.sum() > 0 and not image[0].any() and not image[:, 0].any()  # nodes keep off the border


def test_deterministic_per_image():
    spec = load_spec()
    a = make_shape(spec, np.random.default_rng([5, 17]))
    b = make_shape(spec, np.random.default_rng([5, 17]))
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
    assert np.array_equal(np.asarray(render(spec, a[1])), np.asarray(render(spec, b[1])))
    assert shape_edges(2).tolist() == [[0, 1]] and shape_edges(3).tolist() == [[0, 1], [1, 2], [0, 2]]


def test_cli_prepare_shapes(cli, tmp_path):
    r = cli("-w", tmp_path, "--json", "prepare", "shapes", "--images", "12", "--workers", "1")
    assert r.code == 0, r.err
    manifest = json.loads((tmp_path / "data" / "shapes" / "manifest.json").read_text())
    assert manifest["recipe"] == "shapes" and manifest["parameters"] == {"images": 12, "seed": 0}
    bad = cli("-w", tmp_path, "prepare", "shapes", "--images", "0")
    assert bad.code == 2 and "--images" in bad.err
