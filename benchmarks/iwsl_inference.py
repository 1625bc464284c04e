"""Does the IWSL inference decide the labels? (issue 25)

On a small synthetic workspace it makes itself (prepare_synth, a detector trained for --detector-epochs, the
iwsl head trained for --epochs with ROI features), the SGCls test split is predicted with the mirror ascent
on and off, over --seeds prediction seeds, and from two random starts pi_0 with the same Gumbel noise:

    start_agreement          share of nodes (objects and predicates) whose argmax pi* is the same from two pi_0
    kept_start_argmax        share of nodes whose argmax pi* is the argmax of their pi_0 (chance: about 1 / K)
    unary_agreement          share of object labels equal to the argmax of the object unary alone
    bound_gain               bound per image at pi* less at pi_0
    sgcls_r50_descent        SGCls R@50, mean over prediction seeds (no_descent: emd_iters = 0)
    prediction_seed_sd_r50   its sample sd over prediction seeds
    object_accuracy_pi       SGCls object accuracy of the labels from pi* (Eq. 18)
    object_accuracy_unary    the same for the argmax of the object unary alone

One JSON object on stdout with --json (a short summary otherwise); also benchmarks/results/iwsl_inference.json.

    nice -n 10 python benchmarks/iwsl_inference.py --json
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from results_io import summarise, welch, write_result
from sgtool.data.prepared import load_prepared, load_prepared_priors
from sgtool.data.synth import prepare_synth
from sgtool.engine.objects import object_source
from sgtool.engine.train import load_trained_head, train
from sgtool.engine.train_detector import train_detector
from sgtool.eval.run_eval import evaluate_predictions
from sgtool.workspace import Workspace

SOURCES = ["sgtool/heads/iwsl.py", "sgtool/heads/_relbatch.py", "sgtool/eval", "sgtool/engine/train.py"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="synthetic images (70%% train)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--detector-epochs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the iwsl head (a fixed dataset: fixed steps)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--anneal-steps", type=int, default=100, help="step at which tau reaches tau_min (within the run)")
    parser.add_argument("--seeds", type=int, default=3, help="prediction seeds")
    parser.add_argument("--estimator", default="exact", choices=("exact", "sampled"))
    parser.add_argument("--samples", type=int, default=50, help="s of the inference step")
    parser.add_argument("--json", action="store_true", help="print the JSON object")
    parser.add_argument("--workspace", type=Path, default=None, help="reuse this workspace (dataset 'synth')")
    parser.add_argument("--detector", default=None, help="reuse this detector run of the workspace")
    return parser.parse_args(argv)


def setup(ws: Workspace, args: argparse.Namespace) -> tuple[str, dict]:
    info = {}
    if args.detector is None:
        prepare_synth(ws, images=args.images, size=args.size, seed=0, workers=1)
        det = train_detector(ws, dataset="synth", epochs=args.detector_epochs, seed=0, device="cpu", threads=1)
        args.detector, info["detector_mAP@.5"] = det.run, det.metrics.get("mAP@.5")
    result = train(ws, head="iwsl", task="sgcls", epochs=args.epochs, seed=0, detector=args.detector, device="cpu",
                   cache_features=True, overrides=[f"hidden={args.hidden}", "features=visual", "val_every=1000",
                             f"anneal_steps={args.anneal_steps}"])
    return result.run, info


def predict(head, objects, test, prepared, priors, *, seed: int, start_seed: int | None = None,
            iters: int | None = None) -> dict:
    """One SGCls prediction: R@50, object accuracies, the argmax of pi* per node, the head's meta."""
    head.predict_seed, head.start_seed = seed, start_seed
    saved = head.config.emd_iters
    head.config.emd_iters = saved if iters is None else iters
    predictions = head.predict(objects)
    head.config.emd_iters = saved
    metrics = evaluate_predictions(test, predictions, "sgcls", priors, prepared.vocab).metrics
    return {"r50": float(metrics["R@50"]), "meta": dict(predictions.meta),
            "accuracy_pi": float(np.mean(predictions.labels == test.labels)),
            "accuracy_unary": float(np.mean(head.inferred["unary_objects"] == test.labels)),
            "nodes": np.concatenate([head.inferred["pi_objects"], head.inferred["pi_predicates"]])}


def measure(head, objects, test, prepared, priors, seeds: int) -> dict:
    """The issue's keys from prediction seeds 0..seeds-1 (ascent on and off) and two extra starts pi_0."""
    context = (head, objects, test, prepared, priors)
    on = [predict(*context, seed=k) for k in range(seeds)]
    off = [predict(*context, seed=k, iters=0) for k in range(seeds)]
    starts = [predict(*context, seed=0, start_seed=k) for k in (1, 2)]
    meta, r_on, r_off = on[0]["meta"], [p["r50"] for p in on], [p["r50"] for p in off]
    kept = meta.get("kept_start_argmax_objects", 0.0), meta["kept_start_argmax_predicates"]
    return {"start_agreement": float(np.mean(starts[0]["nodes"] == starts[1]["nodes"])),
            "kept_start_argmax": statistics.fmean(kept), "kept_start_argmax_objects": kept[0],
            "kept_start_argmax_predicates": kept[1], "unary_agreement": meta.get("unary_agreement"),
            "bound_gain": meta["bound_gain_per_image"], "converged_share": meta["converged_share"],
            "emd_iters_mean": meta["emd_iters_mean"],
            "sgcls_r50_descent": statistics.fmean(r_on), "sgcls_r50_no_descent": statistics.fmean(r_off),
            "prediction_seed_sd_r50": summarise(r_on)["sd"], "no_descent_seed_sd_r50": summarise(r_off)["sd"],
            "r50_descent_per_seed": r_on, "r50_no_descent_per_seed": r_off, "descent_vs_no_descent": welch(r_on, r_off),
            "object_accuracy_pi": statistics.fmean(p["accuracy_pi"] for p in on),
            "object_accuracy_unary": statistics.fmean(p["accuracy_unary"] for p in on),
            "object_accuracy_no_descent": statistics.fmean(p["accuracy_pi"] for p in off)}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(args.workspace or Path(tmp) / "ws")
        run, info = setup(ws, args)
        head, record, prepared = load_trained_head(ws, run)
        head.config.estimator, head.config.samples = args.estimator, args.samples
        test, priors = prepared.graphs.split_subset("test"), load_prepared_priors(ws, "synth")
        source, _ = object_source(ws, prepared, "sgcls", record.detector, "cpu")
        numbers = measure(head, source(test), test, prepared, priors, args.seeds)
        steps = int(head.step)
    numbers.update(info, estimator=args.estimator, samples=args.samples, train_steps=steps, tau=head.tau,
                   test_images=test.num_images, seconds=round(time.time() - started, 1))
    write_result("iwsl_inference", budgets={"detector_epochs": args.detector_epochs, "iwsl_epochs": args.epochs,
                                             "iwsl_train_steps": steps, "images": args.images},
                 seeds=list(range(args.seeds)), numbers=numbers, sources=SOURCES)
    print(json.dumps(numbers, indent=2) if args.json else
          f"start agreement {numbers['start_agreement']:.3f}, R@50 {numbers['sgcls_r50_descent']:.4f} "
          f"vs {numbers['sgcls_r50_no_descent']:.4f} without descent")
    return numbers


if __name__ == "__main__":
    main()
