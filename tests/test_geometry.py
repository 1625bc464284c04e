"""sgtool/geometry.py: the one copy of the box operations, against torchvision and hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from sgtool.geometry import (
    box_areas, box_gap, box_sides, boxes_overlap, clip_boxes, overlap_sides, rowwise_iou, union_boxes,
    xywh_to_xyxy, xyxy_to_xywh,
)


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 100, size=(n, 2))
    return np.concatenate([xy, xy + rng.uniform(0, 40, size=(n, 2))], axis=1)


def test_plain_iou_is_torchvisions_row_by_row():
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 300), _random_boxes(rng, 300)
    expected = box_iou(torch.from_numpy(a), torch.from_numpy(b)).diagonal().numpy()
    np.testing.assert_allclose(rowwise_iou(a, b, legacy=False), expected, rtol=1e-12, atol=0)


def test_legacy_iou_counts_the_last_pixel():
    a = np.array([[0, 0, 9, 9], [0, 0, 9, 9], [0, 0, 0, 0]], dtype=np.float32)
    b = np.array([[5, 5, 14, 14], [10, 0, 19, 9], [0, 0, 0, 0]], dtype=np.float32)
    # legacy: areas 10 x 10, intersection 5 x 5; boxes side by side share no pixel; a 1-pixel box is itself
    assert rowwise_iou(a, b, legacy=True).tolist() == [25 / 175, 0.0, 1.0]
    # plain: areas 9 x 9, intersection 4 x 4; a zero-area pair has IoU 0, not NaN
    assert rowwise_iou(a, b, legacy=False).tolist() == [16 / 146, 0.0, 0.0]
    assert rowwise_iou(a, b, legacy=True).dtype == np.float64
    assert box_areas(a, legacy=True).tolist() == [100, 100, 1] and box_areas(a, legacy=False).tolist() == [81, 81, 0]


def test_overlap_broadcasts_from_rows_to_all_pairs():
    rng = np.random.default_rng(1)
    boxes = _random_boxes(rng, 12)
    all_pairs = boxes_overlap(boxes[:, None], boxes[None, :])
    i, j = np.meshgrid(np.arange(12), np.arange(12), indexing="ij")
    assert np.array_equal(all_pairs, boxes_overlap(boxes[i.ravel()], boxes[j.ravel()]).reshape(12, 12))
    assert np.array_equal(all_pairs, box_iou(torch.from_numpy(boxes), torch.from_numpy(boxes)).numpy() > 0)
    touching = np.array([[0.0, 0, 10, 10]]), np.array([[10.0, 0, 20, 10]])
    assert not boxes_overlap(*touching)[0]
    iw, ih = overlap_sides(*touching)
    assert (iw[0], ih[0]) == (0.0, 10.0)


def test_union_gap_sides_and_formats():
    a = np.array([[0.0, 0, 1, 1], [2, 2, 8, 4]])
    b = np.array([[4.0, 5, 6, 6], [3, 1, 5, 9]])
    assert union_boxes(a, b).tolist() == [[0, 0, 6, 6], [2, 1, 8, 9]]
    assert union_boxes(torch.from_numpy(a), torch.from_numpy(b)).tolist() == [[0, 0, 6, 6], [2, 1, 8, 9]]
    assert box_gap(a, b).tolist() == [5.0, 0.0]  # 3 right and 4 down; overlapping boxes are 0 apart
    assert box_sides(a).tolist() == [1.0, 2.0]
    assert np.array_equal(xywh_to_xyxy(xyxy_to_xywh(a)), a) and xyxy_to_xywh(a)[1].tolist() == [2, 2, 6, 2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_keeps_dtype_and_counts_boxes_moved_beyond_tolerance(dtype):
    boxes = np.array([[-0.5, 0, 10, 10], [-3, 0, 12, 10], [1, 1, 2, 2]], dtype=dtype)
    widths, heights = np.array([10, 10, 10], dtype), np.array([10, 10, 10], dtype)
    clipped, moved = clip_boxes(boxes, widths, heights, tolerance=1.0)
    assert clipped.dtype == dtype and moved == 1
    assert clipped.tolist() == [[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 2, 2]]
    assert clip_boxes(boxes, widths, heights)[1] == 2
    square, _ = clip_boxes(np.array([[-2, 3, 70, 64]]), 64, 64)
    assert square.tolist() == [[0, 3, 64, 64]] and square.dtype == np.int64
