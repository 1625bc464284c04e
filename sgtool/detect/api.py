"""A trained detector, loaded from its run, as the relation heads use it.

    detector = load_detector(ws, run=None, vocab=prepared.vocab)   # latest detector; vocabulary checked
    dets = detector.detect(images)                                  # SGDet: per image (boxes, labels, scores)
    probs = detector.classify_boxes(images, gt_boxes)               # SGCls: (n_i, C + 1) per image
    feats = detector.features(images)                               # frozen backbone maps (see features/visual.py)

Images are CHW tensors (uint8 0-255, or float 0-1) in original pixels; every box that goes in or
comes out is xyxy in original pixels; labels are the dataset's 1-based object labels.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

from sgtool.data.sgg_h5 import Vocabulary
from sgtool.detect.data import to_float
from sgtool.detect.model import DetectorSpec, build_model
from sgtool.errors import SgtoolError
from sgtool.flags import flag
from sgtool.workspace import Workspace

if TYPE_CHECKING:
    from torchvision.models.detection import FasterRCNN

LATEST_KIND = "detector"  # workspace.json key latest_detector


class Detections(NamedTuple):
    """One image's detections: boxes (n, 4) xyxy pixels, labels (n,) 1-based, scores (n,)."""

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor


@dataclass
class BackboneFeatures:
    """Backbone maps of a batch after the detector's resize, and how to map original boxes onto them."""

    maps: dict[str, torch.Tensor]  # name -> (B, C, h, w)
    image_sizes: list[tuple[int, int]]  # (H, W) of each resized image inside the padded batch
    scales: list[tuple[float, float]]  # (sy, sx): resized / original
    padded_size: tuple[int, int] = (0, 0)  # (H, W) of the padded batch the maps were computed on


