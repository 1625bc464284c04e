"""The site's pictures: each image (scaled down when large) and a thumbnail for the gallery.

Annotation-only datasets have no pixels: their thumbnail is an SVG of a blank canvas of the image's
shape with the ground-truth boxes outlined, and the image page draws the boxes on a blank canvas.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from sgtool.data.graphs import SceneGraphs
from sgtool.ui import SILENT, Reporter

THUMB_SIDE = 160  # longest side of a gallery thumbnail, pixels
DISPLAY_SIDE = 1024  # an image whose longest side is larger is scaled down for the image page
PER_FOLDER = 1000  # pictures per sub-folder, so no folder holds 10,000 files


def picture_folder(index: int) -> str:
    return f"{index // PER_FOLDER:03d}"


def _source(dataset_path: Path, gt: SceneGraphs, index: int) -> Path | None:
    name = gt.files[index] if gt.files else None
    path = dataset_path / name if name else None
    return path if path is not None and path.is_file() else None


def _display_copy(source: Path, image: Image.Image, folder: Path, index: int) -> str:
    """The image page's picture: the file itself, or a JPEG scaled to DISPLAY_SIDE when larger."""
    if max(image.size) <= DISPLAY_SIDE and source.suffix.lower() in (".png", ".jpg", ".jpeg"):
        target = folder / f"{index}{source.suffix.lower()}"
        shutil.copyfile(source, target)
    else:
        target = folder / f"{index}.jpg"
        scaled = image.copy()
        scaled.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
        scaled.save(target, quality=88)
    return target.name


def _blank_thumbnail(gt: SceneGraphs, index: int) -> str:
    """An SVG of a blank canvas of the image's shape with its GT boxes outlined (text: no encoding cost)."""
    width, height = max(int(gt.widths[index]), 1), max(int(gt.heights[index]), 1)
    boxes = gt.boxes[gt.box_offsets[index]:gt.box_offsets[index + 1]].round(1).tolist()
    rects = "".join(f'<rect x="{x1}" y="{y1}" width="{max(x2 - x1, 0):.1f}" height="{max(y2 - y1, 0):.1f}"/>'
                    for x1, y1, x2, y2 in boxes)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{THUMB_SIDE}">'
            f'<rect width="{width}" height="{height}" fill="#f4f4f0"/><g fill="none" stroke="#3c5aa0" '
            f'stroke-width="{max(width, height) / THUMB_SIDE:.2f}">{rects}</g></svg>')


def write_pictures(site: Path, dataset_path: Path, gt: SceneGraphs, reporter: Reporter = SILENT) -> list[str | None]:
    """Write images/ and thumbs/ into the site; returns each image's picture path (None without pixels)."""
    pictures: list[str | None] = []
    for index in reporter.track(range(gt.num_images), gt.num_images, "Pictures"):
        sub = picture_folder(index)
        thumbs, images = site / "thumbs" / sub, site / "images" / sub
        thumbs.mkdir(parents=True, exist_ok=True)
        source = _source(dataset_path, gt, index)
        if source is None:
            (thumbs / f"{index}.svg").write_text(_blank_thumbnail(gt, index), "utf-8")
            pictures.append(None)
            continue
        images.mkdir(parents=True, exist_ok=True)
        with Image.open(source) as opened:
            image = opened.convert("RGB")
        pictures.append(f"images/{sub}/{_display_copy(source, image, images, index)}")
        image.thumbnail((THUMB_SIDE, THUMB_SIDE))
        image.save(thumbs / f"{index}.jpg", quality=80)
    return pictures
