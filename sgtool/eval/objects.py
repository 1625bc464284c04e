"""Object classification accuracy (SGCls): predicted labels on the ground-truth boxes against the GT labels."""
from __future__ import annotations

import numpy as np

from sgtool.data.graphs import SceneGraphs
from sgtool.data.predictions import Predictions


def object_accuracy(gt: SceneGraphs, predictions: Predictions) -> float | None:
    """Share of GT boxes whose predicted label is the GT label, over the split (micro); None when the
    predictions do not hold the GT boxes in GT order (SGDet detections, another split)."""
    same_layout = (np.array_equal(gt.image_ids, predictions.image_ids)
                   and np.array_equal(gt.box_offsets, predictions.box_offsets)
                   and np.allclose(gt.boxes, predictions.boxes, atol=1e-3))
    if not same_layout or len(gt.labels) == 0:
        return None
    return float(np.mean(predictions.labels == gt.labels))
