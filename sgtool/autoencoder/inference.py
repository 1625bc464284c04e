"""The trained auto-encoder at inference: load a checkpoint, run it over a split, its outputs as Predictions.

Both `train.py` (writing a run's predictions) and `evaluate.py` (reconstructions) use it.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from sgtool.checkpoint import load, pack, save
from sgtool.autoencoder.config import AEConfig
from sgtool.autoencoder.data import LineDrawings, to_pixels
from sgtool.autoencoder.model import GraphAutoEncoder
from sgtool.config import build
from sgtool.data.graphs import offsets_from_counts
from sgtool.data.predictions import Predictions
from sgtool.errors import SgtoolError

HEAD = "ae"
NODE_BOX = 4.0  # side of the box written around each predicted node, pixels


def as_batch(data: LineDrawings, index: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(data.images[index]).to(device, torch.float32)[:, None] / 255.0


@torch.no_grad()
def infer(model: GraphAutoEncoder, data: LineDrawings, sigma: float, device: str, batch: int = 64,
          keep: tuple[str, ...] = ("coords", "edge_prob")) -> dict[str, np.ndarray]:
    """Model outputs for every image of the split, as numpy arrays."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keep}
    for lo in range(0, len(data), batch):
        out = model(as_batch(data, np.arange(lo, min(lo + batch, len(data))), device), sigma)
        for k in keep:
            parts[k].append(out[k].cpu().numpy())
    return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in parts.items()}


def to_predictions(data: LineDrawings, coords: np.ndarray, edge_prob: np.ndarray, pairs: np.ndarray) -> Predictions:
    """Nodes as 'node' objects (small boxes around the points), every slot pair scored for 'connected'."""
    n_img, k = coords.shape[:2]
    xy = to_pixels(coords.reshape(-1, 2), data.canvas)
    half = NODE_BOX / 2
    boxes = np.concatenate([xy - half, xy + half], 1).astype(np.float32)
    base = np.repeat(np.arange(n_img) * k, len(pairs))
    rel_pairs = np.tile(pairs, (n_img, 1)) + base[:, None]
    p = edge_prob.reshape(-1).astype(np.float32)
    return Predictions(
        image_ids=data.graphs.image_ids, box_offsets=offsets_from_counts(np.full(n_img, k, np.int64)), boxes=boxes,
        labels=np.ones(n_img * k, np.int64), scores=np.ones(n_img * k, np.float32),
        pair_offsets=offsets_from_counts(np.full(n_img, len(pairs), np.int64)), pairs=rel_pairs.astype(np.int64),
        rel_scores=np.stack([1 - p, p], 1))


def predict(model: GraphAutoEncoder, data: LineDrawings, config: AEConfig, device: str) -> Predictions:
    out = infer(model, data, config.sigma_end, device)
    return to_predictions(data, out["coords"], out["edge_prob"], model.pairs.cpu().numpy())


def model_for(config: AEConfig) -> GraphAutoEncoder:
    return GraphAutoEncoder(config.max_nodes, config.width, edge_input=config.edge_input, encoder=config.encoder,
                            refiner_sharpen=config.refiner_sharpen)


def save_model(path: Path, model: GraphAutoEncoder, config: AEConfig) -> None:
    """A model file of the one checkpoint format: {config, model} as the trainee's state."""
    save(path, pack(HEAD, {"config": asdict(config), "model": model.state_dict()}))


def load_model(path: Path) -> tuple[GraphAutoEncoder, AEConfig]:
    """A seed's model; files written before the one format load too (their migration fills options added since)."""
    if not path.exists():
        raise SgtoolError(f"No auto-encoder checkpoint at {path}.", "Train the run again.")
    saved = load(path)  # unreadable bytes or another shape: one sentence
    try:
        if saved["kind"] != HEAD:
            raise KeyError("kind")
        config = build(AEConfig, saved["model"]["config"])
        model = model_for(config)
        model.load_state_dict(saved["model"]["model"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise SgtoolError(f"{path} is not an auto-encoder checkpoint ({type(exc).__name__}).",
                          "Train the run again.") from exc
    return model.eval(), config
