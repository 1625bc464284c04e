"""Prediction files from any code base, read into sgtool's arrays (docs/evaluate-your-predictions.md).

- `sgb`: the community benchmark's `eval_results.pytorch` (Scene-Graph-Benchmark.pytorch, PySGG):
  {"groundtruths": [BoxList], "predictions": [BoxList]}, read by safe_pickle (nothing in it runs).
- `sgbench`: SGBench's JSON: per image `id`, `bboxes` xyxy, `categories`, ranked `triplets`
  [subject, object, predicate] (0-based ids, SGBench's convention), optional `ng_triplets`.
- `sgtool`: sgtool's own predictions h5.
- `json`: sgtool's plain JSON: per image `id`, `boxes`, `labels` (1-based), `scores`, `pairs`,
  `rel_scores` (column 0 = no relation) and optionally `gt` {`boxes`, `labels`, `relations`}.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sgtool.data.predictions import Predictions, read_predictions
from sgtool.errors import SgtoolError
from sgtool.eval.arrays import ImageGraph, ImagePrediction, predictions_from_arrays
from sgtool.flags import flag

FORMATS = ("sgb", "sgbench", "sgtool", "json")
MAX_JSON_BYTES = 2 * 1024**3


@dataclass
class LoadedPredictions:
    """A prediction file in sgtool's arrays: predictions, image ids if the file names them, its own GT if any."""

    format: str
    predictions: Predictions
    named_ids: bool  # whether the image ids come from the file (else 0.. in file order)
    gt: list[ImageGraph] | None = None
    ng_triplets: list[np.ndarray] | None = None
    task: str | None = None


def guess_format(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"\x89HDF"):
        return "sgtool"
    if head.startswith(b"PK") or head[:1] == b"\x80":
        return "sgb"
    text = head.decode("utf-8", "replace").lstrip()
    if text.startswith("["):
        return "json"
    if text.startswith("{"):
        return "sgbench" if '"triplets"' in Path(path).read_text(errors="replace")[:1_000_000] else "json"
    raise SgtoolError(f"{path} is neither a pickle, an HDF5 file nor JSON, so its format is unknown.",
                      f"Pass {flag('format')} sgb, sgbench, sgtool or json (docs/evaluate-your-predictions.md).")


def read_prediction_file(path: Path, fmt: str | None = None) -> LoadedPredictions:
    path = Path(path)
    if not path.is_file():
        raise SgtoolError(f"No predictions file at {path}.", f"Pass {flag('predictions')} with the file your model wrote.")
    fmt = fmt or guess_format(path)
    if fmt not in FORMATS:
        raise SgtoolError(f"Unknown format '{fmt}'.", f"Use one of: {', '.join(FORMATS)}.")
    if fmt == "sgtool":
        predictions = read_predictions(path)
        return LoadedPredictions(fmt, predictions, True, task=predictions.meta.get("task"))
    if fmt == "sgb":
        return _read_sgb(path)
    data = _read_json(path)
    return _read_sgbench(path, data) if fmt == "sgbench" else _read_plain_json(path, data)


def _bad(path: Path, what: str, hint: str = "See docs/evaluate-your-predictions.md for the format.") -> SgtoolError:
    return SgtoolError(f"{path} {what}.", hint)


def _read_json(path: Path) -> Any:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise _bad(path, "is larger than 2 GiB", "Write the predictions as sgtool h5 or split the file.")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(path, f"is not valid JSON ({exc})") from None


