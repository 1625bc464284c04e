"""Which visual features a relation head gets: the `features` setting resolved against the workspace.

A head with `VisualInputs` (its config a `VisualHeadConfig`) and `features=visual|auto` gets a `DetectorVisualFeatures` on the frozen
backbone of a detector run (`--detector RUN`, else the workspace's latest) over the dataset's images
(every split, by image id), plus the pooled caches of that run for the dataset when they exist
(`--cache-features` writes them first). `auto` falls back to the spatial variant when the dataset has
no images or no detector fits its vocabulary (a head with `pixels_by_default`, reldn, falls back only
on a dataset without images and stops with one sentence otherwise); `visual` then stops with one sentence. The resolved
mode is written back into the head's config (so the run's config.yaml says visual or spatial) and the
detector run is recorded in the run's settings, so `reattach` gives a reloaded head the same source,
or the same backbone on images the caller passes (`sgtool predict`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sgtool.data.prepared import PreparedDataset
from sgtool.detect import Detector, SplitImages, latest_detector, load_detector
from sgtool.errors import SgtoolError
from sgtool.features.source import DetectorVisualFeatures, FeatureTable, ImageLike, loaders_by_id
from sgtool.flags import flag, setting
from sgtool.heads import HeadConfig, RelationHead, VisualHeadConfig, VisualInputs
from sgtool.ui import SILENT, Reporter
from sgtool.workspace import Workspace

GRID = 2  # ROI maps are pooled to GRID x GRID cells: dim = channels * GRID**2
SPLITS = ("train", "val", "test")


def takes_visual(head: type[RelationHead] | RelationHead, config: HeadConfig) -> bool:
    """Whether the head can use ROI features and its features setting asks for them (visual or auto)."""
    is_visual_head = isinstance(head, VisualInputs) or (isinstance(head, type) and issubclass(head, VisualInputs))
    return is_visual_head and isinstance(config, VisualHeadConfig) and config.features in ("visual", "auto")


def visual_source(ws: Workspace, prepared: PreparedDataset, head: type[RelationHead], config: HeadConfig,
                  detector_run: str | None, device: str = "cpu", cache: bool = False,
                  reporter: Reporter = SILENT) -> tuple[DetectorVisualFeatures | None, str | None]:
    """The head's visual source and its detector run, or (None, None) for the spatial variant.

    Sets config.features to the mode it resolved to ("visual" or "spatial") when it was visual or auto."""
    if not takes_visual(head, config):
        if cache:
            raise SgtoolError(f"{flag('cache_features')} stores detector ROI features, and the {head.name} head does not "
                              "use them here.", f"Use it with {flag('head')} reldn, tensor, nodis or iwsl and {setting('features', 'visual')}.")
        return None, None
    if config.features == "auto" and getattr(head, "pixels_by_default", False) and prepared.has_images:
        detector = _paper_detector(ws, prepared, head.name, detector_run, device)
    else:
        detector = _detector(ws, prepared, detector_run, config.features == "visual", device)
    config.features = "visual" if detector is not None else "spatial"
    if detector is None:
        if cache:
            raise SgtoolError(f"{flag('cache_features')} needs a trained detector and a dataset with images.",
                              f"Run `sgtool train-detector` first, or leave out {flag('cache_features')}.")
        return None, None
    source = dataset_source(prepared, detector)
    if cache:
        cache_dataset_features(ws, prepared, source, reporter)
    return source.with_tables(read_tables(ws, prepared, detector.run)), detector.run


def _detector(ws: Workspace, prepared: PreparedDataset, run: str | None, required: bool, device: str) -> Detector | None:
    """The detector giving the features; None (auto) when there is none for this dataset, an error (visual)."""
    if not prepared.has_images:
        if required:
            raise SgtoolError(f"features=visual needs images, and the dataset '{prepared.name}' holds annotations only.",
                              f"Use {setting('features', 'spatial')} on annotation-only datasets.")
        return None
    if run is None:
        try:
            run = latest_detector(ws)
        except SgtoolError:
            if required:
                raise SgtoolError(f"features=visual needs a trained detector, and the workspace {ws.root} holds none.",
                                  f"Train one with `sgtool train-detector`, or use {setting('features', 'spatial')}.") from None
            return None
        if not required:  # auto: the latest detector only when it knows this dataset's vocabulary
            detector = load_detector(ws, run, None, device)
            return detector if list(detector.vocab.objects) == list(prepared.vocab.objects) else None
    return load_detector(ws, run, prepared.vocab, device, dataset=f"the dataset '{prepared.name}'")


def _paper_detector(ws: Workspace, prepared: PreparedDataset, head: str, run: str | None, device: str) -> Detector:
    """features=auto of a head whose paper model reads pixels, on a dataset with images: a detector is required."""
    if run is None:
        try:
            run = latest_detector(ws)
        except SgtoolError:
            raise SgtoolError(f"The {head} head's default (features=auto) on the dataset '{prepared.name}', which has "
                              f"images, is the paper's model on a detector's ROI features, and the workspace {ws.root} "
                              "holds no detector.",
                              "Train one with `sgtool train-detector`, or choose the pixel-free variant with "
                              f"{setting('features', 'spatial')}.") from None
    return load_detector(ws, run, prepared.vocab, device, dataset=f"the dataset '{prepared.name}'")


def dataset_source(prepared: PreparedDataset, detector: Detector) -> DetectorVisualFeatures:
    """The detector's features over every image of the prepared dataset, by image id."""
    graphs = prepared.graphs
    return DetectorVisualFeatures(detector, loaders_by_id(graphs.image_ids, SplitImages(prepared.path, graphs)), GRID)


