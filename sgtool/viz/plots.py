"""Charts written as PNG files (matplotlib, no display): the eval report's per-predicate recall."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sgtool import atomic


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: Path) -> None:
    """Write the figure as a PNG atomically (the file is whole or absent)."""
    figure.tight_layout()
    with atomic.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def plot_per_predicate(path: Path, recalls: dict[str, float | None], metric: str, title: str) -> None:
    """A bar per predicate: its recall in `metric` (0..1, None as 0), drawn in %."""
    plt = _pyplot()
    names = list(recalls)
    values = [100 * (recalls[n] or 0.0) for n in names]
    figure, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(names) + 2), 4.5), dpi=100)
    try:
        ax.bar(range(len(names)), values, color="#4a7ab5")
        ax.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=8)
        ax.set_ylabel(f"per-predicate recall in {metric} (%)")
        ax.set_ylim(0, 100)
        ax.set_title(title, fontsize=10)
        save_figure(figure, path)
    finally:
        plt.close(figure)
