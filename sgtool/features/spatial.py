"""Spatial features of box pairs (RelDN's spatial module), vectorised over many pairs with torch.

Boxes are xyxy in pixels. For a subject box s, an object box o and their union box u:

    delta(a, b)  = ((x_a - x_b) / w_a, (y_a - y_b) / h_a, log(w_b / w_a), log(h_b / h_a))
                   with (x, y) the box centre, as in R-CNN box regression (RelDN, eq. 9)
    coords(b)    = (x1 / W, y1 / H, x2 / W, y2 / H, w * h / (W * H))                   (RelDN, eq. 10)
    spatial(s,o) = [delta(s, o), delta(s, u), delta(u, o), coords(s), coords(o)]  -> 22 numbers (eq. 11)

Pair masks (Motifs / RelDN style) are 2 x M x M binary maps: channel 0 paints the subject box,
channel 1 the object box. frame="union" (default) paints them in the union box's frame (the union
box stretched to M x M, so the masks show the pair's layout at every scale); frame="image" paints
them in the whole image's frame (so they also show where the pair is in the image).
"""
from __future__ import annotations

import torch
from torchvision.ops import box_convert

from sgtool import geometry

SPATIAL_DIM = 22
MIN_SIDE = 1e-3  # pixels; keeps the log and the divisions finite for degenerate boxes


def _as_boxes(boxes: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def union_boxes(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(P, 4) float32 tensor: smallest boxes holding a[i] and b[i] (any array-like input)."""
    return geometry.union_boxes(_as_boxes(a), _as_boxes(b))


def box_deltas(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(P, 4) delta(a, b) = ((x_a - x_b)/w_a, (y_a - y_b)/h_a, log(w_b/w_a), log(h_b/h_a)), centres."""
    ca = box_convert(_as_boxes(a), "xyxy", "cxcywh")
    cb = box_convert(_as_boxes(b), "xyxy", "cxcywh")
    wa, wb = ca[:, 2:].clamp(min=MIN_SIDE), cb[:, 2:].clamp(min=MIN_SIDE)
    return torch.cat([(ca[:, :2] - cb[:, :2]) / wa, torch.log(wb / wa)], dim=1)


def normalized_coords(boxes: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """(P, 5) (x1/W, y1/H, x2/W, y2/H, area fraction); sizes is (P, 2) [W, H] per box (or (2,) for all)."""
    boxes = _as_boxes(boxes)
    sizes = torch.as_tensor(sizes, dtype=torch.float32).reshape(-1, 2).expand(len(boxes), 2)
    scale = sizes.repeat(1, 2)
    area = geometry.box_areas(boxes, legacy=False) / (sizes[:, 0] * sizes[:, 1])
    return torch.cat([boxes / scale, area[:, None]], dim=1)


def spatial_features(subjects: torch.Tensor, objects: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """(P, 22) RelDN spatial vector [delta(s,o), delta(s,u), delta(u,o), coords(s), coords(o)]."""
    s, o = _as_boxes(subjects), _as_boxes(objects)
    u = union_boxes(s, o)
    return torch.cat([box_deltas(s, o), box_deltas(s, u), box_deltas(u, o),
                      normalized_coords(s, sizes), normalized_coords(o, sizes)], dim=1)


def _paint(boxes: torch.Tensor, frames: torch.Tensor, size: int) -> torch.Tensor:
    """(P, size, size) bool: each box painted in its frame box stretched to size x size.

    Pixel columns floor(x1') .. ceil(x2') - 1 are painted (at least one), so a box never vanishes.
    """
    origin, extent = frames[:, :2], (frames[:, 2:] - frames[:, :2]).clamp(min=MIN_SIDE)
    rel = (boxes - origin.repeat(1, 2)) / extent.repeat(1, 2) * size
    lo = rel[:, :2].floor().clamp(0, size - 1)
    hi = torch.maximum(rel[:, 2:].ceil().clamp(0, size), lo + 1)
    grid = torch.arange(size, dtype=torch.float32)
    cols = (grid[None, :] >= lo[:, 0:1]) & (grid[None, :] < hi[:, 0:1])
    rows = (grid[None, :] >= lo[:, 1:2]) & (grid[None, :] < hi[:, 1:2])
    return rows[:, :, None] & cols[:, None, :]


def pair_masks(subjects: torch.Tensor, objects: torch.Tensor, size: int = 64, frame: str = "union",
               sizes: torch.Tensor | None = None) -> torch.Tensor:
    """(P, 2, size, size) float 0/1 masks: subject in channel 0, object in channel 1.

    frame="union": in the pair's union-box frame; frame="image": in the image frame ([0, 0, W, H],
    `sizes` (P, 2) or (2,) [W, H] required).
    """
    s, o = _as_boxes(subjects), _as_boxes(objects)
    if frame == "union":
        frames = union_boxes(s, o)
    elif frame == "image":
        if sizes is None:
            raise ValueError("pair_masks(frame='image') needs the image sizes")
        wh = torch.as_tensor(sizes, dtype=torch.float32).reshape(-1, 2).expand(len(s), 2)
        frames = torch.cat([torch.zeros_like(wh), wh], dim=1)
    else:
        raise ValueError(f"unknown frame {frame!r}: use 'union' or 'image'")
    return torch.stack([_paint(s, frames, size), _paint(o, frames, size)], dim=1).float()