def cache_dataset_features(ws: Workspace, prepared: PreparedDataset, source: DetectorVisualFeatures,
                           reporter: Reporter = SILENT) -> None:
    """Write the pooled caches of every split that lacks one (rank 0 under torchrun; the others wait)."""
    from sgtool import distributed
    from sgtool.features.cache import pooled_cache_path, write_pooled_cache

    if distributed.is_main():
        run = source.detector.run
        for split in SPLITS:
            path = pooled_cache_path(ws, run, prepared.name, split, source.grid)
            graphs = prepared.graphs.split_subset(split)
            if graphs.num_images and not path.is_file():
                write_pooled_cache(source, graphs, path, {"detector_run": run, "dataset": prepared.name, "split": split},
                                   reporter)
    distributed.barrier()


def read_tables(ws: Workspace, prepared: PreparedDataset, detector_run: str, grid: int = GRID) -> list[FeatureTable]:
    """The pooled caches of the detector run for the dataset's splits that have one."""
    from sgtool.features.cache import pooled_cache_path, read_pooled_cache

    paths = [pooled_cache_path(ws, detector_run, prepared.name, split, grid) for split in SPLITS]
    return [read_pooled_cache(path)[0] for path in paths if path.is_file()]


def reattach(ws: Workspace, head: RelationHead, record: Any, prepared: PreparedDataset,
             images: Mapping[int, ImageLike] | None = None, device: str = "cpu") -> None:
    """Give a reloaded head the visual source it was trained with: the run's detector on the dataset's
    images (and caches), or on `images` ({id: CHW tensor or loader}) when given; `record`: the run's RunRecord."""
    options: dict[str, Any] = record.options or {}
    if not isinstance(head, VisualInputs) or options.get("features", record.features) != "visual":
        return
    run = record.detector
    if not run:
        raise SgtoolError(f"The run '{record.run}' uses visual features but names no detector run.",
                          f"Train the head again with {flag('detector')} RUN.")
    detector = load_detector(ws, str(run), prepared.vocab, device, dataset=f"the run's dataset '{prepared.name}'")
    if images is not None:
        head.attach_visual(DetectorVisualFeatures(detector, images, GRID))
    else:
        head.attach_visual(dataset_source(prepared, detector).with_tables(read_tables(ws, prepared, detector.run)))
