"""`sgtool predict IMAGE...`: detector + relation head on the user's own images -> graph.json each."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from sgtool import ui
from sgtool.config import resolve_device
from sgtool.detect import load_detector
from sgtool.engine.objects import detected_objects
from sgtool.engine.train import load_trained_head
from sgtool.errors import SgtoolError
from sgtool.flags import flag
from sgtool.ui import SILENT, Reporter
from sgtool.viz.graph_json import build_graph, relative_image, write_graph
from sgtool.workspace import Workspace, check_names


KEEP_SCORE = 0.5  # objects in no kept relation still appear when the detector is this sure
MAX_ASPECT = 32  # a detector resizing the long side to 128 pixels keeps the short one >= 4 pixels


@dataclass
class PredictedGraph:
    image: Path
    graph: Path
    objects: int
    relations: int


def read_user_image(path: Path) -> torch.Tensor:
    """(3, H, W) uint8 of any PNG / JPEG (or other PIL-readable) file; anything else is a user error."""
    path = Path(path)
    if path.is_dir():
        raise SgtoolError(f"{path} is a directory, not an image.", "Pass the image files, e.g. DIR/*.png.")
    if not path.is_file():
        raise SgtoolError(f"The image {path} does not exist.", "Check the path.")
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError as exc:
        raise SgtoolError(f"The image {path} is too large to open ({_first_sentence(exc)}).",
                          "Scale it down first (the detector works at a few hundred pixels anyway).") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SgtoolError(f"{path} is not an image sgtool can read ({type(exc).__name__}).",
                          "Pass PNG or JPEG files.") from exc
    height, width = array.shape[:2]
    if max(height, width) > MAX_ASPECT * min(height, width):
        raise SgtoolError(f"The image {path} is {width} x {height} pixels: one side is more than {MAX_ASPECT} times the "
                          "other, so the detector's resize would leave it less than a few pixels thick.",
                          "Crop or pad it to a less extreme shape first.")
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _first_sentence(exc: BaseException) -> str:
    return str(exc).split(",")[0].rstrip(".")


def read_inputs(images: list[Path], top: int) -> list:
    """The user's images as tensors, after checking the options (one sentence for what is wrong)."""
    if not images:
        raise SgtoolError("No image was given.", "Pass one or more PNG or JPEG files.")
    if top < 1:
        raise SgtoolError(f"{flag('top')} must be at least 1, not {top}.", "Pass how many relations to keep per image.")
    return [read_user_image(path) for path in images]


def predict_images(ws: Workspace, images: list[Path], *, run: str | None = None, detector_run: str | None = None,
                   out: Path | None = None, top: int = 20, device: str = "cpu", pixels: list | None = None,
                   reporter: Reporter = SILENT) -> list[PredictedGraph]:
    """Write <out>/<image stem>.graph.json for every image (the head's top relations, graph-constrained; names
    that clash get -2, -3, ...: `graph_names`);
    `pixels`: the images already read by `read_inputs`."""
    check_names(run=run, detector=detector_run)
    out = output_folder(ws, out)
    pixels = pixels if pixels is not None else read_inputs(images, top)
    run = run if run is not None else ws.latest_run()
    ids = np.arange(len(pixels))  # a visual head's source takes the user's pictures by these ids
    head, record, prepared = load_trained_head(ws, run,
                                               images=dict(zip(ids.tolist(), pixels)), device=resolve_device(device))
    detector = load_detector(ws, detector_run if detector_run is not None else record.detector, prepared.vocab,
                             resolve_device(device),
                             dataset=f"the run's dataset '{prepared.name}'")
    objects = detected_objects(detector, pixels, ids)
    predictions = head.predict(objects).ranked()
    results = []
    names = graph_names(images)
    for i, path in enumerate(reporter.track(images, len(images), "graphs")):
        results.append(_write_one(out / names[i], Path(path), pixels[i], predictions, i, top, prepared.vocab))
    return results


def graph_names(images: list[Path]) -> list[str]:
    """<image stem>.graph.json per image; images sharing a stem (d1/same.png, d2/same.png) get <stem>-2,
    <stem>-3, ... in the order given, so no graph overwrites another."""
    names, taken = [], set()
    for image in images:
        stem, n = Path(image).stem, 1
        while (name := f"{stem}{'' if n == 1 else f'-{n}'}.graph.json") in taken:
            n += 1
        names.append(name)
        taken.add(name)
    return names


def output_folder(ws: Workspace, out: Path | None) -> Path:
    """--out as a folder that can take the graphs (made if missing), checked before any model is loaded: a
    file, pipe, device or symlink loop, or a folder that sgtool manages in the workspace, is one sentence."""
    out = Path(out) if out is not None else Path.cwd()
    ws.refuse_managed(out, flag("out"))
    try:
        info = os.stat(out)
    except FileNotFoundError:
        info = None
    except OSError as exc:  # a symlink loop, a path through a file
        raise SgtoolError(f"{flag('out')} {out} cannot be used as a folder ({exc.strerror or exc}).", "Pass a folder.") from exc
    if info is not None and not stat.S_ISDIR(info.st_mode):
        raise SgtoolError(f"{flag('out')} {out} is not a folder.", "Pass a folder for the graph.json files.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SgtoolError(f"The folder {flag('out')} {out} cannot be made ({exc.strerror or exc}).",
                          "Pass a folder you can write.") from exc
    return out


def _write_one(target: Path, image: Path, pixels: torch.Tensor, predictions, i: int, top: int, vocab) -> PredictedGraph:
    """One graph.json: the top relations, and the objects they use or that score at least KEEP_SCORE."""
    lo, hi = predictions.box_offsets[i], predictions.box_offsets[i + 1]
    plo, phi = predictions.pair_offsets[i], predictions.pair_offsets[i + 1]
    pairs, dist = predictions.pairs[plo:phi][:top] - lo, predictions.rel_scores[plo:phi][:top]
    predicates = dist[:, 1:].argmax(1) + 1
    scores = predictions.scores[lo:hi]
    triplet = dist[np.arange(len(dist)), predicates] * scores[pairs[:, 0]] * scores[pairs[:, 1]]
    keep = scores >= KEEP_SCORE
    keep[pairs.reshape(-1)] = True
    new_id = np.cumsum(keep) - 1
    graph = build_graph(image=relative_image(image.resolve(), target.parent.resolve()), width=pixels.shape[2],
                        height=pixels.shape[1], boxes=predictions.boxes[lo:hi][keep],
                        labels=predictions.labels[lo:hi][keep], vocab=vocab, scores=scores[keep],
                        pairs=new_id[pairs], predicates=predicates, rel_scores=triplet)
    write_graph(target, graph)
    return PredictedGraph(image, target, int(keep.sum()), len(pairs))


def show_predicted(results: list[PredictedGraph], as_json: bool = False) -> None:
    rows = [{"image": str(r.image), "graph": str(r.graph), "objects": r.objects, "relations": r.relations}
            for r in results]
    if as_json:
        ui.print_json(rows)
        return
    ui.print_table("Predicted scene graphs", ("image", "graph.json", "objects", "relations"),
                   ((r["image"], r["graph"], r["objects"], r["relations"]) for r in rows))
