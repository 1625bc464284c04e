"""`sgtool view`: a static site comparing runs on one split (overview, gallery, image pages).

runs.py evaluates each run with the evaluator of `sgtool eval`; records.py turns its per-image hits
into the gallery index and the image shards; pictures.py writes images and thumbnails; site.py
stages the site and renames it into place. The pages (assets/) are plain HTML + JavaScript with
the vendored Cytoscape.js, and open from disk.
"""
from __future__ import annotations

from sgtool.viz.view.site import ViewOutcome, build_view, serve_view, show_view

__all__ = ["ViewOutcome", "build_view", "serve_view", "show_view"]
