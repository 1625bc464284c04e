"""`sgtool eval` on an ae run: triplet precision / recall / F1 per seed, mean ± sample sd, reconstructions.

The one scorer of the ae head (`score_split`, over `sgtool.eval.point_graph.triplet_scores`): training's
plateau check, `sgtool eval` and `benchmarks/ablate_ae.py` all use it.

<ws>/reports/<run>/ report.json, report.md, reconstructions.png (input | coarse drawing | refined,
predicted nodes marked, for a few images of the split), graphs/<image_id>.{gt,pred}.json (for
`sgtool draw`), written in one rename.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgtool import atomic
from sgtool.autoencoder.data import LineDrawings, load_split, to_pixels
from sgtool.config import read_yaml
from sgtool.data.graphs import SPLIT_CODES
from sgtool.data.predictions import Predictions, read_predictions
from sgtool.data.prepared import PreparedDataset, load_prepared
from sgtool.engine.record import read_status
from sgtool.data.shapes import node_points
from sgtool.errors import SgtoolError
from sgtool.eval.point_graph import DEFAULT_THRESHOLD, MATCHINGS, PointGraphs, localised, triplet_scores
from sgtool.flags import flag
from sgtool.ui import SILENT, Reporter
from sgtool.workspace import Workspace

EDGE_THRESHOLD = 0.5
SHOWN = 6  # images in the reconstruction sheet and graph dumps


@dataclass
class AEEvalOutcome:
    run: str
    dataset: str
    split: str
    threshold: float
    matching: str
    per_seed: dict[int, dict[str, float]]
    summary: dict[str, dict[str, float]]  # metric -> {"mean", "std"} (sample sd)
    report_dir: Path


def gt_point_graphs(data: LineDrawings) -> PointGraphs:
    g = data.graphs
    return PointGraphs(g.box_offsets, node_points(g.boxes), g.relations.pairs)


def predicted_point_graphs(predictions: Predictions, min_prob: float = EDGE_THRESHOLD) -> PointGraphs:
    keep = predictions.rel_scores[:, 1] > min_prob
    return PointGraphs(predictions.box_offsets, node_points(predictions.boxes), predictions.pairs[keep])


def score_split(data: LineDrawings, predictions: Predictions, threshold: float = DEFAULT_THRESHOLD,
                matching: str = "nearest") -> dict[str, float]:
    """Triplet P / R / F1 and their counts, and `localised`: the fraction of GT nodes with a slot within
    `threshold` px."""
    pred, gt = predicted_point_graphs(predictions), gt_point_graphs(data)
    return {**triplet_scores(pred, gt, threshold, matching), "localised": localised(pred, gt, threshold)}


def summarise(per_seed: dict[int, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample sd (n - 1; 0 for one seed) of precision, recall and F1 over the seeds."""
    names = ("precision", "recall", "f1")
    values = {n: [m[n] for m in per_seed.values()] for n in names}
    return {n: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
            for n, v in values.items()}


def run_ae_eval(ws: Workspace, *, run: str | None = None, split: str = "test", threshold: float = DEFAULT_THRESHOLD,
                matching: str = "nearest", reporter: Reporter = SILENT) -> AEEvalOutcome:
    if matching not in MATCHINGS:
        raise SgtoolError(f"Unknown node matching '{matching}'.", f"Use one of: {', '.join(MATCHINGS)}.")
    if split not in SPLIT_CODES:
        raise SgtoolError(f"Unknown split '{split}'.", f"Use one of: {', '.join(SPLIT_CODES)}.")
    if threshold <= 0:
        raise SgtoolError(f"The node distance threshold must be positive, not {threshold}.", "Use 5 pixels.")
    run = run if run is not None else ws.latest_run()
    folder = ws.require_run(run)
    settings = read_yaml(folder / "config.yaml")
    if read_status(folder) not in (None, "complete"):
        raise SgtoolError(f"The ae run '{run}' has not finished training ({read_status(folder)}).",
                          f"Finish it with `sgtool train {flag('resume')} {run}`.")
    prepared = load_prepared(ws, settings["dataset"])
    data = load_split(prepared, split, int(settings["options"]["resolution"]))
    if len(data) == 0:
        raise SgtoolError(f"The {split} split of '{prepared.name}' holds no images.", f"Evaluate another split with {flag('split')}.")
    reporter.info(f"Evaluating ae run {run} on the {split} split of '{prepared.name}' ({len(data)} images, "
                  f"{len(settings['seeds'])} seed(s)).")
    per_seed = {}
    for s in settings["seeds"]:
        predictions = read_predictions(folder / "predictions" / f"seed{s}" / f"{split}.h5")
        if not np.array_equal(predictions.image_ids, data.graphs.image_ids):
            raise SgtoolError(f"The predictions of seed {s} are not for the {split} images of '{prepared.name}'.",
                              "Train the run again.")
        per_seed[int(s)] = score_split(data, predictions, threshold, matching)
    outcome = AEEvalOutcome(run, prepared.name, split, threshold, matching, per_seed, summarise(per_seed),
                            ws.report_dir(run))
    ws.check_writable()
    with atomic.exclusive(ws.report_dir(run), f"the report of run '{run}'"), \
            atomic.atomic_directory(ws.report_dir(run)) as staging:
        write_ae_report(staging, outcome, settings, prepared, data, folder)
    return outcome


# ---------------------------------------------------------------- the report

