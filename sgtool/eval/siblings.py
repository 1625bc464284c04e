"""The hit-table engine's sibling evaluators, on the same protocol: `reset()`, `process(inputs, outputs)`
per chunk of images, `evaluate()`.

- `PointGraphEvaluator`: triplet precision / recall / F1 of the auto-encoder's point graphs
  (`point_graph.triplet_scores`); the counts behind them are summed over chunks.
- `ConfusionEvaluator`: the confusion-set measures (`confusion.confusion_metrics`, or
  `sgdet_confusion_metrics` with `sgdet=True`); every measure but the APs is taken per image, the APs
  keep each pair's score and label until `evaluate()`.
- `CocoEvaluator`: box mAP with pycocotools (`sgtool.coco.coco_metrics`, what `train-detector` reports);
  the COCO ground truth and result lists grow chunk by chunk, pycocotools runs once in `evaluate()`.

Each gives the numbers of the whole-split function it wraps, whatever the chunks (tests/test_eval_siblings.py).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sgtool.data.graphs import SceneGraphs
from sgtool.data.predictions import Predictions
from sgtool.coco import categories, coco_metrics, detections_to_coco, gt_to_coco
from sgtool.eval.confusion import (
    IOU, confusion_from_parts, confusion_parts, detection_ap_from_hits, detection_hits, match_detections, project_to_gt,
)
from sgtool.eval.metrics import check
from sgtool.eval.point_graph import DEFAULT_THRESHOLD, PointGraphs, triplet_scores

COUNTS = ("hits", "predicted", "ground_truth", "self_loops")


class PointGraphEvaluator:
    """Triplet precision / recall / F1 of point graphs (point_graph.py), summed over every chunk processed.

    `process(inputs, outputs)`: the ground-truth and predicted `PointGraphs` of the same images."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, matching: str = "nearest") -> None:
        self.threshold, self.matching = threshold, matching
        self.reset()

    def reset(self) -> None:
        self.counts = dict.fromkeys(COUNTS, 0)

    def process(self, inputs: PointGraphs, outputs: PointGraphs) -> None:
        scores = triplet_scores(outputs, inputs, self.threshold, self.matching)
        for name in COUNTS:
            self.counts[name] += scores[name]

    def evaluate(self) -> dict[str, float]:
        c = self.counts
        precision = c["hits"] / c["predicted"] if c["predicted"] else 0.0
        recall = c["hits"] / c["ground_truth"] if c["ground_truth"] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, **c}


class ConfusionEvaluator:
    """The confusion-set measures of the link `predicates` (confusion.py) over the images processed.

    `process(inputs, outputs)`: the ground truth (`SceneGraphs`) and the `Predictions` of the same images
    (PredCls: every ordered pair of the GT boxes; `sgdet=True`: detections, seen through
    `project_to_gt`, each AP the detection AP)."""

    def __init__(self, predicates: Sequence[int], sgdet: bool = False, iou_threshold: float = IOU) -> None:
        self.predicates, self.sgdet, self.iou_threshold = [int(e) for e in predicates], sgdet, iou_threshold
        self.reset()

    def reset(self) -> None:
        self.parts: list[dict] = []
        self.claims: dict[int, list[tuple]] = {e: [] for e in self.predicates}
        self.detected: list[np.ndarray] = []

    def process(self, inputs: SceneGraphs, outputs: Predictions) -> None:
        if not self.sgdet:
            self.parts.append(confusion_parts(inputs, outputs, self.predicates))
            return
        self.parts.append(confusion_parts(inputs, project_to_gt(inputs, outputs, self.iou_threshold), self.predicates))
        for e in self.predicates:
            self.claims[e].append(detection_hits(inputs, outputs, e, self.iou_threshold))
        self.detected.append(match_detections(inputs, outputs, self.iou_threshold) >= 0)

    def evaluate(self) -> dict[str, float]:
        out = confusion_from_parts(self.parts, self.predicates)
        if self.sgdet:
            for e, chunks in self.claims.items():
                scores, claims, relations = zip(*chunks) if chunks else ((np.zeros(0),), (np.zeros(0, bool),), (0,))
                out[f"AP-{e}"] = detection_ap_from_hits(np.concatenate(scores), np.concatenate(claims), sum(relations))
            detected = np.concatenate(self.detected) if self.detected else np.zeros(0, bool)
            out["detected_boxes"] = float(detected.mean()) if len(detected) else 0.0
        return out


class CocoEvaluator:
    """COCO box mAP@[.5:.95], mAP@.5, mAP@.75 and per-class AP (pycocotools) of the images processed.

    `process(inputs, outputs)`: the ground truth (`SceneGraphs`: boxes, labels, image ids and sizes) and
    the detections (`Predictions`: boxes, labels, scores) of the same images; `class_names[label - 1]`
    names label `label`."""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        self.reset()

    def reset(self) -> None:
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.detections: list[dict] = []

    def process(self, inputs: SceneGraphs, outputs: Predictions) -> None:
        check(np.array_equal(inputs.image_ids, outputs.image_ids),
              "The detections and the ground truth given to CocoEvaluator are not of the same images.",
              "Give both of one chunk of images, in the same order.")
        truth, shift = gt_to_coco(inputs, self.class_names), len(self.annotations)
        self.images += truth["images"]
        self.annotations += [{**a, "id": a["id"] + shift} for a in truth["annotations"]]  # ids unique over the split
        cuts = outputs.box_offsets[1:-1]
        self.detections += detections_to_coco(outputs.image_ids, np.split(outputs.boxes, cuts),
                                              np.split(outputs.labels, cuts), np.split(outputs.scores, cuts))

    def evaluate(self) -> dict:
        truth = {"info": {"description": "sgtool ground truth"}, "images": self.images,
                 "annotations": self.annotations, "categories": categories(self.class_names)}
        return coco_metrics(truth, self.detections, self.class_names)


__all__ = ["ConfusionEvaluator", "CocoEvaluator", "PointGraphEvaluator"]
