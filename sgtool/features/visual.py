"""Visual features of boxes and box pairs: ROIAlign on the frozen detector backbone's finest map.

    feats = detector.features(images)                       # one batch through the frozen backbone
    rois = roi_features(feats, boxes)                        # (sum n_i, C, S, S)
    pf = pair_visual_features(detector, images, boxes, pairs)  # subject / object / union (P, C, S, S)

Boxes are xyxy in original pixels (per image); pairs are image-local (subject, object) indices.
The finest map ('0': stride 4 for tiny and for the FPN backbones) is used for every box.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from sgtool.detect.api import BackboneFeatures, Detector
from sgtool.features.spatial import union_boxes
from sgtool.vision import require_torchvision

DEFAULT_OUTPUT_SIZE = 7


def roi_features(feats: BackboneFeatures, boxes: Sequence[torch.Tensor], output_size: int = DEFAULT_OUTPUT_SIZE,
                 sampling_ratio: int = 2) -> torch.Tensor:
    """(sum n_i, C, S, S) ROIAlign of each image's boxes (original pixels) on the finest backbone map."""
    fmap = feats.maps["0"] if "0" in feats.maps else next(iter(feats.maps.values()))
    scaled = Detector.scale_boxes([b.to(fmap.device) for b in boxes], feats)
    spatial_scale = fmap.shape[-1] / feats.padded_size[1] if feats.padded_size[1] else 1.0
    require_torchvision()
    from torchvision.ops import roi_align

    return roi_align(fmap, scaled, output_size=output_size, spatial_scale=spatial_scale,
                     sampling_ratio=sampling_ratio, aligned=True)


def pair_visual_features(detector: Detector, images: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor],
                         pairs: Sequence[torch.Tensor], output_size: int = DEFAULT_OUTPUT_SIZE) -> dict[str, torch.Tensor]:
    """Subject, object and union ROI features for every pair of every image, in order (one backbone pass)."""
    boxes = [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]
    pairs = [torch.as_tensor(p, dtype=torch.int64).reshape(-1, 2) for p in pairs]
    feats = detector.features(images)
    with torch.inference_mode():
        objects = roi_features(feats, boxes, output_size)
        offsets = torch.tensor([0] + [len(b) for b in boxes[:-1]]).cumsum(0)
        rows = torch.cat([p + offsets[i] for i, p in enumerate(pairs)]) if pairs else torch.zeros((0, 2), dtype=torch.int64)
        unions = [union_boxes(b[p[:, 0]], b[p[:, 1]]) for b, p in zip(boxes, pairs)]
        union = roi_features(feats, unions, output_size)
    return {"subject": objects[rows[:, 0]], "object": objects[rows[:, 1]], "union": union, "boxes": objects}
