"""The ae auto-encoder's ablations as its paper (Lu & Dubbelman) runs them: Tables 1-3, and our additions.

Rows: the full model (max-nodes 4, Eq. 5 auxiliary loss, MS-SSIM on the refined image), the paper's
supervised baseline (raw channel-summed attention vs the GT heat map by MSE, attention alone for 2
epochs then frozen, then the matched adjacency's cross entropy) and our stronger one (Table 1);
max-nodes 5 / 6 / 8 (Table 2); without the auxiliary loss, SSIM instead of MS-SSIM, the loss on the
coarse image with MS-SSIM and with SSIM (Table 3); and one row per thing we added to the paper's
model: the refiner without its fixed sharpening path, the encoder without CoordConv and dilation.

Protocol: every row trains the same optimiser steps for the same seeds (>= 5); a seed that ends on
the blank-drawing plateau is kept and counted (`on_plateau`); restarts happen only when asked
(`--plateau-restarts`, default 0) and are then counted in their own column. Each seed is scored on
the test split by the ae head's one scorer (`sgtool.autoencoder.evaluate.score_split`) under the
default many-to-one node matching and the stricter one-to-one (Hungarian) matching. Mean and sample sd
per row, and Welch's t-test per compared pair (the paper's claim beside ours: "reproduced" only when
resolved, p < 0.05, in the paper's direction), all computed here, written by results_io to
benchmarks/results/ablate_ae.json with the paper's numbers beside ours. `--render-docs` writes the
tables of docs/methods/ae.md from that JSON alone.

Budgets (per seed):
  small: 400 steps of batch 32 on <= 4,000 training images, lr x 4 of the paper's (2e-3 / 1.2e-3:
         the CPU scaling, few steps of a quarter batch), 5 seeds.
  paper: the paper's batch 128, lr 5e-4 (baseline 3e-4), 30 epochs of 40,000 training images
         (9,360 steps, lr / 10 for the last third), 10 seeds; needs a 50,000-image dataset.
  --steps / --batch-size / --train-images / --width / --seeds shrink a budget for every row alike (recorded).

    python benchmarks/ablate_ae.py -w WS --dataset shapes --budget small --jobs 2
    python benchmarks/ablate_ae.py -w WS --rows full,k8 --seeds 2 --steps 20 --no-write   # a smoke
    python benchmarks/ablate_ae.py --render-docs
    python benchmarks/ablate_ae.py -w WS --rows full,supervised-paper,supervised-strong --result ablate_ae_table1
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from results_io import RESULTS, summarise, welch, write_result

ROWS = {  # name: (AEConfig settings, what it is)
    "full": ({}, "ours: max-nodes 4, L_aux, MS-SSIM on the refined image"),
    "supervised-paper": ({"supervised": True, "baseline": "paper"}, "supervised baseline, the paper's"),
    "supervised-strong": ({"supervised": True, "baseline": "strong"}, "supervised baseline, ours (KL + L1 + CE)"),
    "k5": ({"max_nodes": 5}, "max-nodes 5"),
    "k6": ({"max_nodes": 6}, "max-nodes 6"),
    "k8": ({"max_nodes": 8}, "max-nodes 8"),
    "no-aux": ({"aux_weight": 0.0}, "without L_aux"),
    "ssim": ({"recon": "ssim"}, "SSIM on the refined image"),
    "coarse-msssim": ({"loss_on": "coarse"}, "MS-SSIM on the coarse image"),
    "coarse-ssim": ({"loss_on": "coarse", "recon": "ssim"}, "SSIM on the coarse image"),
    "no-sharpen": ({"refiner_sharpen": False}, "ours without the refiner's sharpening path"),
    "plain-encoder": ({"encoder": "plain"}, "ours without CoordConv and dilation in the encoder"),
}
TABLES = {
    "table1": ("full", "supervised-paper", "supervised-strong"),
    "table2": ("full", "k5", "k6", "k8"),
    "table3": ("full", "no-aux", "ssim", "coarse-msssim", "coarse-ssim"),
    "added": ("full", "no-sharpen", "plain-encoder"),
}
PAPER = {  # the paper's mean, sd (10 seeds), %: Tables 1-3
    "full": {"precision": (57.7, 2.7), "recall": (84.1, 12.6), "f1": (67.9, 5.4)},
    "supervised-paper": {"precision": (54.0, 5.9), "recall": (70.9, 5.9), "f1": (61.3, 5.9)},
    "k5": {"precision": (46.1, 3.5), "recall": (68.9, 14.9), "f1": (54.6, 6.9)},
    "k6": {"precision": (43.2, 6.7), "recall": (62.0, 12.9), "f1": (49.9, 5.9)},
    "k8": {"precision": (31.4, 2.9), "recall": (62.3, 5.5), "f1": (41.7, 2.8)},
    "no-aux": {"f1": (63.2, 8.2)},
    "ssim": {"f1": (50.3, 17.7)},
    "coarse-msssim": {"f1": (51.7, 7.1)},
    "coarse-ssim": {"f1": (12.1, 9.7)},
}
PAPER_SEEDS = 10
COMPARED = [  # (table, higher per the paper, lower per the paper, metric); None: no paper claim
    ("table1", "full", "supervised-paper", "f1"),
    ("table1", "supervised-strong", "supervised-paper", None),
    ("table2", "full", "k5", "f1"), ("table2", "k5", "k6", "f1"), ("table2", "k6", "k8", "f1"),
    ("table2", "full", "k8", "f1"), ("table2", "full", "k8", "precision"),
    ("table3", "full", "no-aux", "f1"), ("table3", "full", "ssim", "f1"), ("table3", "full", "coarse-msssim", "f1"),
    ("table3", "full", "coarse-ssim", "f1"), ("table3", "coarse-msssim", "coarse-ssim", "f1"),
    ("added", "full", "no-sharpen", None), ("added", "full", "plain-encoder", None),
]
BUDGETS = {
    "small": {"steps": 400, "batch_size": 32, "train_images": 4000, "width": 24, "seeds": 5, "plateau_restarts": 0,
              "lr": {"ae": 2e-3, "supervised": 1.2e-3}},
    "paper": {"steps": 9360, "batch_size": 128, "train_images": 40000, "width": 24, "seeds": 10, "plateau_restarts": 0,
              "lr": {"ae": 5e-4, "supervised": 3e-4}},
}
MATCHINGS = ("nearest", "hungarian")
SHRINKS = ("steps", "batch_size", "train_images", "width", "seeds")
SOURCES = ["sgtool/autoencoder", "sgtool/eval/point_graph.py", "sgtool/engine/loop.py", "sgtool/data/shapes.py"]
DOCS = Path(__file__).resolve().parent.parent / "docs" / "methods" / "ae.md"
BEGIN, END = "<!-- ablate_ae tables: begin -->", "<!-- ablate_ae tables: end -->"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-w", "--workspace", help="workspace holding a prepared shapes dataset")
    p.add_argument("--dataset", default="shapes")
    p.add_argument("--budget", choices=tuple(BUDGETS), default="small")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    for name in ("seeds", "steps", "batch-size", "train-images", "width", "plateau-restarts"):
        p.add_argument(f"--{name}", type=int, help=f"override the budget's {name.replace('-', ' ')} (every row alike)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--jobs", type=int, default=1, help="rows trained at the same time, one torch thread each")
    p.add_argument("--tag", help="run-name tag; runs of an earlier call with this tag are scored, not retrained")
    p.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results alone")
    p.add_argument("--result", default="ablate_ae",
                   help="name of the JSON written (benchmarks/results/NAME.json); the docs' tables read ablate_ae")
    p.add_argument("--render-docs", action="store_true", help="write docs/methods/ae.md's tables from the JSON")
    p.add_argument("--choose-heat", action="store_true",
                   help="choose the paper baseline's heat-map sigma and scale on the validation split (its own JSON)")
    return p.parse_args(argv)


def budget_of(args: argparse.Namespace) -> dict:
    budget = dict(BUDGETS[args.budget])
    for key in ("seeds", "steps", "batch_size", "train_images", "width", "plateau_restarts"):
        if getattr(args, key) is not None:
            budget[key] = getattr(args, key)
    return budget


def row_overrides(row: str, budget: dict) -> list[str]:
    settings = ROWS[row][0]
    lr = budget["lr"]["supervised" if settings.get("supervised") else "ae"]
    plain = {k: v for k, v in settings.items() if k != "supervised"}
    common = {k: budget[k] for k in ("steps", "seeds", "batch_size", "train_images", "width", "plateau_restarts")}
    return [f"{k}={v}" for k, v in {**plain, **common, "lr": lr, "threads": 1, "log_every": 10_000}.items()]


def train_row(workspace: str, dataset: str, row: str, overrides: list[str], seed: int, name: str) -> str:
    """Train one row's seeds into the run `name` (a worker process); an earlier complete run is kept."""
    from sgtool.autoencoder.train import train_autoencoder
    from sgtool.engine.record import read_status
    from sgtool.workspace import Workspace

    ws = Workspace(workspace)
    if ws.run_dir(name).is_dir() and read_status(ws.run_dir(name)) == "complete":
        return name
    train_autoencoder(ws, dataset=dataset, name=name, overrides=overrides, seed=seed,
                      supervised=ROWS[row][0].get("supervised", False))
    return name


