"""Ablations of the ae auto-encoder on a prepared shapes dataset: max-nodes and the loss.

Trains one model per variant (same data, seed and budget), evaluates triplet P / R / F1 on the
test split, prints ONE JSON object and then a markdown table. Variants: max-nodes 4 / 5 / 6 / 8
with the full loss, and at max-nodes 4: no auxiliary overlap loss, SSIM instead of MS-SSIM,
the loss on the coarse drawing instead of the refined image.

    python benchmarks/ablate_ae.py -w WS --dataset shapes --minutes 3 --train-images 4000
"""
from __future__ import annotations

import argparse
import json
import sys
import time

VARIANTS = {
    "k4": {"max_nodes": 4},
    "k5": {"max_nodes": 5},
    "k6": {"max_nodes": 6},
    "k8": {"max_nodes": 8},
    "k4-no-aux": {"max_nodes": 4, "aux_weight": 0.0},
    "k4-ssim": {"max_nodes": 4, "recon": "ssim"},
    "k4-coarse": {"max_nodes": 4, "loss_on": "coarse"},
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-w", "--workspace", required=True, help="workspace holding a prepared shapes dataset")
    p.add_argument("--dataset", default="shapes")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--minutes", type=float, default=3.0, help="training budget per variant (the small budget)")
    p.add_argument("--epochs", type=int, default=100, help="epoch cap (the budget usually ends training first)")
    p.add_argument("--train-images", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per variant (same for all)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    from sgtool.autoencoder.evaluate import run_ae_eval
    from sgtool.autoencoder.train import train_autoencoder
    from sgtool.errors import SgtoolError
    from sgtool.workspace import Workspace

    args = parse(argv)
    ws = Workspace(args.workspace)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant {unknown[0]}; known: {', '.join(VARIANTS)}")
    results = {}
    for name in names:
        overrides = [f"{k}={v}" for k, v in VARIANTS[name].items()]
        overrides += [f"minutes={args.minutes}", f"train_images={args.train_images}", f"threads={args.threads}"]
        start = time.time()
        try:
            run = train_autoencoder(ws, dataset=args.dataset, name=None, epochs=args.epochs, overrides=overrides,
                                    seed=args.seed)
        except SgtoolError as exc:
            sys.exit(f"{name}: {exc}")
        outcome = run_ae_eval(ws, run=run.run, split="test")
        m = outcome.per_seed[args.seed]
        results[name] = {"run": run.run, "settings": VARIANTS[name], "precision": m["precision"],
                         "recall": m["recall"], "f1": m["f1"], "train_minutes": round(run.minutes, 2),
                         "wall_seconds": round(time.time() - start, 1)}
    payload = {"benchmark": "ablate_ae", "dataset": args.dataset, "minutes_per_variant": args.minutes,
               "train_images": args.train_images, "seed": args.seed, "threads": args.threads, "results": results}
    print(json.dumps(payload, indent=2))
    print()
    print("| variant | precision (%) | recall (%) | F1 (%) | train min |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {100 * r['precision']:.1f} | {100 * r['recall']:.1f} | {100 * r['f1']:.1f} | {r['train_minutes']} |")
    return payload


if __name__ == "__main__":
    main()
