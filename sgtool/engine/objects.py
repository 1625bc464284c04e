"""Where a task's objects come from: ground truth (PredCls), the detector's classifier on GT
boxes (SGCls), or the detector's detections (SGDet)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sgtool.config import resolve_device
from sgtool.data.graphs import SceneGraphs, offsets_from_counts
from sgtool.data.prepared import PreparedDataset
from sgtool.detect import Detector, SplitImages, load_detector
from sgtool.errors import SgtoolError
from sgtool.flags import flag
from sgtool.heads import ObjectPredictions, ObjectSource, gt_objects
from sgtool.ui import SILENT, Reporter
from sgtool.workspace import Workspace

IMAGES_PER_STEP = 64


def classified_objects(detector: Detector, images: Sequence[torch.Tensor], graphs: SceneGraphs) -> ObjectPredictions:
    """SGCls: GT boxes, labels and scores from the detector's box classifier (best non-background class)."""
    boxes = [torch.as_tensor(graphs.boxes[a:b]) for a, b in zip(graphs.box_offsets[:-1], graphs.box_offsets[1:])]
    probs = detector.classify_boxes(images, boxes)
    flat = torch.cat(probs).numpy() if probs else np.zeros((0, detector.num_classes + 1), np.float32)
    labels = flat[:, 1:].argmax(1) + 1 if len(flat) else np.zeros(0, np.int64)
    scores = flat[np.arange(len(flat)), labels] if len(flat) else np.zeros(0, np.float32)
    return ObjectPredictions(graphs.image_ids, graphs.box_offsets, graphs.boxes, labels.astype(np.int64),
                             scores.astype(np.float32), labels_given=False, class_scores=flat.astype(np.float32))


def detected_objects(detector: Detector, images: Sequence[torch.Tensor], image_ids: np.ndarray,
                     max_boxes: int = 80) -> ObjectPredictions:
    """SGDet: the detector's boxes (class-wise NMS, the top max_boxes by score)."""
    detections = detector.detect(images, top_n=max_boxes)
    counts = np.array([len(d.labels) for d in detections], dtype=np.int64)

    def stack(part: int, shape: tuple, dtype) -> np.ndarray:
        arrays = [d[part].numpy() for d in detections]
        return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(shape, dtype)

    return ObjectPredictions(np.asarray(image_ids), offsets_from_counts(counts), stack(0, (0, 4), np.float32),
                             stack(1, (0,), np.int64), stack(2, (0,), np.float32), detected=True, labels_given=False)


def concat_objects(parts: list[ObjectPredictions]) -> ObjectPredictions:
    counts = np.concatenate([np.diff(p.box_offsets) for p in parts])
    class_scores = (np.concatenate([p.class_scores for p in parts])
                    if all(p.class_scores is not None for p in parts) else None)
    return ObjectPredictions(np.concatenate([p.image_ids for p in parts]), offsets_from_counts(counts),
                             np.concatenate([p.boxes for p in parts]), np.concatenate([p.labels for p in parts]),
                             np.concatenate([p.scores for p in parts]), parts[0].detected,
                             parts[0].labels_given, class_scores)


def detector_source(detector: Detector, prepared: PreparedDataset, task: str,
                    reporter: Reporter = SILENT) -> ObjectSource:
    """An ObjectSource that runs the detector over a split of the prepared dataset, in steps.

    Results are kept per split, so validating every epoch runs the detector once.
    """
    seen: dict[bytes, ObjectPredictions] = {}

    def source(graphs: SceneGraphs) -> ObjectPredictions:
        key = graphs.image_ids.tobytes()
        if key not in seen:
            seen[key] = run_detector(graphs)
        return seen[key]

    def run_detector(graphs: SceneGraphs) -> ObjectPredictions:
        images = SplitImages(prepared.path, graphs)
        parts = []
        steps = range(0, max(graphs.num_images, 1), IMAGES_PER_STEP)
        for start in reporter.track(steps, len(steps), f"{task} objects"):
            subset = graphs.select(np.arange(start, min(start + IMAGES_PER_STEP, graphs.num_images)))
            batch = [images[i] for i in range(start, start + subset.num_images)]
            parts.append(classified_objects(detector, batch, subset) if task == "sgcls"
                         else detected_objects(detector, batch, subset.image_ids))
        return concat_objects(parts)

    return source


def unlabelled_gt_objects(graphs: SceneGraphs) -> ObjectPredictions:
    """SGCls for a head that labels the objects itself (phrase classification): the ground-truth boxes
    with score 1 and no label information (every label a placeholder 1, labels_given False)."""
    n = len(graphs.labels)
    return ObjectPredictions(graphs.image_ids, graphs.box_offsets, graphs.boxes, np.ones(n, np.int64),
                             np.ones(n, np.float32), labels_given=False)


def labels_from_boxes(head: type) -> bool:
    """Whether the head labels objects from the boxes alone (SGCls then needs no detector for its objects)."""
    return bool(getattr(head, "labels_objects", False)) and not getattr(head, "reads_class_scores", False)


def object_source(ws: Workspace, prepared: PreparedDataset, task: str, detector_run: str | None = None,
                  device: str = "cpu", reporter: Reporter = SILENT,
                  boxes_alone: bool = False) -> tuple[ObjectSource, str | None]:
    """The task's object source and the detector run it uses (None in PredCls, and in SGCls with
    `boxes_alone`, for a head that labels the objects from the GT boxes alone: annotation-only data too)."""
    if task == "predcls":
        return gt_objects, None
    if task == "sgcls" and boxes_alone:
        return unlabelled_gt_objects, None
    if not prepared.has_images:
        raise SgtoolError(f"{flag('task')} {task} needs images, and the dataset '{prepared.name}' holds annotations only.",
                          f"Use {flag('task')} predcls on annotation-only datasets.")
    detector = load_detector(ws, detector_run, prepared.vocab, resolve_device(device), dataset=f"the dataset '{prepared.name}'")
    return detector_source(detector, prepared, task, reporter), detector.run