def score_row(workspace: str, dataset: str, name: str) -> dict:
    """Per kept seed: the test split's scores under both node matchings; the run's restarts and plateau seeds."""
    from sgtool.autoencoder.data import load_split
    from sgtool.autoencoder.evaluate import score_split
    from sgtool.config import read_yaml
    from sgtool.data.predictions import read_predictions
    from sgtool.data.prepared import load_prepared
    from sgtool.workspace import Workspace

    ws = Workspace(workspace)
    folder = ws.run_dir(name)
    metrics = json.loads((folder / "metrics.json").read_text())
    settings = read_yaml(folder / "config.yaml")
    test = load_split(load_prepared(ws, dataset), "test", int(settings["options"]["resolution"]))
    per_seed = {}
    for s in metrics["seeds"]:
        predictions = read_predictions(folder / "predictions" / f"seed{s}" / "test.h5")
        per_seed[s] = {m: score_split(test, predictions, matching=m) for m in MATCHINGS}
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    steps = {r["seed"]: r["steps"] for r in log if r.get("event") == "trained"}
    on_plateau = [s for s, m in zip(metrics["seeds"], metrics["per_seed"]) if m["recall"] == 0]
    return {"run": name, "seeds": metrics["seeds"], "steps_per_seed": [steps[s] for s in metrics["seeds"]],
            "plateau_restarts": metrics["plateau_restarts"], "replaced_seeds": metrics["plateau_seeds"],
            "on_plateau": on_plateau, "per_seed": per_seed}


