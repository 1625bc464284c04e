"""The training-curve PNG of a run: the training loss and the validation metric per epoch, from log.jsonl."""
from __future__ import annotations

import json
from pathlib import Path

from sgtool import atomic

CURVES_NAME = "training-curves.png"


def read_epochs(log_path: Path) -> list[dict]:
    """The log's epoch records (the training loop writes one per epoch)."""
    if not Path(log_path).is_file():
        return []
    records = [json.loads(line) for line in Path(log_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in records if r.get("event") == "epoch"]


def draw_training_curves(log_path: Path, out: Path) -> Path | None:
    """Loss (left axis) and the validation metric (right axis, %) per epoch; None when no epoch was logged."""
    epochs = read_epochs(log_path)
    if not epochs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["epoch"] for r in epochs]
    losses = [r["train"]["loss"] for r in epochs]
    validated = [r for r in epochs if r.get("val_value") is not None]
    figure, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    try:
        ax.plot(x, losses, "o-", color="#c0504d", label="train loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("train loss")
        if validated:
            metric = validated[0]["val_metric"]
            right = ax.twinx()
            right.plot([r["epoch"] for r in validated], [100 * r["val_value"] for r in validated], "s-",
                       color="#4a7ab5", label=f"val {metric}")
            right.set_ylabel(f"val {metric} (%)")
        ax.set_title(f"{Path(log_path).parent.name}: training curves", fontsize=10)
        figure.legend(loc="upper right", fontsize=8)
        figure.tight_layout()
        with atomic.atomic_path(Path(out)) as tmp:
            figure.savefig(tmp, format="png")
    finally:
        plt.close(figure)
    return Path(out)
