"""`--cache-features`: a split's ROI features computed once with the frozen backbone, stored in h5.

Two layouts. The pooled one (`write_pooled_cache`, what `sgtool train --cache-features` writes and
the heads' visual source reads, see features/source.py) keeps each box's and each ordered pair's
pooled vector: <ws>/runs/<detector run>/features/<dataset>/<split>-g<grid>.h5. The full one below
keeps the S x S ROI maps (float16) for code that wants them unpooled:

<ws>/runs/<detector run>/features/<dataset>/<split>-s<S>-<pairs>.h5 (written atomically):
    box_offsets (I+1,)  boxes (N, 4)  object_features (N, C, S, S) float16     rows as in the split's SceneGraphs
    pair_offsets (I+1,) pairs (P, 2) global box rows   union_features (P, C, S, S) float16   spatial (P, 22)
pairs="all": every ordered pair of an image's boxes; pairs="annotated": the annotated relations' pairs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from sgtool import atomic
from sgtool.data.graphs import SceneGraphs, offsets_from_counts, ordered_pairs
from sgtool.data.prepared import PreparedDataset
from sgtool.detect.api import Detector
from sgtool.detect.data import SplitImages, require_images
from sgtool.errors import SgtoolError
from sgtool.features.source import DetectorVisualFeatures, FeatureTable
from sgtool.features.spatial import spatial_features, union_boxes
from sgtool.features.visual import roi_features
from sgtool.flags import flag
from sgtool.ui import SILENT, Reporter
from sgtool.workspace import Workspace

PAIR_MODES = ("all", "annotated")


@dataclass
class FeatureCache:
    box_offsets: np.ndarray
    boxes: np.ndarray
    object_features: np.ndarray
    pair_offsets: np.ndarray
    pairs: np.ndarray
    union_features: np.ndarray
    spatial: np.ndarray
    attrs: dict


def feature_cache_path(ws: Workspace, detector_run: str, dataset: str, split: str, output_size: int = 7,
                       pairs: str = "all") -> Path:
    return ws.run_dir(detector_run) / "features" / dataset / f"{split}-s{output_size}-{pairs}.h5"


def split_pairs(graphs: SceneGraphs, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(P, 2) global box rows of the pairs to featurise, grouped by image, and their per-image offsets."""
    if mode == "annotated":
        order = np.argsort(graphs.image_of_box()[graphs.relations.pairs[:, 0]], kind="stable")
        rows = graphs.relations.pairs[order]
        image = graphs.image_of_box()[rows[:, 0]]
    elif mode == "all":
        image, subj, obj = ordered_pairs(graphs.box_offsets)
        rows = np.stack([subj, obj], axis=1)
    else:
        raise SgtoolError(f"Unknown pair mode '{mode}' (valid: {', '.join(PAIR_MODES)}).", "Use all or annotated.")
    return rows.astype(np.int64), offsets_from_counts(np.bincount(image, minlength=graphs.num_images))