def row_numbers(scored: dict) -> dict:
    """Mean and sample sd over the kept seeds, %, under each matching; the nodes found, the self-loops."""
    out = {k: scored[k] for k in ("seeds", "steps_per_seed", "plateau_restarts", "replaced_seeds", "on_plateau")}
    for m in MATCHINGS:
        per = [scored["per_seed"][s][m] for s in scored["seeds"]]
        out[m] = {k: summarise([100 * p[k] for p in per]) for k in ("precision", "recall", "f1")}
        out[m]["self_loops_per_predicted"] = summarise([100 * p["self_loops"] / max(p["predicted"], 1) for p in per])
    out["localised"] = summarise([100 * scored["per_seed"][s]["nearest"]["localised"] for s in scored["seeds"]])
    return out


def paper_welch(higher: str, lower: str, metric: str) -> dict | None:
    """The paper's own difference, Welch's test from its mean and sd of 10 seeds."""
    from scipy import stats

    if metric not in PAPER.get(higher, {}) or metric not in PAPER.get(lower, {}):
        return None
    (m1, s1), (m2, s2) = PAPER[higher][metric], PAPER[lower][metric]
    t, p = stats.ttest_ind_from_stats(m1, s1, PAPER_SEEDS, m2, s2, PAPER_SEEDS, equal_var=False)
    return {"diff": round(m1 - m2, 2), "p": float(p), "resolved": bool(p < 0.05)}


