"""viz/plots.py: the per-predicate recall chart of the eval report."""
from __future__ import annotations

import numpy as np
from PIL import Image

from sgtool.viz.plots import plot_per_predicate

BAR = np.array([0x4A, 0x7A, 0xB5])


def _bar_columns(path) -> tuple[np.ndarray, tuple[int, int]]:
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("RGB")).astype(int)
        size = img.size
    blue = (np.abs(pixels - BAR).sum(-1) < 30)
    return blue.sum(0), size  # blue pixels per column


def test_one_bar_per_predicate_with_height_from_its_recall(tmp_path):
    path = tmp_path / "recall.png"
    plot_per_predicate(path, {"on": 1.0, "near": None, "has": 0.5}, "R@50", "run: synth test (predcls)")
    heights, size = _bar_columns(path)
    assert size == (600, 450)
    columns = np.flatnonzero(heights)
    runs = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
    assert len(runs) == 2  # 'near' (no recall) has no bar
    tall, short = (int(heights[r].max()) for r in runs)
    assert abs(tall / short - 2.0) < 0.05  # 100 % is twice 50 %
    assert not list(tmp_path.glob("*.tmp*")) and [p.name for p in tmp_path.iterdir()] == ["recall.png"]


def test_chart_widens_with_the_vocabulary(tmp_path):
    names = {f"predicate {i}": i / 50 for i in range(50)}
    plot_per_predicate(tmp_path / "wide.png", names, "R@100", "fifty predicates")
    with Image.open(tmp_path / "wide.png") as img:
        assert img.size == (1950, 450)
