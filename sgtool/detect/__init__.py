"""Object detection for SGCls / SGDet: torchvision Faster R-CNN build, train, infer, COCO evaluation.

The relation heads use `load_detector(ws, run, vocab)` and the returned `Detector`'s
`detect(images)`, `classify_boxes(images, boxes)` and `features(images)` (see api.py).
"""
from __future__ import annotations

from sgtool.detect.api import BackboneFeatures, Detections, Detector, latest_detector, load_detector
from sgtool.detect.data import SplitImages, read_image, require_images
from sgtool.detect.model import ARCHS, DetectorSpec, build_model

__all__ = ["ARCHS", "BackboneFeatures", "Detections", "Detector", "DetectorSpec", "SplitImages", "build_model",
           "latest_detector", "load_detector", "read_image", "require_images"]
