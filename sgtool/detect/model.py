"""Faster R-CNN detectors (torchvision) by architecture name; nothing is ever downloaded.

tiny              a small CNN with a top-down path to one stride-4 map, sized for 128-px images (CPU default)
mobilenet-v3-fpn  torchvision's fasterrcnn_mobilenet_v3_large_fpn, from scratch or --weights
resnet50-fpn      torchvision's fasterrcnn_resnet50_fpn, from scratch or --weights
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from sgtool.errors import SgtoolError
from sgtool.flags import flag
from sgtool.vision import require_torchvision

if TYPE_CHECKING:
    from torchvision.models.detection import FasterRCNN

from sgtool.detect.config import ARCHS  # noqa: E402 (the one list)
DEFAULT_SIZES = {"tiny": (128, 128), "mobilenet-v3-fpn": (320, 640), "resnet50-fpn": (600, 1000)}


@dataclass
class DetectorSpec:
    """Everything needed to rebuild a detector's network (stored in its checkpoint)."""

    arch: str
    num_classes: int  # object classes, background excluded
    min_size: int
    max_size: int
    detections_per_image: int = 80
    tiny_channels: int = 32

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise SgtoolError(f"Unknown detector architecture '{arch}' (valid: {', '.join(ARCHS)}).",
                          f"Pass {flag('arch')} tiny on a CPU, or one of the others on a GPU.")


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyBackbone(nn.Module):
    """Strides 4 / 8 / 16, merged top-down (FPN style) into one stride-4 map of `out_channels`."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        c = channels
        self.stem = nn.Sequential(_conv(3, c // 2, 2), _conv(c // 2, c, 2), _conv(c, c))  # stride 4
        self.c3 = nn.Sequential(_conv(c, 2 * c, 2), _conv(2 * c, 2 * c))  # stride 8
        self.c4 = nn.Sequential(_conv(2 * c, 2 * c, 2), _conv(2 * c, 2 * c))  # stride 16
        self.lat2, self.lat3, self.lat4 = nn.Conv2d(c, c, 1), nn.Conv2d(2 * c, c, 1), nn.Conv2d(2 * c, c, 1)
        self.smooth = _conv(c, c)
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        c2 = self.stem(x)
        c3 = self.c3(c2)
        c4 = self.c4(c3)
        p3 = self.lat3(c3) + nn.functional.interpolate(self.lat4(c4), size=c3.shape[-2:], mode="nearest")
        p2 = self.lat2(c2) + nn.functional.interpolate(p3, size=c2.shape[-2:], mode="nearest")
        return OrderedDict([("0", self.smooth(p2))])


def _build_tiny(spec: DetectorSpec) -> FasterRCNN:
    require_torchvision()
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    backbone = TinyBackbone(spec.tiny_channels)
    anchors = AnchorGenerator(sizes=((8, 16, 32, 64),), aspect_ratios=((0.25, 0.5, 1.0, 2.0),))
    c = backbone.out_channels
    return FasterRCNN(
        backbone, num_classes=None, min_size=spec.min_size, max_size=spec.max_size,
        rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(c * 7 * 7, 256), box_predictor=FastRCNNPredictor(256, spec.num_classes + 1),
        rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=150,
        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=150,
        rpn_batch_size_per_image=128, box_batch_size_per_image=32,
        box_detections_per_img=spec.detections_per_image,
    )


def _build_torchvision(spec: DetectorSpec) -> FasterRCNN:
    require_torchvision()
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn, fasterrcnn_resnet50_fpn

    builder = fasterrcnn_mobilenet_v3_large_fpn if spec.arch == "mobilenet-v3-fpn" else fasterrcnn_resnet50_fpn
    return builder(weights=None, weights_backbone=None, num_classes=spec.num_classes + 1,
                   min_size=spec.min_size, max_size=spec.max_size, box_detections_per_img=spec.detections_per_image)


def build_model(spec: DetectorSpec) -> FasterRCNN:
    """A freshly initialised Faster R-CNN for `spec` (set the torch seed first for reproducibility)."""
    check_arch(spec.arch)
    return _build_tiny(spec) if spec.arch == "tiny" else _build_torchvision(spec)


# ---------------------------------------------------------------- --weights

def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: an sgtool detector checkpoint or a plain (torchvision) state dict."""
    path = Path(path)
    if not path.is_file():
        raise SgtoolError(f"The weights file {path} does not exist.", f"Check the path passed to {flag('weights')}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for files that are not checkpoints
        raise SgtoolError(f"{path} is not a PyTorch checkpoint or state dict.",
                          "Pass a .pt/.pth file written by torch.save (a state dict or an sgtool checkpoint).") from exc
    if isinstance(payload, dict) and payload.get("head") == "detector" and isinstance(payload.get("state"), dict):
        payload = payload["state"]  # a model.pt of a detector run before the one checkpoint format
    if isinstance(payload, dict) and payload.get("kind") == "detector" and isinstance(payload.get("model"), dict):
        payload = payload["model"]  # a model.pt of a detector run (sgtool/checkpoint.py)
    if isinstance(payload, dict) and isinstance(payload.get("model"), dict):
        payload = payload["model"]
    if not isinstance(payload, dict) or not any(isinstance(v, torch.Tensor) for v in payload.values()):
        raise SgtoolError(f"{path} holds no model weights.", "Pass a state dict or an sgtool detector checkpoint.")
    return {k: v for k, v in payload.items() if isinstance(v, torch.Tensor)}


def load_weights(model: FasterRCNN, path: Path) -> int:
    """Copy every tensor whose name and shape fit (a whole detector, or a classification backbone)."""
    state = read_state_dict(path)
    own = model.state_dict()
    candidates = [state, {f"backbone.body.{k}": v for k, v in state.items()}, {f"backbone.{k}": v for k, v in state.items()}]
    best = max(({k: v for k, v in c.items() if k in own and own[k].shape == v.shape} for c in candidates), key=len)
    if not best:
        raise SgtoolError(f"No tensor in {path} fits the {type(model.backbone).__name__} detector.",
                          f"Pass weights of the same architecture as {flag('arch')}.")
    model.load_state_dict(best, strict=False)
    return len(best)
