"""Spatial features (RelDN box deltas, normalised coordinates, masks) and ROI visual features."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sgtool.detect.api import Detector
from sgtool.detect.model import DetectorSpec, build_model
from sgtool.data.sgg_h5 import Vocabulary
from sgtool.features import SPATIAL_DIM, box_deltas, normalized_coords, pair_masks, spatial_features, union_boxes
from sgtool.features.visual import pair_visual_features, roi_features

S = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), 10 x 20
O = torch.tensor([[10.0, 0.0, 30.0, 10.0]])  # centre (20, 5), 20 x 10
IMAGE = torch.tensor([40.0, 20.0])  # W, H


def test_union_box():
    assert union_boxes(S, O).tolist() == [[0.0, 0.0, 30.0, 20.0]]


def test_box_deltas_follow_reldn():
    ln2, ln3 = math.log(2), math.log(3)
    torch.testing.assert_close(box_deltas(S, O), torch.tensor([[-1.5, 0.25, ln2, -ln2]]))
    u = union_boxes(S, O)
    torch.testing.assert_close(box_deltas(S, u), torch.tensor([[-1.0, 0.0, ln3, 0.0]]))
    torch.testing.assert_close(box_deltas(u, O), torch.tensor([[-5 / 30, 0.25, math.log(2 / 3), -ln2]]))
    assert box_deltas(O, O).abs().max() == 0


def test_normalized_coords():
    torch.testing.assert_close(normalized_coords(torch.cat([S, O]), IMAGE),
                               torch.tensor([[0.0, 0.0, 0.25, 1.0, 0.25], [0.25, 0.0, 0.75, 0.5, 0.25]]))


def test_spatial_vector_layout_and_vectorised_rows():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (200, 2, 2))
    wh = rng.uniform(1, 40, (200, 2, 2))
    boxes = torch.tensor(np.concatenate([xy, xy + wh], axis=2), dtype=torch.float32)
    s, o = boxes[:, 0], boxes[:, 1]
    sizes = torch.full((200, 2), 100.0)
    feats = spatial_features(s, o, sizes)
    assert feats.shape == (200, SPATIAL_DIM) and torch.isfinite(feats).all()
    for i in (0, 57, 199):  # every row equals the one-pair computation
        one = spatial_features(s[i:i + 1], o[i:i + 1], sizes[i])
        torch.testing.assert_close(feats[i:i + 1], one)
    u = union_boxes(s, o)
    torch.testing.assert_close(feats[:, 4:8], box_deltas(s, u))
    torch.testing.assert_close(feats[:, 17:22], normalized_coords(o, sizes))


def test_masks_in_union_frame():
    masks = pair_masks(S, O, size=6)  # union 30 x 20 -> 6 x 6: x * 0.2, y * 0.3
    assert masks.shape == (1, 2, 6, 6) and set(masks.unique().tolist()) == {0.0, 1.0}
    expected_s = torch.zeros(6, 6)
    expected_s[:, :2] = 1
    expected_o = torch.zeros(6, 6)
    expected_o[:3, 2:] = 1
    assert torch.equal(masks[0, 0], expected_s) and torch.equal(masks[0, 1], expected_o)


def test_masks_in_image_frame_and_tiny_boxes():
    masks = pair_masks(S, O, size=4, frame="image", sizes=IMAGE)  # 40 x 20 -> 4 x 4
    assert masks[0, 0].sum() == 4 and masks[0, 0][:, 0].sum() == 4  # x 0..10 -> column 0, all rows
    assert masks[0, 1][:2, 1:3].sum() == 4 and masks[0, 1].sum() == 4  # x 10..30 -> cols 1-2, y 0..10 -> rows 0-1
    speck = torch.tensor([[5.0, 5.0, 5.1, 5.1]])
    assert pair_masks(speck, S, size=64)[0, 0].sum() == 1  # never vanishes
    with pytest.raises(ValueError):
        pair_masks(S, O, frame="image")


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    spec = DetectorSpec("tiny", 3, 128, 128)
    return Detector(build_model(spec), spec, Vocabulary(["a", "b", "c"], ["p"]))


def test_roi_and_pair_features(detector):
    torch.manual_seed(1)
    images = [torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8), torch.rand(3, 64, 64)]
    boxes = [torch.tensor([[0.0, 0.0, 20.0, 30.0], [30.0, 10.0, 60.0, 40.0]]), torch.tensor([[5.0, 5.0, 50.0, 50.0]])]
    feats = detector.features(images)
    assert feats.scales == [(2.0, 2.0), (2.0, 2.0)] and feats.padded_size == (128, 128)
    rois = roi_features(feats, boxes, output_size=5)
    assert rois.shape == (3, detector.out_channels, 5, 5)
    pairs = [torch.tensor([[0, 1], [1, 0]]), torch.tensor([[0, 0]])]
    pf = pair_visual_features(detector, images, boxes, pairs, output_size=5)
    assert pf["subject"].shape == pf["object"].shape == pf["union"].shape == (3, detector.out_channels, 5, 5)
    torch.testing.assert_close(pf["subject"][0], rois[0])
    torch.testing.assert_close(pf["object"][0], rois[1])
    torch.testing.assert_close(pf["union"][2], rois[2])  # a box paired with itself: union == the box
    torch.testing.assert_close(pf["union"][0], pf["union"][1])  # union is symmetric


def test_classify_boxes_and_detect_shapes(detector):
    torch.manual_seed(2)
    images = [torch.rand(3, 64, 80), torch.rand(3, 48, 48)]
    probs = detector.classify_boxes(images, [torch.tensor([[0.0, 0.0, 20.0, 20.0]]), torch.zeros((0, 4))])
    assert probs[0].shape == (1, 4) and probs[1].shape == (0, 4)
    torch.testing.assert_close(probs[0].sum(1), torch.ones(1))
    dets = detector.detect(images, top_n=5, score_thresh=0.0)
    assert len(dets) == 2 and all(len(d.boxes) <= 5 and d.boxes.shape[1:] == (4,) for d in dets)
    assert detector.model.roi_heads.detections_per_img == 80  # restored