def _array(value: Any, dtype, shape: tuple[int, ...], path: Path, what: str) -> np.ndarray:
    """A numpy array of the given trailing shape (a tensor, an array or nested lists), or one clear sentence."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        out = np.asarray(value if value is not None else [], dtype=dtype)
        out = out.reshape((-1, *shape)) if out.size or shape else out.reshape(-1)
    except (TypeError, ValueError):
        raise _bad(path, f"holds {what} that is not a numeric array of shape (N, {', '.join(map(str, shape))})") from None
    if out.ndim != 1 + len(shape) or out.shape[1:] != shape:
        raise _bad(path, f"holds {what} of shape {out.shape}, expected (N{''.join(', %d' % d for d in shape)})")
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        raise _bad(path, f"holds {what} that are not finite")
    return out


# ---------------------------------------------------------------- the community benchmark (SGB)

def _boxes_xyxy(boxlist: Any, path: Path, what: str) -> np.ndarray:
    boxes = _array(getattr(boxlist, "bbox", None), np.float32, (4,), path, f"{what} boxes")
    if getattr(boxlist, "mode", "xyxy") == "xywh":  # the benchmark's xywh: width = x2 - x1 + 1
        boxes = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:] - 1], axis=1)
    return boxes


def _field(boxlist: Any, name: str, path: Path, index: int) -> Any:
    fields = getattr(boxlist, "extra_fields", None)
    if not isinstance(fields, dict) or name not in fields:
        raise _bad(path, f"lacks the field '{name}' in image {index}",
                   "The community benchmark's eval_results.pytorch carries it; save the results with its code.")
    return fields[name]


def _sgb_ground_truth(boxlist: Any, path: Path, index: int) -> ImageGraph:
    boxes = _boxes_xyxy(boxlist, path, "ground-truth")
    labels = _array(_field(boxlist, "labels", path, index), np.int64, (), path, "ground-truth labels")
    fields = getattr(boxlist, "extra_fields", {})
    if "relation_tuple" in fields:
        relations = _array(fields["relation_tuple"], np.int64, (3,), path, "relation_tuple")
    else:
        matrix = _array(_field(boxlist, "relation", path, index), np.int64, (len(labels),), path, "relation")
        s, o = np.nonzero(matrix)
        relations = np.stack([s, o, matrix[s, o]], axis=1)
    size = tuple(int(v) for v in (getattr(boxlist, "size", None) or (0, 0)))[:2]
    return ImageGraph(boxes, labels, relations, image_id=index, size=size)


def _sgb_prediction(boxlist: Any, path: Path, index: int) -> ImagePrediction:
    boxes = _boxes_xyxy(boxlist, path, "predicted")
    rel_scores = _field(boxlist, "pred_rel_scores", path, index)
    width = int(np.shape(rel_scores)[-1]) if np.ndim(rel_scores) == 2 else 1
    return ImagePrediction(boxes, _array(_field(boxlist, "pred_labels", path, index), np.int64, (), path, "pred_labels"),
                           _array(_field(boxlist, "pred_scores", path, index), np.float32, (), path, "pred_scores"),
                           _array(_field(boxlist, "rel_pair_idxs", path, index), np.int64, (2,), path, "rel_pair_idxs"),
                           _array(rel_scores, np.float32, (width,), path, "pred_rel_scores"))


def _read_sgb(path: Path) -> LoadedPredictions:
    from sgtool.eval.safe_pickle import load_results_pickle

    data = load_results_pickle(path)
    if not isinstance(data, dict) or not isinstance(data.get("predictions"), (list, tuple)):
        raise _bad(path, "is not the community benchmark's results dict {'groundtruths': [...], 'predictions': [...]}")
    preds = [_sgb_prediction(b, path, i) for i, b in enumerate(data["predictions"])]
    gts = data.get("groundtruths")
    gt = [_sgb_ground_truth(b, path, i) for i, b in enumerate(gts)] if isinstance(gts, (list, tuple)) else None
    if gt is not None and len(gt) != len(preds):
        raise _bad(path, f"holds {len(gt)} ground-truth images but {len(preds)} predicted ones")
    widths = {p.rel_scores.shape[1] for p in preds}
    if len(widths) > 1:
        raise _bad(path, f"holds predicate distributions of different widths {sorted(widths)}")
    num_predicates = widths.pop() if widths else 2
    _check_rows(path, preds, num_predicates)
    return LoadedPredictions("sgb", predictions_from_arrays(preds, np.arange(len(preds)), num_predicates), False, gt)


def _check_rows(path: Path, preds: list[ImagePrediction], num_predicates: int) -> None:
    for i, p in enumerate(preds):
        n = len(p.labels)
        if len(p.boxes) != n or len(p.scores) != n:
            raise _bad(path, f"holds {len(p.boxes)} boxes, {n} labels and {len(p.scores)} scores in image {i}")
        if len(p.pairs) != len(p.rel_scores) or (len(p.pairs) and (p.pairs.min() < 0 or p.pairs.max() >= n)):
            raise _bad(path, f"holds pairs that do not index the {n} boxes of image {i}, or not one score row per pair")
        if num_predicates < 2:
            raise _bad(path, "holds predicate distributions without a foreground column")


# ---------------------------------------------------------------- SGBench and plain JSON

def _images(path: Path, data: Any) -> list[dict]:
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not all(isinstance(im, dict) for im in images):
        raise _bad(path, "has no list 'images' of objects")
    return images


def _image_ids(path: Path, images: list[dict]) -> np.ndarray:
    try:
        ids = np.array([int(im["id"]) for im in images], np.int64)
    except (KeyError, TypeError, ValueError):
        raise _bad(path, "has an image without an integer 'id'") from None
    if len(np.unique(ids)) != len(ids):
        raise _bad(path, "names an image id twice")
    return ids


def _read_sgbench(path: Path, data: Any) -> LoadedPredictions:
    """SGBench's boxes version: categories and predicates are 0-based (no background); sgtool adds 1."""
    images = _images(path, data)
    ids = _image_ids(path, images)
    boxes_labels, triplets, ng = [], [], []
    for im in images:
        annotation = im.get("annotation")
        if annotation is not None:  # the layout sgbench's parser reads
            boxes = [a.get("bbox", [])[:4] for a in annotation]
            categories = [a.get("category") for a in annotation]
        else:
            boxes, categories = im.get("bboxes", []), im.get("categories", [])
        boxes = _array(boxes, np.float32, (4,), path, "bboxes")
        labels = _array(categories, np.int64, (), path, "categories") + 1
        ranked = _dedup(_array(im.get("triplets"), np.int64, (3,), path, "triplets"))
        if len(ranked) and (ranked.min() < 0 or ranked[:, :2].max() >= len(labels)):
            raise _bad(path, f"holds triplets of image {im['id']} that index no box of it")
        triplets.append(ranked + [0, 0, 1])
        ng_rows = _dedup(_array(im.get("ng_triplets"), np.int64, (3,), path, "ng_triplets"))
        if len(ng_rows) and (ng_rows.min() < 0 or ng_rows[:, :2].max() >= len(labels)):
            raise _bad(path, f"holds ng_triplets of image {im['id']} that index no box of it")
        ng.append(ng_rows + [0, 0, 1])
        boxes_labels.append((boxes, labels))
    num_predicates = 1 + max([int(t[:, 2].max(initial=0)) for t in triplets + ng] + [1])
    rows = [_ranked_rows(boxes, labels, t, num_predicates) for (boxes, labels), t in zip(boxes_labels, triplets)]
    return LoadedPredictions("sgbench", predictions_from_arrays(rows, ids, num_predicates), True, None,
                             ng if any(len(t) for t in ng) else None)


