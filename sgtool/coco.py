"""COCO JSON export of ground truth and detections, and pycocotools' COCOeval on them (a metric: the detector
(detect/train.py) and the evaluators (eval/siblings.py) both score with it)."""
from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sgtool import atomic
from sgtool.data.graphs import SceneGraphs
from sgtool.geometry import xyxy_to_xywh


def _xywh(boxes: np.ndarray) -> np.ndarray:
    return xyxy_to_xywh(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))


def categories(class_names: Sequence[str]) -> list[dict]:
    return [{"id": i + 1, "name": name, "supercategory": "object"} for i, name in enumerate(class_names)]


def gt_to_coco(graphs: SceneGraphs, class_names: Sequence[str]) -> dict:
    """A COCO ground-truth dict: image ids are the dataset's, category ids its 1-based labels."""
    owner = graphs.image_of_box()
    xywh = _xywh(graphs.boxes)
    images = [{"id": int(graphs.image_ids[i]), "width": int(graphs.widths[i]), "height": int(graphs.heights[i]),
               "file_name": (graphs.files[i] if graphs.files else None) or f"{int(graphs.image_ids[i])}.jpg"}
              for i in range(graphs.num_images)]
    annotations = [{"id": row + 1, "image_id": int(graphs.image_ids[owner[row]]), "category_id": int(graphs.labels[row]),
                    "bbox": [round(float(v), 3) for v in xywh[row]], "area": float(xywh[row, 2] * xywh[row, 3]),
                    "iscrowd": 0} for row in range(len(graphs.labels))]
    return {"info": {"description": "sgtool ground truth"}, "images": images, "annotations": annotations,
            "categories": categories(class_names)}


def detections_to_coco(image_ids: Sequence[int], boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                       scores: Sequence[np.ndarray]) -> list[dict]:
    """COCO result list (one entry per detection) from per-image xyxy boxes, 1-based labels, scores."""
    out = []
    for image_id, b, l, s in zip(image_ids, boxes, labels, scores):
        for box, label, score in zip(_xywh(b), np.asarray(l), np.asarray(s)):
            out.append({"image_id": int(image_id), "category_id": int(label),
                        "bbox": [round(float(v), 3) for v in box], "score": round(float(score), 5)})
    return out


def write_coco(folder: Path, split: str, gt: dict, detections: list[dict]) -> tuple[Path, Path]:
    gt_path, dt_path = folder / f"gt_{split}.json", folder / f"dt_{split}.json"
    atomic.write_json(gt_path, gt)
    atomic.write_json(dt_path, detections)
    return gt_path, dt_path


def evaluate_coco(gt_path: Path, dt_path: Path, class_names: Sequence[str]) -> dict:
    """mAP@[.5:.95], mAP@.5, mAP@.75 and per-class AP (area all, 100 detections) with pycocotools."""
    return coco_metrics(_read_json(gt_path), _read_json(dt_path), class_names)


def coco_metrics(gt: dict, detections: list[dict], class_names: Sequence[str]) -> dict:
    """`evaluate_coco` on a COCO ground-truth dict and result list held in memory (left unchanged:
    pycocotools writes into the dicts it is given, so it gets copies)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not detections:
        return _empty_metrics(class_names)
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = copy.deepcopy(gt)
        truth.createIndex()
        dt = truth.loadRes(copy.deepcopy(detections))
        evaluator = COCOeval(truth, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {"mAP": float(stats[0]), "mAP@.5": float(stats[1]), "mAP@.75": float(stats[2]),
            "AP_per_class": _per_class(evaluator, class_names), "AP@.5_per_class": _per_class(evaluator, class_names, 0)}


def _per_class(evaluator, class_names: Sequence[str], iou_index: int | None = None) -> dict[str, float | None]:
    precision = evaluator.eval["precision"]  # [T IoUs, R recalls, K classes, A areas, M maxDets]
    if iou_index is not None:
        precision = precision[iou_index:iou_index + 1]
    out: dict[str, float | None] = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        valid = p[p > -1]
        out[class_names[cat_id - 1]] = float(valid.mean()) if valid.size else None
    return out


def _empty_metrics(class_names: Sequence[str]) -> dict:
    zeros = {name: 0.0 for name in class_names}
    return {"mAP": 0.0, "mAP@.5": 0.0, "mAP@.75": 0.0, "AP_per_class": zeros, "AP@.5_per_class": dict(zeros)}


def _read_json(path: Path) -> list:
    import json

    return json.loads(Path(path).read_text(encoding="utf-8"))