def cache_split_features(detector: Detector, prepared: PreparedDataset, split: str, path: Path,
                         output_size: int = 7, pairs: str = "all", batch_size: int = 16,
                         reporter: Reporter = SILENT) -> Path:
    """Run the frozen backbone once over a split and store object / union ROI features (see module doc)."""
    require_images(prepared, "give visual features")
    detector.check_vocabulary(prepared.vocab, f"the dataset '{prepared.name}'")
    graphs = prepared.graphs.split_subset(split)
    rows, pair_offsets = split_pairs(graphs, pairs)
    images = SplitImages(prepared.path, graphs)
    channels, n, p = detector.out_channels, len(graphs.labels), len(rows)
    shape = (output_size, output_size)
    with atomic.atomic_path(Path(path)) as tmp, h5py.File(tmp, "w") as h5:
        h5["box_offsets"], h5["boxes"] = graphs.box_offsets, graphs.boxes
        h5["pair_offsets"], h5["pairs"] = pair_offsets, rows
        h5["spatial"] = spatial_features(torch.from_numpy(graphs.boxes[rows[:, 0]]), torch.from_numpy(graphs.boxes[rows[:, 1]]),
                                         torch.from_numpy(np.stack([graphs.widths, graphs.heights], 1)[graphs.image_of_box()[rows[:, 0]]])).numpy()
        objects = h5.create_dataset("object_features", (n, channels, *shape), dtype="f2", chunks=True)
        unions = h5.create_dataset("union_features", (p, channels, *shape), dtype="f2", chunks=True)
        h5.attrs.update({"detector_run": detector.run, "dataset": prepared.name, "split": split,
                         "output_size": output_size, "pairs": pairs, "channels": channels})
        for start in reporter.track(range(0, len(images), batch_size), -(-len(images) // batch_size), f"features ({split})"):
            _fill_batch(detector, graphs, images, rows, pair_offsets, range(start, min(start + batch_size, len(images))),
                        output_size, objects, unions)
    return Path(path)


def _fill_batch(detector: Detector, graphs: SceneGraphs, images: SplitImages, rows: np.ndarray, pair_offsets: np.ndarray,
                batch: range, output_size: int, objects: h5py.Dataset, unions: h5py.Dataset) -> None:
    lo, hi = graphs.box_offsets[batch.start], graphs.box_offsets[batch.stop]
    plo, phi = pair_offsets[batch.start], pair_offsets[batch.stop]
    boxes = [torch.from_numpy(graphs.boxes[graphs.box_offsets[i]:graphs.box_offsets[i + 1]]) for i in batch]
    all_boxes = torch.from_numpy(graphs.boxes)
    union = [union_boxes(all_boxes[rows[pair_offsets[i]:pair_offsets[i + 1], 0]],
                         all_boxes[rows[pair_offsets[i]:pair_offsets[i + 1], 1]]) for i in batch]
    feats = detector.features([images[i] for i in batch])
    with torch.inference_mode():
        if hi > lo:
            objects[lo:hi] = roi_features(feats, boxes, output_size).cpu().numpy().astype(np.float16)
        if phi > plo:
            unions[plo:phi] = roi_features(feats, union, output_size).cpu().numpy().astype(np.float16)


def read_feature_cache(path: Path) -> FeatureCache:
    """Load a cache file written by cache_split_features into memory."""
    try:
        with h5py.File(path, "r") as h5:
            arrays = {name: h5[name][()] for name in ("box_offsets", "boxes", "object_features", "pair_offsets",
                                                      "pairs", "union_features", "spatial")}
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in h5.attrs.items()}
    except (OSError, KeyError) as exc:
        raise SgtoolError(f"{path} is not a readable feature cache ({exc}).",
                          f"Delete it; it is rebuilt by the next run with {flag('cache_features')}.") from exc
    return FeatureCache(**arrays, attrs=attrs)


# ---------------------------------------------------------------- pooled vectors (what the relation heads read)

def pooled_cache_path(ws: Workspace, detector_run: str, dataset: str, split: str, grid: int) -> Path:
    """<ws>/runs/<detector run>/features/<dataset>/<split>-g<grid>.h5: one split's pooled ROI vectors."""
    return ws.run_dir(detector_run) / "features" / dataset / f"{split}-g{grid}.h5"


def write_pooled_cache(source: DetectorVisualFeatures, graphs: SceneGraphs, path: Path, attrs: dict,
                       reporter: Reporter = SILENT) -> Path:
    """Every box's and every ordered pair's pooled vectors of a split, computed once by `source` (atomic h5).

    Layout: image_ids (I,), box_offsets (I+1,), boxes (N, 4), box_vectors (N, dim) float32,
    pairs (P, 2) global box rows grouped by image, pair_offsets (I+1,), union_vectors (P, dim) float32."""
    rows, pair_offsets = split_pairs(graphs, "all")
    step = source.images_per_step
    with atomic.atomic_path(Path(path)) as tmp, h5py.File(tmp, "w") as h5:
        h5["image_ids"], h5["box_offsets"], h5["boxes"] = graphs.image_ids, graphs.box_offsets, graphs.boxes
        h5["pairs"], h5["pair_offsets"] = rows, pair_offsets
        boxes = h5.create_dataset("box_vectors", (len(graphs.boxes), source.dim), dtype="f4")
        unions = h5.create_dataset("union_vectors", (len(rows), source.dim), dtype="f4")
        h5.attrs.update({**attrs, "grid": source.grid, "dim": source.dim})
        starts = range(0, graphs.num_images, step)
        for start in reporter.track(starts, len(starts), f"features ({attrs.get('split', '')})"):
            images = np.arange(start, min(start + step, graphs.num_images))
            local = [rows[pair_offsets[i]:pair_offsets[i + 1]] - graphs.box_offsets[i] for i in images]
            box_vectors, union_vectors = source.step_vectors(graphs.image_ids, graphs.box_offsets, graphs.boxes,
                                                             images, local)
            boxes[graphs.box_offsets[images[0]]:graphs.box_offsets[images[-1] + 1]] = box_vectors
            unions[pair_offsets[images[0]]:pair_offsets[images[-1] + 1]] = union_vectors
    return Path(path)


def read_pooled_cache(path: Path) -> tuple[FeatureTable, dict]:
    """A pooled cache file as a FeatureTable, and its attributes (detector_run, dataset, split, grid, dim)."""
    try:
        with h5py.File(path, "r") as h5:
            arrays = {name: h5[name][()] for name in ("image_ids", "box_offsets", "boxes", "box_vectors", "pairs",
                                                      "union_vectors")}
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in h5.attrs.items()}
    except (OSError, KeyError) as exc:
        raise SgtoolError(f"{path} is not a readable feature cache ({exc}).",
                          f"Delete it; `sgtool train {flag('cache_features')}` writes it again.") from exc
    return FeatureTable(**arrays), attrs