def compare(rows: dict) -> list[dict]:
    """Welch's t-test per compared pair on our per-seed values (default matching) and the verdict."""
    out = []
    for table, a, b, metric in COMPARED:
        if a not in rows or b not in rows:
            continue
        key = metric or "f1"
        test = welch(rows[a]["nearest"][key]["values"], rows[b]["nearest"][key]["values"])
        if metric is None:
            verdict = (f"resolved: {a if test['diff'] > 0 else b} higher" if test["resolved"] else "not resolved")
        elif not test["resolved"]:
            verdict = "not resolved"
        else:
            verdict = "reproduced" if test["diff"] > 0 else "reversed"
        out.append({"table": table, "pair": [a, b], "metric": key,
                    "paper_claim": f"{a} > {b}" if metric else None, "ours": test, "verdict": verdict,
                    "paper": paper_welch(a, b, metric) if metric else None})
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.render_docs:
        return render_docs(json.loads((RESULTS / "ablate_ae.json").read_text()))
    if not args.workspace:
        sys.exit("give -w WORKSPACE (a workspace with a prepared shapes dataset)")
    budget = budget_of(args)
    if args.choose_heat:
        return choose_heat(args, budget)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown or budget["seeds"] < 1:
        sys.exit(f"unknown row {unknown[0]}; known: {', '.join(ROWS)}" if unknown else "--seeds must be >= 1")
    tag, start = args.tag or time.strftime("%H%M%S"), time.time()
    names = {r: f"ablate-{tag}-{r}" for r in rows}
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for f in [pool.submit(train_row, args.workspace, args.dataset, r, row_overrides(r, budget), args.seed, names[r])
                  for r in rows]:
            f.result()
    numbers = {r: {**row_numbers(score_row(args.workspace, args.dataset, names[r])), "what": ROWS[r][1],
                   "settings": ROWS[r][0]} for r in rows}
    payload = {"tables": {t: [r for r in members if r in numbers] for t, members in TABLES.items()},
               "rows": numbers, "pairs": compare(numbers), "wall_minutes": round((time.time() - start) / 60, 1)}
    seeds = list(range(args.seed, args.seed + budget["seeds"]))
    budgets = {**budget, "dataset": args.dataset, "jobs": args.jobs, "tag": tag, "scale": args.budget,
               "reduced": any(getattr(args, k) is not None for k in SHRINKS)}
    if not args.no_write:
        write_result(args.result, budgets=budgets, seeds=seeds, numbers=payload, sources=SOURCES,
                     paper={"seeds": PAPER_SEEDS, "rows": PAPER}, notes=notes(budget, args))
    print(json.dumps(payload, indent=2))
    print(markdown({"budgets": budgets, "seeds": seeds, "numbers": payload}))
    return payload


def notes(budget: dict, args: argparse.Namespace) -> str:
    shrunk = [k for k in SHRINKS if getattr(args, k) is not None]
    said = f"budget '{args.budget}' shrunk for every row alike ({', '.join(shrunk)})" if shrunk else f"budget '{args.budget}'"
    return (f"{said}: {budget['steps']} steps of batch {budget['batch_size']} per seed, {budget['seeds']} seeds, "
            f"<= {budget['train_images']} training images, encoder width {budget['width']}; failures kept; "
            f"restarts allowed per row: {budget['plateau_restarts']}.")


# ---------------------------------------------------------------- the baseline's heat map, chosen on validation

