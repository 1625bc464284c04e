"""Why the paper baseline's heat-map stage does not put every slot's DSNT point on a node (issue 28).

The stage (Lu & Dubbelman, Sec. 4): MSE between the raw channel sum of the K attention maps and the
ground-truth heat map (unit-peak Gaussians of sigma cells at the nodes, x peak). It is trained alone
here, exactly as `trainee.step_loss` trains it (Adam beta (0.6, 0.9), gradients clipped at 5, the
constant learning rate of the stage), at the independent review's size: 1,600 training drawings,
batch 32, encoder width 24, lr 1.2e-3 (the `small` budget's), and measured after `--at` steps on the
first 200 drawings of the validation and of the test split. Per (sigma, peak) and seed:

- dsnt: % of GT nodes with a slot's DSNT point (the model's coordinates) within 5 px (`localised`);
- argmax: the same with each slot's peak cell instead of its DSNT point;
- split: % of slots holding >= 0.2 of their mass within 2 cells of each of two different nodes;
- stray: mean % of a slot's mass farther than 2 cells from every node.

The summed loss does not say which slot holds which node, so a slot may split its mass between nodes
without cost; DSNT then puts its point between them while its peak stays on one.

    python benchmarks/ae_heat_localisation.py -w /tmp/sgtool-remeasure-ae --seeds 3
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from results_io import summarise, write_result

SOURCES = ["sgtool/autoencoder", "sgtool/eval/point_graph.py", "sgtool/data/shapes.py"]
NEAR_CELLS = 2.0  # "near a node": within this many attention cells
SPLIT_MASS = 0.2


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-w", "--workspace", required=True, help="workspace holding a prepared shapes dataset")
    p.add_argument("--dataset", default="shapes")
    p.add_argument("--train-images", type=int, default=1600)
    p.add_argument("--eval-images", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--width", type=int, default=24)
    p.add_argument("--lr", type=float, default=1.2e-3)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--at", default="50,100,200", help="steps at which to measure (comma-separated)")
    p.add_argument("--grid", default="1:1,2:1,0.5:1,1:4", help="sigma:peak settings (comma-separated)")
    p.add_argument("--no-write", action="store_true")
    return p.parse_args(argv)


def slot_maps(model, data) -> np.ndarray:
    """(I, K, H, W) attention maps of every drawing (evaluation mode)."""
    import torch

    from sgtool.autoencoder.inference import as_batch

    model.eval()
    with torch.no_grad():
        maps = [model.encoder(as_batch(data, np.arange(lo, min(lo + 100, len(data))), "cpu"))[0]
                for lo in range(0, len(data), 100)]
    return torch.cat(maps).numpy()


def within_5px(points: np.ndarray, data) -> float:
    """% of GT nodes with one of the image's (K, 2) normalised points within 5 px."""
    from sgtool.autoencoder.data import to_pixels
    from sgtool.autoencoder.evaluate import gt_point_graphs
    from sgtool.eval.point_graph import PointGraphs, localised

    n, k = points.shape[:2]
    pred = PointGraphs(np.arange(n + 1) * k, to_pixels(points.reshape(-1, 2), data.canvas), np.zeros((0, 2), np.int64))
    return 100 * localised(pred, gt_point_graphs(data))


def measure(maps: np.ndarray, data) -> dict[str, float]:
    """dsnt / argmax localisation, split slots and stray mass (module docstring) of these maps."""
    n, k, h, w = maps.shape
    centres = (2 * np.arange(h) + 1) / h - 1
    grid = np.stack(np.meshgrid(centres, centres, indexing="xy"), -1).reshape(-1, 2)  # (HW, 2) x, y
    flat = maps.reshape(n, k, -1)
    split, stray = [], []
    for i, nodes in enumerate(data.points):
        near = (((grid[None] - nodes[:, None]) ** 2).sum(-1) <= (NEAR_CELLS * 2 / h) ** 2 + 1e-9).astype(float)
        mass = flat[i] @ near.T  # (K, nodes) a slot's mass near each node
        second = np.sort(mass, 1)[:, -2] if mass.shape[1] > 1 else np.zeros(k)
        split.append(second >= SPLIT_MASS)
        stray.append(1 - (flat[i] * near.max(0)).sum(-1))
    return {"dsnt": within_5px(flat @ grid, data), "argmax": within_5px(grid[flat.argmax(-1)], data),
            "split": 100 * float(np.mean(np.concatenate(split))), "stray": 100 * float(np.mean(np.concatenate(stray)))}


def train_and_measure(train, splits: dict, args: argparse.Namespace, sigma: float, peak: float, seed: int) -> dict:
    """The heat-map stage alone for max(at) steps; the measures on every split at each step of `at`."""
    import torch

    from sgtool.autoencoder.config import AEConfig
    from sgtool.autoencoder.inference import model_for
    from sgtool.autoencoder.trainee import GRAD_CLIP, step_loss

    at = sorted(int(s) for s in args.at.split(","))
    config = AEConfig(supervised=True, batch_size=args.batch_size, width=args.width, lr=args.lr,
                      heat_sigma=sigma, heat_scale=peak)
    torch.manual_seed(seed)
    model = model_for(config)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(config.beta1, config.beta2))
    rng, order, out = np.random.default_rng(seed), np.zeros(0, np.int64), {}
    for step in range(1, at[-1] + 1):
        if len(order) < args.batch_size:  # a new epoch of full batches
            order = rng.permutation(len(train))
        index, order = order[:args.batch_size], order[args.batch_size:]
        model.train()
        loss = step_loss(model, config, train, index, config.sigma_start, "cpu")["loss"]
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimiser.step()
        if step in at:
            out[step] = {name: measure(slot_maps(model, data), data) for name, data in splits.items()}
            print(json.dumps({"sigma": sigma, "peak": peak, "seed": seed, "step": step, **out[step]}), flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    import torch

    from sgtool.autoencoder.data import load_split
    from sgtool.data.prepared import load_prepared
    from sgtool.workspace import Workspace

    args = parse(argv)
    torch.set_num_threads(1)
    prepared = load_prepared(Workspace(args.workspace), args.dataset)
    train = load_split(prepared, "train", 64, args.train_images)
    splits = {s: load_split(prepared, s, 64, args.eval_images) for s in ("val", "test")}
    grid = [tuple(float(v) for v in g.split(":")) for g in args.grid.split(",")]
    seeds = list(range(args.seeds))
    runs = {(g, s): train_and_measure(train, splits, args, *g, s) for g in grid for s in seeds}
    numbers = {}
    for sigma, peak in grid:
        for step in sorted(runs[(sigma, peak), 0]):
            for split in splits:
                numbers[f"sigma {sigma:g}, peak {peak:g}, step {step}, {split}"] = {
                    m: summarise([runs[(sigma, peak), s][step][split][m] for s in seeds])
                    for m in ("dsnt", "argmax", "split", "stray")}
    budgets = {"train_images": len(train), "eval_images": args.eval_images, "batch_size": args.batch_size,
               "width": args.width, "lr": args.lr, "steps": args.at, "stage": "heat map alone", "dataset": args.dataset}
    if not args.no_write:
        write_result("ae_heat_localisation", budgets=budgets, seeds=seeds, numbers=numbers, sources=SOURCES,
                     notes="The paper baseline's heat-map stage alone: % of nodes within 5 px of a slot's DSNT point "
                           "(dsnt) or peak cell (argmax), % of slots split between two nodes (split), % of a "
                           "slot's mass far from every node (stray); mean ± sample sd over the seeds.")
    return numbers


if __name__ == "__main__":
    main()
