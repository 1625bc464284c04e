"""Images and detection targets of a prepared dataset, batched for torchvision's detectors."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sgtool.data.graphs import SceneGraphs
from sgtool.data.prepared import PreparedDataset
from sgtool.errors import SgtoolError
from sgtool.flags import flag

CACHE_LIMIT_BYTES = 2 << 30  # keep decoded images in memory when a split fits in this


def require_images(prepared: PreparedDataset, what: str = "train a detector") -> None:
    if not prepared.has_images:
        raise SgtoolError(f"The dataset '{prepared.name}' holds annotations only (no images), so it cannot {what}.",
                          f"Prepare a dataset with images (e.g. `sgtool prepare synth`), or pass {flag('dataset')}.")


def read_image(path: Path) -> torch.Tensor:
    """(3, H, W) uint8 tensor of an RGB image file."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise SgtoolError(f"Cannot read the image {path} ({exc}).", "Re-run `sgtool prepare` for this dataset.") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 (or already float in [0, 1]) CHW -> float32 in [0, 1]."""
    return image.float().div_(255) if image.dtype == torch.uint8 else image.float()


class SplitImages:
    """The images of one split (SceneGraphs subset), loaded lazily and cached when they fit in memory."""

    def __init__(self, root: Path, graphs: SceneGraphs) -> None:
        self.root, self.graphs = Path(root), graphs
        if graphs.num_images and not all(graphs.files):
            raise SgtoolError(f"Some images of {root} have no file.", "Re-run `sgtool prepare` for this dataset.")
        pixels = int((graphs.widths * graphs.heights).sum()) * 3
        self._cache: dict[int, torch.Tensor] | None = {} if pixels <= CACHE_LIMIT_BYTES else None

    def __len__(self) -> int:
        return self.graphs.num_images

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        image = read_image(self.root / self.graphs.files[index])
        if self._cache is not None:
            self._cache[index] = image
        return image

    def target(self, index: int) -> dict[str, torch.Tensor]:
        lo, hi = self.graphs.box_offsets[index], self.graphs.box_offsets[index + 1]
        return {"boxes": torch.as_tensor(self.graphs.boxes[lo:hi], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.as_tensor(self.graphs.labels[lo:hi], dtype=torch.int64)}


def _hflip(image: torch.Tensor, target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes}


def train_batches(images: SplitImages, batch_size: int, seed: int, epoch: int, flip: bool = True,
                  start_batch: int = 0, shard: tuple[int, int] = (0, 1),
                  ) -> Iterator[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
    """One epoch of shuffled batches; the order and flips depend only on (seed, epoch).

    shard=(rank, world): only the batches rank, rank + world, ... of full groups of world batches
    (distributed training; the images of other ranks' batches are not read)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(images))
    flips = rng.random(len(images)) < 0.5 if flip else np.zeros(len(images), bool)
    rank, world = shard
    total = num_batches(len(order), batch_size)
    usable = total if world == 1 else total - total % world
    for number in range(start_batch, usable):
        if number % world != rank:
            continue
        start = number * batch_size
        batch_images, batch_targets = [], []
        for index in order[start:start + batch_size]:
            image, target = images[int(index)], images.target(int(index))
            if flips[index]:
                image, target = _hflip(image, target)
            batch_images.append(to_float(image))
            batch_targets.append(target)
        yield batch_images, batch_targets


def num_batches(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size