def _dedup(triplets: np.ndarray) -> np.ndarray:
    """Repeated triplets removed, the first occurrence kept in place (SGBench's reading)."""
    if not len(triplets):
        return triplets
    _, first = np.unique(triplets, axis=0, return_index=True)
    return triplets[np.sort(first)]


def _ranked_rows(boxes: np.ndarray, labels: np.ndarray, triplets: np.ndarray, num_predicates: int) -> ImagePrediction:
    """A ranked triplet list as pair rows: one row per triplet, its predicate scored by rank (first = highest)."""
    n = len(triplets)
    rel_scores = np.zeros((n, num_predicates), np.float32)
    rel_scores[np.arange(n), triplets[:, 2]] = (n - np.arange(n)) / max(n, 1)
    return ImagePrediction(boxes, labels, np.ones(len(labels), np.float32), triplets[:, :2], rel_scores)


def _read_plain_json(path: Path, data: Any) -> LoadedPredictions:
    images = _images(path, data)
    ids = _image_ids(path, images)
    num_predicates = data.get("num_predicates")
    if not isinstance(num_predicates, int) or num_predicates < 2:
        raise _bad(path, "lacks 'num_predicates' (predicates with background, at least 2)")
    preds = [ImagePrediction(_array(im.get("boxes"), np.float32, (4,), path, "boxes"),
                             _array(im.get("labels"), np.int64, (), path, "labels"),
                             _array(im.get("scores", np.ones(len(im.get("labels") or []))), np.float32, (), path, "scores"),
                             _array(im.get("pairs"), np.int64, (2,), path, "pairs"),
                             _array(im.get("rel_scores"), np.float32, (num_predicates,), path, "rel_scores"))
             for im in images]
    _check_rows(path, preds, num_predicates)
    gt = None
    if all(isinstance(im.get("gt"), dict) for im in images) and images:
        gt = [ImageGraph(_array(im["gt"].get("boxes"), np.float32, (4,), path, "gt boxes"),
                         _array(im["gt"].get("labels"), np.int64, (), path, "gt labels"),
                         _array(im["gt"].get("relations"), np.int64, (3,), path, "gt relations"), image_id=int(i))
              for im, i in zip(images, ids)]
    task = data.get("task") if data.get("task") in ("predcls", "sgcls", "sgdet") else None
    return LoadedPredictions("json", predictions_from_arrays(preds, ids, num_predicates), True, gt, task=task)
