"""A small workspace for the `sgtool view` tests: the tiny dataset (with images) and two freq runs."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgg_fixtures import save_tiny
from sgtool.data.predictions import read_predictions
from sgtool.data.prepared import PreparedDataset, load_prepared_priors
from sgtool.engine.train import train
from sgtool.eval import EvalResult, evaluate
from sgtool.eval.run_eval import seen_triplets
from sgtool.workspace import Workspace


@dataclass
class ViewWorkspace:
    ws: Workspace
    prepared: PreparedDataset
    runs: list[str]


def make_view_workspace(root: Path, with_images: bool = True) -> ViewWorkspace:
    ws = Workspace(root)
    prepared = save_tiny(ws, with_images=with_images)
    plain = train(ws, head="freq").run
    overlap = train(ws, head="freq", overlap=True, name="freq-overlap").run
    return ViewWorkspace(ws, prepared, [plain, overlap])


def evaluator(view: ViewWorkspace, run: str, k: int, split: str = "test") -> EvalResult:
    """The engine on one run, independently of the view's code."""
    gt = view.prepared.graphs.split_subset(split)
    pred = read_predictions(view.ws.run_dir(run) / "predictions" / f"{split}.h5")
    priors = load_prepared_priors(view.ws, view.prepared.name)
    return evaluate(gt, pred, task="predcls", num_predicates=len(view.prepared.vocab.predicates) + 1,
                    ks=tuple(sorted({20, 50, 100, k})), predicate_groups=priors["predicate_groups"],
                    seen_triplets=seen_triplets(priors))


def image_counts(result: EvalResult, image: int, k: int) -> tuple[int, int, int]:
    """(hits, false positives, misses) of one image at K, from the evaluator's Hits."""
    recalled = result.hits.gt_recalled(image, k)
    _, hit = result.hits.top_pairs(image, k)
    return int(recalled.sum()), int((~hit).sum()), int((~recalled).sum())


def read_js(path: Path) -> object:
    """The JSON payload of one of the site's data scripts (`window.X={...};` or `sgviewShard(n,[...]);`)."""
    text = path.read_text(encoding="utf-8").strip()
    found = re.match(r"^(?:window\.\w+=|sgviewShard\(\d+,)(.*?)\)?;$", text, re.S)
    assert found, f"{path} is not a data script"
    return json.loads(found.group(1))


def recall_mean(values: list) -> float:
    return float(np.mean([v for v in values if v is not None]))