HEAT_GRID = [(0.5, 1.0), (1.0, 1.0), (2.0, 1.0), (1.0, 4.0), (2.0, 4.0)]  # (sigma in attention cells, peak)


def heat_stage(workspace: str, dataset: str, budget: dict, sigma: float, scale: float, seed: int) -> float:
    """Train the paper baseline's first stage alone (2 epochs of the training images: the heat map) and
    return the fraction of validation nodes with a DSNT point within 5 px."""
    import torch

    from sgtool.autoencoder.config import AEConfig
    from sgtool.autoencoder.data import load_split
    from sgtool.autoencoder.evaluate import score_split
    from sgtool.autoencoder.inference import model_for, predict
    from sgtool.autoencoder.train import fit
    from sgtool.data.prepared import load_prepared
    from sgtool.workspace import Workspace

    prepared = load_prepared(Workspace(workspace), dataset)
    train, val = load_split(prepared, "train", 64, budget["train_images"]), load_split(prepared, "val", 64)
    steps = 2 * max(1, len(train) // budget["batch_size"])
    config = AEConfig(supervised=True, steps=steps, batch_size=budget["batch_size"], width=budget["width"],
                      lr=budget["lr"]["supervised"], lr_drop_at=1.0,  # the baseline's drop comes after this stage
                      heat_sigma=sigma, heat_scale=scale, freeze_attention_epochs=1000, threads=1, log_every=10_000)
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = model_for(config)
    fit(model, train, config, seed, "cpu")
    return 100 * score_split(val, predict(model, val, config, "cpu"))["localised"]


def choose_heat(args: argparse.Namespace, budget: dict) -> dict:
    """Every (sigma, scale) of HEAT_GRID for the budget's seeds; the best mean validation localisation wins."""
    seeds = list(range(args.seed, args.seed + budget["seeds"]))
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {(g, s): pool.submit(heat_stage, args.workspace, args.dataset, budget, *g, s)
                   for g in HEAT_GRID for s in seeds}
        values = {g: [futures[g, s].result() for s in seeds] for g in HEAT_GRID}
    grid = [{"sigma": g[0], "scale": g[1], "localised_val": summarise(v)} for g, v in values.items()]
    best = max(grid, key=lambda r: r["localised_val"]["mean"])
    payload = {"grid": grid, "chosen": {"heat_sigma": best["sigma"], "heat_scale": best["scale"]}}
    if not args.no_write:
        write_result("ablate_ae_heat", budgets={**budget, "dataset": args.dataset, "stage": "2 epochs, heat map only"},
                     seeds=seeds, numbers=payload, sources=SOURCES,
                     notes="The paper baseline's heat map (sigma, peak) chosen on the validation split: % of "
                           "validation nodes with a DSNT point within 5 px after the attention stage.")
    print(json.dumps(payload, indent=2))
    return payload


# ---------------------------------------------------------------- tables from the JSON

def cell(summary: dict) -> str:
    return f"{summary['mean']:.1f} ± {summary['sd']:.1f}"


def paper_cell(row: str, metric: str) -> str:
    value = PAPER.get(row, {}).get(metric)
    return f"{value[0]} ± {value[1]}" if value else "—"


def precision_without_self_loops(nearest: dict) -> dict:
    """Each seed's precision with its self-loops taken out of the predicted triplets: a self-loop is never a hit
    (no GT edge joins a node to itself), so it is P / (1 - share of self-loops)."""
    pairs = zip(nearest["precision"]["values"], nearest["self_loops_per_predicted"]["values"])
    return summarise([p / (1 - s / 100) if s < 100 else 0.0 for p, s in pairs])


def markdown(record: dict) -> str:
    """Tables 1-3 and our additions, the paper's numbers beside ours, then the compared pairs."""
    numbers, b = record["numbers"], record["budgets"]
    lines = [f"Budget: {b['steps']} optimiser steps of batch {b['batch_size']} per seed, <= {b['train_images']} "
             f"training images, encoder width {b.get('width', 24)}, seeds {', '.join(map(str, record.get('seeds', [])))}; mean ± sample sd over the seeds, "
             "%, test split; nodes matched many-to-one within 5 px (one-to-one Hungarian in its own column).", ""]
    for table, members in numbers["tables"].items():
        lines += [f"**{table}**", "", "| row | P | R | F1 | paper P | paper R | paper F1 | F1 one-to-one | "
                  "nodes within 5 px | self-loops, % of predicted | P without self-loops | on plateau | restarts |",
                  "| --- " * 13 + "|"]
        for r in members:
            n = numbers["rows"][r]
            lines.append(f"| {r}: {n['what']} | {cell(n['nearest']['precision'])} | {cell(n['nearest']['recall'])} | "
                         f"**{cell(n['nearest']['f1'])}** | {paper_cell(r, 'precision')} | {paper_cell(r, 'recall')} | "
                         f"{paper_cell(r, 'f1')} | {cell(n['hungarian']['f1'])} | {cell(n['localised'])} | "
                         f"{cell(n['nearest']['self_loops_per_predicted'])} | "
                         f"{cell(precision_without_self_loops(n['nearest']))} | "
                         f"{len(n['on_plateau'])} of {len(n['seeds'])} | {n['plateau_restarts']} |")
        lines.append("")
    lines += ["| table | pair | metric | paper says | paper's own p | our difference | our p (Welch) | verdict |",
              "| --- " * 8 + "|"]
    for c in numbers["pairs"]:
        paper = c["paper"]
        p_paper = f"{paper['p']:.3g}" if paper else "—"
        p_ours = "—" if c["ours"]["p"] is None else f"{c['ours']['p']:.3g}"
        diff = "—" if c["ours"]["diff"] is None else f"{c['ours']['diff']:+.1f}"
        lines.append(f"| {c['table']} | {c['pair'][0]} vs {c['pair'][1]} | {c['metric']} | {c['paper_claim'] or '—'} | "
                     f"{p_paper} | {diff} | {p_ours} | {c['verdict']} |")
    return "\n".join(lines) + "\n"


def heat_markdown(record: dict) -> str:
    """The paper baseline's heat-map choice on validation (benchmarks/results/ablate_ae_heat.json)."""
    b, chosen = record["budgets"], record["numbers"]["chosen"]
    lines = [f"The paper baseline's heat map, chosen on the validation split (`--choose-heat`: the attention stage "
             f"alone, 2 epochs of {b['train_images']} images at batch {b['batch_size']}, encoder width {b['width']}, "
             f"seeds {', '.join(map(str, record['seeds']))}): % of validation nodes with a DSNT point within 5 px, "
             "mean ± sample sd.", "", "| sigma (cells) | peak | nodes within 5 px |", "| --- | --- | --- |"]
    lines += [f"| {g['sigma']} | {g['scale']} | {cell(g['localised_val'])} |" for g in record["numbers"]["grid"]]
    lines += ["", f"Chosen (highest mean): sigma {chosen['heat_sigma']}, peak {chosen['heat_scale']}: the AEConfig "
              "defaults `heat_sigma`, `heat_scale`.", ""]
    return "\n".join(lines) + "\n"


def render_docs(record: dict) -> dict:
    """Replace the block between the markers of docs/methods/ae.md with the tables of this record."""
    text = DOCS.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        sys.exit(f"{DOCS} lacks the markers {BEGIN} / {END}")
    head, rest = text.split(BEGIN, 1)
    heat = RESULTS / "ablate_ae_heat.json"
    block = (f"{BEGIN}\n<!-- generated by `python benchmarks/ablate_ae.py --render-docs` from "
             f"benchmarks/results/ablate_ae.json (commit {record['commit']}); do not edit by hand -->\n\n"
             f"{markdown(record)}\n{heat_markdown(json.loads(heat.read_text())) if heat.is_file() else ''}{END}")
    DOCS.write_text(head + block + rest.split(END, 1)[1], encoding="utf-8")
    return record


if __name__ == "__main__":
    main()
