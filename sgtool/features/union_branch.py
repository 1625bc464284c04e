"""RelDN's predicate branch (conv_body_rel): a second copy of the detector's backbone, trained end to end.

    branch = UnionBranch(detector, grid=2)                       # weights copied from the detector (RelDN §5)
    inputs = branch.inputs(images, boxes, pairs)                 # one batch: resized images + union ROIs
    vectors = branch(inputs["union_images"], inputs["union_rois"])   # (M, C * grid**2), differentiable

The union box of each pair (the tightest box around subject and object) is ROIAligned at 7 x 7 on
the branch's finest map and average-pooled to grid x grid cells, exactly as the frozen source pools
the detector's map, so `frozen` and `trained` give vectors of the same size. Batch norm keeps the
detector's statistics (frozen, as Detectron's backbones are when fine-tuned); the convolutions train.
Images go through the detector's own transform (resize and normalisation), which has no weights.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from sgtool.detect.data import to_float
from sgtool.features.spatial import union_boxes
from sgtool.features.visual import DEFAULT_OUTPUT_SIZE
from sgtool.vision import require_torchvision


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """The module with every BatchNorm2d replaced by a FrozenBatchNorm2d holding its statistics."""
    require_torchvision()
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)
    return module


class UnionBranch(nn.Module):
    """Union-box ROI vectors from a trainable copy of a detector's backbone."""

    def __init__(self, detector, grid: int = 2) -> None:
        super().__init__()
        self.backbone = freeze_batch_norm(copy.deepcopy(detector.model.backbone)).float()
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(True)
        self.transform = copy.deepcopy(detector.model.transform)  # resize + normalise, no weights
        self.grid = grid
        self.dim = int(detector.out_channels) * grid * grid

    def inputs(self, images: Sequence[Tensor], subject_boxes: np.ndarray, object_boxes: np.ndarray,
               pair_slot: np.ndarray) -> dict[str, Tensor]:
        """Network inputs of one batch: the images (B, 3, H, W) after the detector's transform and the
        (M, 5) union ROIs [slot, x1, y1, x2, y2] in those pixels; boxes (M, 4) xyxy original pixels,
        pair_slot (M,) the position in `images` of each pair's image."""
        device = next(self.backbone.parameters()).device
        batch = [to_float(im).to(device) for im in images]
        self.transform.eval()
        with torch.no_grad():
            image_list, _ = self.transform(batch)
        scale = torch.tensor([[new[1] / im.shape[-1], new[0] / im.shape[-2]] * 2
                              for new, im in zip(image_list.image_sizes, batch)], dtype=torch.float32).reshape(-1, 4)
        slot = torch.as_tensor(np.asarray(pair_slot), dtype=torch.int64)
        union = union_boxes(torch.as_tensor(subject_boxes), torch.as_tensor(object_boxes)) * scale[slot]
        rois = torch.cat([slot[:, None].float(), union], 1)
        return {"union_images": image_list.tensors, "union_rois": rois.to(device)}

    def forward(self, images: Tensor, rois: Tensor) -> Tensor:
        maps = self.backbone(images)
        fmap = maps["0"] if "0" in maps else next(iter(maps.values()))
        require_torchvision()
        from torchvision.ops import roi_align

        pooled = roi_align(fmap, rois, output_size=DEFAULT_OUTPUT_SIZE, spatial_scale=fmap.shape[-1] / images.shape[-1],
                           sampling_ratio=2, aligned=True)
        return nn.functional.adaptive_avg_pool2d(pooled, self.grid).flatten(1)

    @torch.no_grad()
    def encode(self, image_of: Callable[[int], Tensor], image_ids: np.ndarray, pair_image: np.ndarray,
               subject_boxes: np.ndarray, object_boxes: np.ndarray, images_per_step: int = 16) -> Tensor:
        """(M, dim) vectors of pairs, a few images at a time, in the order of the pairs; pair_image (M,)
        indexes image_ids."""
        out = torch.zeros(len(pair_image), self.dim)
        used = np.unique(pair_image)
        slot_of = np.full(len(image_ids), -1, dtype=np.int64)
        for start in range(0, len(used), images_per_step):
            step = used[start:start + images_per_step]
            slot_of[step] = np.arange(len(step))
            rows = np.flatnonzero(np.isin(pair_image, step))
            inputs = self.inputs([image_of(int(image_ids[i])) for i in step], subject_boxes[rows], object_boxes[rows],
                                 slot_of[pair_image[rows]])
            out[rows] = self(inputs["union_images"], inputs["union_rois"]).float().cpu()
        return out
