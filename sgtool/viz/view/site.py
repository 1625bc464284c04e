"""`sgtool view`: write the static site (staged beside --out, then renamed into place) and serve it.

site/
  index.html, gallery.html, image.html   the three page types (from the template assets/page.html)
  assets/                                view.js, view.css, the vendored Cytoscape.js and its licence
  data/meta.js                           runs, their eval-report numbers, per-predicate recall, confusion
  data/index.js                          the gallery index (every image: id, GT predicates, per-run counts)
  data/shards/NNNN.js                    SHARD_SIZE images' graphs each, loaded by the image page on demand
  images/, thumbs/                       pictures (thumbnails only where the dataset has no pixels: blank canvas)
  sgtool-view.json                       marks the folder as a view (so --out may replace it) and summarises it

Data files are JavaScript (`window.X = {...}`), not JSON, because browsers refuse fetch() on file://.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from sgtool import __version__, atomic, ui
from sgtool.errors import SgtoolError
from sgtool.eval.report import EvalOutcome, report_payload
from sgtool.flags import flag
from sgtool.ui import SILENT, Reporter
from sgtool.viz.view.pictures import write_pictures
from sgtool.viz.view.records import SHARD_SIZE, RunMarks, gallery_index, run_marks, shard_payload
from sgtool.viz.view.runs import ViewData, load_view_data, pick_runs
from sgtool.workspace import Workspace

MARKER = "sgtool-view.json"
# page file -> (its kind, the data and library scripts it loads before view.js); all from assets/page.html
PAGES = {"index.html": ("overview", ["data/meta.js"]),
         "gallery.html": ("gallery", ["data/meta.js", "data/index.js"]),
         "image.html": ("image", ["data/meta.js", "data/index.js", "assets/cytoscape.min.js"])}
ASSETS = ("view.js", "view.css", "cytoscape.min.js", "cytoscape.LICENSE")


@dataclass
class ViewOutcome:
    path: Path
    runs: list[str]
    images: int
    top: int
    bytes: int
    seconds: float

    @property
    def index(self) -> Path:
        return self.path / "index.html"


def vendored() -> dict:
    """The vendored graph library: name, version, where it came from, its licence."""
    return json.loads(resources.files("sgtool.viz.view").joinpath("assets", "VENDORED.json").read_text("utf-8"))


def check_out(out: Path) -> None:
    """--out must be a new folder, an empty one, or an earlier view (replaced whole), in a writable place."""
    if out.exists() and not out.is_dir():
        raise SgtoolError(f"{flag('out')} {out} is a file, not a folder.", f"Pass a new folder, e.g. {flag('out')} ./view.")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise SgtoolError(f"{flag('out')} {out} already holds files that are not an sgtool view, so it is left alone.",
                          "Pass a new or empty folder, or the folder of an earlier view to replace it.")
    try:
        Workspace(out.parent).check_writable()  # the workspace's probe: make the folder, then a temp file in it
    except SgtoolError:
        raise SgtoolError(f"{flag('out')} {out} cannot be written: its folder {out.parent} cannot be made or written.",
                          f"Pass a folder you can write, e.g. {flag('out')} ./view.") from None


def _write_js(path: Path, variable: str, payload: object) -> None:
    path.write_text(f"{variable}={json.dumps(payload, separators=(',', ':'), ensure_ascii=False)};\n", "utf-8")


def _meta(ws: Workspace, data: ViewData) -> dict:
    """The overview's numbers: each run's eval report payload (report.json's metrics and per-predicate recall)."""
    vocab, runs = data.dataset.vocab, []
    for run in data.runs:
        outcome = EvalOutcome(run.name, data.dataset.name, data.split, run.task, data.ks, run.result,
                              ws.report_dir(run.name))
        payload = report_payload(outcome, vocab, {"head": run.head})
        runs.append({"name": run.name, "head": run.head, "task": run.task, "metrics": payload["metrics"],
                     "perPredicate": payload["per_predicate"][f"R@{data.top}"], "confusion": run.confusion.tolist()})
    return {"dataset": data.dataset.name, "split": data.split, "k": data.top, "ks": list(data.ks),
            "objects": vocab.objects, "predicates": vocab.predicates, "images": data.gt.num_images,
            "sgtool": __version__, "library": vendored(), "runs": runs}


def _copy_assets(site: Path) -> None:
    package = resources.files("sgtool.viz.view")
    (site / "assets").mkdir()
    template = Template(package.joinpath("assets", "page.html").read_text("utf-8"))
    for name, (kind, scripts) in PAGES.items():
        tags = "\n".join(f'<script src="{src}"></script>' for src in [*scripts, "assets/view.js"])
        (site / name).write_text(template.substitute(page=kind, scripts=tags), "utf-8")
    for name in ASSETS:
        (site / "assets" / name).write_bytes(package.joinpath("assets", name).read_bytes())


def write_site(site: Path, ws: Workspace, data: ViewData, marks: list[RunMarks], reporter: Reporter = SILENT) -> None:
    _copy_assets(site)
    (site / "data" / "shards").mkdir(parents=True)
    pictures = write_pictures(site, data.dataset.path, data.gt, reporter)
    _write_js(site / "data" / "meta.js", "window.SGVIEW_META", _meta(ws, data))
    index = gallery_index(data, marks)
    index["pictures"] = "".join("0" if p is None else "1" for p in pictures)
    _write_js(site / "data" / "index.js", "window.SGVIEW_INDEX", index)
    for shard in range((data.gt.num_images + SHARD_SIZE - 1) // SHARD_SIZE):
        payload = shard_payload(data, marks, shard, pictures)
        path = site / "data" / "shards" / f"{shard:04d}.js"
        path.write_text(f"sgviewShard({shard},{json.dumps(payload, separators=(',', ':'))});\n", "utf-8")
    atomic.write_json(site / MARKER, {"sgtool": __version__, "dataset": data.dataset.name, "split": data.split,
                                      "k": data.top, "runs": [r.name for r in data.runs], "images": data.gt.num_images})


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def build_view(ws: Workspace, *, runs: list[str] | None = None, split: str = "test", out: Path | None = None,
               top: int = 20, reporter: Reporter = SILENT) -> ViewOutcome:
    """Evaluate the runs and write their site to `out` (default <ws>/views/<split>), replacing an earlier view."""
    start = time.perf_counter()
    out = Path(out).expanduser() if out is not None else ws.root / "views" / split
    check_out(out)
    names = pick_runs(ws, runs, split)
    data = load_view_data(ws, names, split, top)
    reporter.info(f"Writing a view of {len(names)} run(s) on {data.gt.num_images} {split} images of "
                  f"'{data.dataset.name}' to {out}.")
    marks = [run_marks(data.gt, run, top) for run in data.runs]
    with atomic.atomic_directory(out) as staging:
        write_site(staging, ws, data, marks, reporter)
    return ViewOutcome(out, names, data.gt.num_images, top, folder_bytes(out), round(time.perf_counter() - start, 2))


def show_view(outcome: ViewOutcome, as_json: bool = False) -> None:
    if as_json:
        ui.print_json({"path": str(outcome.index), "runs": outcome.runs, "images": outcome.images, "top": outcome.top,
                       "bytes": outcome.bytes, "seconds": outcome.seconds})
        return
    ui.out.print(f"View of {', '.join(outcome.runs)} ({outcome.images} images, top {outcome.top}): "
                 f"{outcome.bytes / 2**20:.1f} MB in {outcome.seconds:g} s.", highlight=False)
    ui.out.print(f"Open {outcome.index.resolve().as_uri()}", highlight=False, soft_wrap=True)


def view_server(folder: Path, port: int = 0):
    """An http.server on 127.0.0.1 serving the site's folder (port 0: any free one)."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    handler = partial(SimpleHTTPRequestHandler, directory=str(folder))
    try:
        return ThreadingHTTPServer(("127.0.0.1", port), handler)
    except (OSError, OverflowError) as exc:
        raise SgtoolError(f"Cannot listen on 127.0.0.1:{port} ({getattr(exc, 'strerror', None) or exc}).",
                          f"Pass another {flag('port')}, or 0 for any free one.") from None


def serve_view(folder: Path, port: int = 0) -> None:
    """Serve the site with Python's http.server on 127.0.0.1 until Ctrl-C."""
    server = view_server(folder, port)
    ui.out.print(f"Serving {folder} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops).", highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
