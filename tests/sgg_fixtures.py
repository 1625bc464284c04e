"""Tiny scene-graph datasets for tests, and a helper that saves one into a workspace."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sgtool.data.graphs import SPLIT_CODES, RelationSet, SceneGraphs, offsets_from_counts
from sgtool.data.prepared import PreparedDataset, Staged, save_prepared
from sgtool.data.sgg_h5 import Vocabulary
from sgtool.workspace import Workspace

OBJECTS = ["cup", "table", "dog", "hat"]
PREDICATES = ["on", "near", "wears"]


def tiny_graphs(seed: int = 0, splits: tuple[int, int, int] = (24, 6, 8), with_images: bool = False) -> SceneGraphs:
    """Random images of 3-5 boxes; a relation's predicate depends on its label pair (plus noise)."""
    rng = np.random.default_rng(seed)
    num_images = sum(splits)
    split = np.repeat([SPLIT_CODES["train"], SPLIT_CODES["val"], SPLIT_CODES["test"]], splits).astype(np.int8)
    box_counts = rng.integers(3, 6, num_images)
    box_offsets = offsets_from_counts(box_counts)
    xy = rng.uniform(0, 60, (box_offsets[-1], 2))
    wh = rng.uniform(10, 40, (box_offsets[-1], 2))
    boxes = np.round(np.concatenate([xy, xy + wh], 1)).astype(np.float32)
    labels = rng.integers(1, len(OBJECTS) + 1, box_offsets[-1]).astype(np.int64)
    pairs, predicates, rel_counts = [], [], []
    for i in range(num_images):
        n, base = box_counts[i], box_offsets[i]
        chosen = rng.choice(n * n, size=3, replace=False)
        chosen = [(c // n, c % n) for c in chosen if c // n != c % n][:2]
        for s, o in chosen:
            rule = (labels[base + s] + 2 * labels[base + o]) % len(PREDICATES) + 1
            predicates.append(rule if rng.random() < 0.8 else int(rng.integers(1, len(PREDICATES) + 1)))
            pairs.append((base + s, base + o))
        rel_counts.append(len(chosen))
    relations = RelationSet(np.array(pairs, np.int64).reshape(-1, 2), np.array(predicates, np.int64),
                            offsets_from_counts(np.array(rel_counts)))
    files = [f"images/{i}.png" for i in range(num_images)] if with_images else []
    return SceneGraphs(np.arange(num_images, dtype=np.int64) + 100, np.full(num_images, 100), np.full(num_images, 100),
                       split, box_offsets, boxes, labels, relations, None, files)


def tiny_vocab(objects: list[str] | None = None) -> Vocabulary:
    return Vocabulary(list(objects or OBJECTS), list(PREDICATES))


def save_tiny(ws: Workspace, name: str = "tiny", seed: int = 0, objects: list[str] | None = None,
              with_images: bool = False, splits: tuple[int, int, int] = (24, 6, 8)) -> PreparedDataset:
    """Save a tiny dataset (and its priors) into the workspace as `sgtool prepare` would."""
    graphs = tiny_graphs(seed, splits, with_images=with_images)

    def build(staging: Path) -> Staged:
        if with_images:
            from PIL import Image

            (staging / "images").mkdir()
            for f in graphs.files:
                Image.new("RGB", (100, 100), (200, 220, 240)).save(staging / f)
        return Staged(graphs, tiny_vocab(objects), {})

    return save_prepared(ws, name, "tiny", {"seed": seed}, build)


def losses_over_steps(head, batch, steps: int = 8, lr: float = 1e-2) -> tuple[list[float], dict]:
    """Adam steps of a built trainable head on one batch: the loss before each step, and the last terms."""
    import torch

    optimizer = torch.optim.Adam(head.model.parameters(), lr=lr)
    losses, terms = [], {}
    for _ in range(steps):
        terms = head.loss(batch)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(float(terms["loss"].detach()))
    return losses, terms
