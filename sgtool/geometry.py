"""Box geometry, the one copy: xyxy boxes in pixels, row-wise over numpy arrays.

Two IoU conventions are in use. The plain one is torchvision's (`torchvision.ops.box_iou`): area
(x2 - x1)(y2 - y1). The legacy one is the community SGG evaluator's (Fast R-CNN's `bbox_overlaps`):
boxes hold their last pixel, area (x2 - x1 + 1)(y2 - y1 + 1); the relation metrics keep it so their
numbers compare with published ones (docs/evaluation.md). torchvision's IoU is pairwise (an N x M matrix
of tensors); every IoU here is row-wise (a[k] with b[k]) on the numpy arrays the data and the
evaluator hold, so it stays numpy. `overlap_sides` broadcasts over leading axes, so the same
function serves row-wise (N, 4) and all-pairs (k, n, 1, 4) x (k, 1, n, 4) calls.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def overlap_sides(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Width and height of the intersection of a and b (negative: how far apart), broadcast over leading axes."""
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    return iw, ih


def boxes_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Do a and b share a positive area (the community's `bbox_overlaps(to_move=0) > 0`)."""
    iw, ih = overlap_sides(a, b)
    return (iw > 0) & (ih > 0)


def box_areas(boxes: np.ndarray, legacy: bool) -> np.ndarray:
    """Areas (numpy arrays or torch tensors); legacy = the +1-pixel convention (x2 - x1 + 1)(y2 - y1 + 1)."""
    one = 1.0 if legacy else 0.0
    return (boxes[..., 2] - boxes[..., 0] + one) * (boxes[..., 3] - boxes[..., 1] + one)


def rowwise_iou(a: np.ndarray, b: np.ndarray, legacy: bool) -> np.ndarray:
    """IoU of a[k] with b[k] in float64 (0 where the union is empty); legacy = the +1-pixel convention."""
    a = a.astype(np.float64, copy=False)
    b = b.astype(np.float64, copy=False)
    one = 1.0 if legacy else 0.0
    iw, ih = overlap_sides(a, b)
    inter = np.clip(iw + one, 0.0, None) * np.clip(ih + one, 0.0, None)
    union = box_areas(a, legacy) + box_areas(b, legacy) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def union_boxes(a: Any, b: Any) -> Any:
    """Smallest box holding a[k] and b[k]; numpy arrays or torch tensors (the result is of the same kind)."""
    if isinstance(a, np.ndarray):
        return np.concatenate([np.minimum(a[:, :2], b[:, :2]), np.maximum(a[:, 2:], b[:, 2:])], axis=1)
    import torch

    return torch.cat([torch.minimum(a[:, :2], b[:, :2]), torch.maximum(a[:, 2:], b[:, 2:])], dim=1)


def box_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between the nearest points of a and b (0 when they touch or overlap), broadcast."""
    dx = np.maximum(0, np.maximum(a[..., 0] - b[..., 2], b[..., 0] - a[..., 2]))
    dy = np.maximum(0, np.maximum(a[..., 1] - b[..., 3], b[..., 1] - a[..., 3]))
    return np.hypot(dx, dy)


def box_sides(boxes: np.ndarray) -> np.ndarray:
    """min(width, height) of each box."""
    return np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def clip_boxes(boxes: np.ndarray, widths: Any, heights: Any, tolerance: Any = 0.0) -> tuple[np.ndarray, int]:
    """Boxes clipped to [0, W] x [0, H] (per-box arrays or one size for all) and how many moved by
    more than tolerance (per box or one value). The result's dtype is that of boxes and the sizes."""
    limit = np.stack(np.broadcast_arrays(widths, heights, widths, heights), axis=-1)
    clipped = np.clip(boxes, 0, limit)
    moved = (np.abs(clipped - boxes) > np.asarray(tolerance).reshape(-1, 1)).any(axis=1)
    return clipped, int(moved.sum())


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