def write_ae_report(folder: Path, outcome: AEEvalOutcome, settings: dict, prepared: PreparedDataset,
                    data: LineDrawings, run_folder: Path) -> None:
    from sgtool.autoencoder.inference import infer, load_model

    payload = {"run": outcome.run, "head": "ae", "dataset": outcome.dataset, "split": outcome.split,
               "node_threshold_px": outcome.threshold, "node_matching": outcome.matching, "edge_threshold": EDGE_THRESHOLD,
               "options": settings.get("options"), "per_seed": outcome.per_seed, "summary": outcome.summary}
    atomic.write_json(folder / "report.json", payload)
    atomic.write_text(folder / "report.md", markdown(payload))
    first = settings["seeds"][0]
    model, config = load_model(run_folder / "checkpoints" / f"model-seed{first}.pt")
    subset = LineDrawings(data.graphs.select(np.arange(min(SHOWN, len(data)))), data.images[:SHOWN],
                          data.points[:SHOWN], data.edges[:SHOWN], data.canvas)
    out = infer(model, subset, config.sigma_end, "cpu", keep=("coords", "edge_prob", "coarse", "refined"))
    save_sheet(folder / "reconstructions.png", subset, out)
    dump_graphs(folder / "graphs", outcome.report_dir / "graphs", subset, out, prepared, model.pairs.numpy())


def markdown(payload: dict) -> str:
    lines = [f"# ae run {payload['run']} on {payload['dataset']} ({payload['split']})", "",
             f"Nodes match within {payload['node_threshold_px']} px ({payload['node_matching']}); edges kept at "
             f"probability > {payload['edge_threshold']}; identical triplets merged, every other predicted triplet "
             "counted (self-loops and unmatched nodes: false positives); micro-averaged over images.", "",
             "| seed | precision (%) | recall (%) | F1 (%) |", "| --- | --- | --- | --- |"]
    for seed, m in payload["per_seed"].items():
        lines.append(f"| {seed} | {100 * m['precision']:.1f} | {100 * m['recall']:.1f} | {100 * m['f1']:.1f} |")
    s = payload["summary"]
    lines.append("| mean ± sample sd | " + " | ".join(f"{100 * s[k]['mean']:.1f} ± {100 * s[k]['std']:.1f}"
                                                for k in ("precision", "recall", "f1")) + " |")
    return "\n".join(lines + ["", "![reconstructions](reconstructions.png)", ""])


def save_sheet(path: Path, data: LineDrawings, out: dict[str, np.ndarray]) -> None:
    """One row per image: input | coarse drawing | refined reconstruction, predicted nodes in red."""
    from PIL import Image, ImageDraw

    rows = []
    for i in range(len(data)):
        tiles = [data.images[i] / 255.0, out["coarse"][i, 0], out["refined"][i, 0]]
        row = np.concatenate([np.pad(t, 2, constant_values=0.5) for t in tiles], 1)
        rows.append(row)
    sheet = Image.fromarray((np.concatenate(rows, 0) * 255).astype(np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(sheet)
    r = data.images.shape[-1]
    for i in range(len(data)):
        for x, y in to_pixels(out["coords"][i], r):
            cx, cy = x + 2, y + 2 + i * (r + 4)
            draw.ellipse([cx - 1.5, cy - 1.5, cx + 1.5, cy + 1.5], outline=(255, 0, 0))
    sheet = sheet.resize((sheet.width * 2, sheet.height * 2), Image.NEAREST)
    with atomic.atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


def dump_graphs(folder: Path, final_folder: Path, data: LineDrawings, out: dict[str, np.ndarray],
                prepared: PreparedDataset, pairs: np.ndarray) -> None:
    from sgtool.autoencoder.inference import NODE_BOX
    from sgtool.viz.graph_json import build_graph, relative_image, write_graph

    g = data.graphs
    for i in range(len(data)):
        image = prepared.path / g.files[i]
        name = relative_image(image, final_folder) if image.is_file() else None
        lo, hi = g.box_offsets[i], g.box_offsets[i + 1]
        rlo, rhi = g.relations.offsets[i], g.relations.offsets[i + 1]
        common = {"image": name, "width": int(g.widths[i]), "height": int(g.heights[i]), "vocab": prepared.vocab}
        write_graph(folder / f"{g.image_ids[i]}.gt.json",
                    build_graph(boxes=g.boxes[lo:hi], labels=g.labels[lo:hi], pairs=g.relations.pairs[rlo:rhi] - lo,
                                predicates=g.relations.predicates[rlo:rhi], **common))
        xy = to_pixels(out["coords"][i], data.canvas)
        keep = out["edge_prob"][i] > EDGE_THRESHOLD
        write_graph(folder / f"{g.image_ids[i]}.pred.json",
                    build_graph(boxes=np.concatenate([xy - NODE_BOX / 2, xy + NODE_BOX / 2], 1),
                                labels=np.ones(len(xy), np.int64), pairs=pairs[keep],
                                predicates=np.ones(int(keep.sum()), np.int64), rel_scores=out["edge_prob"][i][keep],
                                **common))


def show_ae_eval(outcome: AEEvalOutcome, as_json: bool = False) -> None:
    from sgtool import ui

    if as_json:
        ui.print_json({"run": outcome.run, "dataset": outcome.dataset, "split": outcome.split,
                       "per_seed": outcome.per_seed, "summary": outcome.summary,
                       "report": str(outcome.report_dir / "report.json")})
        return
    rows = [(str(s), *(f"{100 * m[k]:.1f}" for k in ("precision", "recall", "f1"))) for s, m in outcome.per_seed.items()]
    rows.append(("mean ± sample sd", *(f"{100 * outcome.summary[k]['mean']:.1f} ± {100 * outcome.summary[k]['std']:.1f}"
                                 for k in ("precision", "recall", "f1"))))
    ui.print_table(f"Run {outcome.run} on {outcome.dataset} ({outcome.split}): triplets, nodes within "
                   f"{outcome.threshold:g} px", ("seed", "precision (%)", "recall (%)", "F1 (%)"), rows)
    ui.out.print(f"Report: {outcome.report_dir / 'report.md'}", highlight=False)
