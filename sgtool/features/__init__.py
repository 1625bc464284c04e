"""Features of boxes and box pairs for the relation heads.

spatial.py  RelDN box deltas, normalised coordinates, union boxes, 2 x M x M pair masks (no pixels needed)
visual.py   ROIAlign of subject / object / union boxes on a frozen detector backbone
cache.py    `--cache-features`: a split's ROI features stored once in h5
"""
from __future__ import annotations

from sgtool.features.spatial import (
    SPATIAL_DIM, box_deltas, normalized_coords, pair_masks, spatial_features, union_boxes,
)

__all__ = ["SPATIAL_DIM", "box_deltas", "normalized_coords", "pair_masks", "spatial_features", "union_boxes"]