class Detector:
    """A Faster R-CNN in eval mode with the vocabulary it was trained on."""

    def __init__(self, model: FasterRCNN, spec: DetectorSpec, vocab: Vocabulary, run: str = "", device: str = "cpu",
                 batch_size: int = 16) -> None:
        self.model = model.to(device).eval()
        self.spec, self.vocab, self.run, self.device, self.batch_size = spec, vocab, run, device, batch_size
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @property
    def num_classes(self) -> int:
        """Object classes without background."""
        return self.spec.num_classes

    @property
    def out_channels(self) -> int:
        return int(self.model.backbone.out_channels)

    def check_vocabulary(self, vocab: Vocabulary, dataset: str = "the dataset") -> None:
        if list(vocab.objects) != list(self.vocab.objects):
            who = f"The detector run '{self.run}'" if self.run else "The detector"
            raise SgtoolError(f"{who} was trained on another object vocabulary ({len(self.vocab.objects)} classes) "
                              f"than {dataset} ({len(vocab.objects)} classes).",
                              f"Train a detector on this dataset with `sgtool train-detector {flag('dataset')} NAME`.")

    # ------------------------------------------------------------ batches
    def _chunks(self, images: Sequence[torch.Tensor], *others: Sequence):
        for start in range(0, len(images), self.batch_size):
            stop = start + self.batch_size
            yield [to_float(im).to(self.device) for im in images[start:stop]], *(o[start:stop] for o in others)

    @torch.inference_mode()
    def detect(self, images: Sequence[torch.Tensor], top_n: int | None = None, score_thresh: float | None = None,
               nms_thresh: float | None = None) -> list[Detections]:
        """Per image: class-wise NMS, scores above score_thresh, the top_n best (default: the spec's, 80)."""
        heads = self.model.roi_heads
        saved = heads.detections_per_img, heads.score_thresh, heads.nms_thresh
        heads.detections_per_img = top_n if top_n is not None else saved[0]
        heads.score_thresh = score_thresh if score_thresh is not None else saved[1]
        heads.nms_thresh = nms_thresh if nms_thresh is not None else saved[2]
        try:
            out: list[Detections] = []
            for (batch,) in self._chunks(images):
                for result in self.model(batch):
                    out.append(Detections(result["boxes"].cpu(), result["labels"].cpu(), result["scores"].cpu()))
            return out
        finally:
            heads.detections_per_img, heads.score_thresh, heads.nms_thresh = saved

    @torch.inference_mode()
    def features(self, images: Sequence[torch.Tensor]) -> BackboneFeatures:
        """The frozen backbone's maps for one batch (pass at most a batch you can hold in memory)."""
        batch = [to_float(im).to(self.device) for im in images]
        image_list, _ = self.model.transform(batch)
        maps = self.model.backbone(image_list.tensors)
        if isinstance(maps, torch.Tensor):
            maps = {"0": maps}
        scales = [(new[0] / im.shape[-2], new[1] / im.shape[-1]) for new, im in zip(image_list.image_sizes, batch)]
        padded = (int(image_list.tensors.shape[-2]), int(image_list.tensors.shape[-1]))
        return BackboneFeatures(dict(maps), [tuple(s) for s in image_list.image_sizes], scales, padded)

    @staticmethod
    def scale_boxes(boxes: Sequence[torch.Tensor], feats: BackboneFeatures) -> list[torch.Tensor]:
        """Original-pixel boxes -> boxes in the resized images the backbone saw."""
        out = []
        for b, (sy, sx) in zip(boxes, feats.scales):
            factor = torch.tensor([sx, sy, sx, sy], dtype=torch.float32, device=b.device)
            out.append(b.float().reshape(-1, 4) * factor)
        return out

    @torch.inference_mode()
    def classify_boxes(self, images: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """SGCls: the box head's class distribution (softmax, column 0 = background) for each given box."""
        if len(images) != len(boxes):
            raise ValueError("classify_boxes needs one box tensor per image")
        out: list[torch.Tensor] = []
        for batch, batch_boxes in self._chunks(images, boxes):
            feats = self.features(batch)
            scaled = [b.to(self.device) for b in self.scale_boxes(batch_boxes, feats)]
            heads = self.model.roi_heads
            pooled = heads.box_roi_pool(feats.maps, scaled, feats.image_sizes)
            logits, _ = heads.box_predictor(heads.box_head(pooled))
            probs = torch.softmax(logits.float(), dim=-1).cpu()
            out.extend(probs.split([len(b) for b in scaled]))
        return out


# ---------------------------------------------------------------- loading from a run

def checkpoint_path(run_dir: Path) -> Path:
    for name in ("model.pt", "last.pt"):
        path = run_dir / "checkpoints" / name
        if path.is_file():
            return path
    raise SgtoolError(f"The run {run_dir.name} holds no detector checkpoint.", "Train one with `sgtool train-detector`.")


def read_checkpoint(path: Path) -> dict:
    """The detector's state in a run's checkpoint (the one format, or an older shape: `sgtool/checkpoint.py`)."""
    from sgtool.checkpoint import load

    try:
        saved = load(path)
    except SgtoolError as exc:
        raise SgtoolError(f"{path} is not a readable detector checkpoint.",
                          f"Train the detector again, or {flag('resume')} it from an intact run.") from exc
    if saved.get("kind") != LATEST_KIND or not isinstance(saved.get("model"), dict) or "spec" not in saved["model"]:
        raise SgtoolError(f"{path} is not an sgtool detector checkpoint.", "Pass a run made by `sgtool train-detector`.")
    return saved["model"]


def latest_detector(ws: Workspace) -> str:
    name = ws._state().get(f"latest_{LATEST_KIND}")
    if name in ws.runs():
        return name
    raise SgtoolError(f"The workspace {ws.root} holds no trained detector.", "Run `sgtool train-detector` first, or pass the run.")


def detector_from_checkpoint(payload: dict, run: str = "", device: str = "cpu") -> Detector:
    spec = DetectorSpec(**payload["spec"])
    model = build_model(spec)
    model.load_state_dict(payload["model"])
    vocab = Vocabulary(list(payload["vocabulary"]["objects"]), list(payload["vocabulary"]["predicates"]))
    return Detector(model, spec, vocab, run=run, device=device)


def load_detector(ws: Workspace, run: str | None = None, vocab: Vocabulary | None = None, device: str = "cpu",
                  dataset: str = "the dataset") -> Detector:
    """The detector of a train-detector run (the latest when run is None), checked against vocab if given."""
    run = run if run is not None else latest_detector(ws)
    payload = read_checkpoint(checkpoint_path(ws.require_run(run)))
    detector = detector_from_checkpoint(payload, run, device)
    if vocab is not None:
        detector.check_vocabulary(vocab, dataset)
    return detector
