"""`bench_eval.py --versus`: sgtool's evaluator against the community loop and a minimal R/mR path, in one run.

The reference evaluators are imported from their own sources at run time (nothing of theirs is copied
here): the community benchmark's `evaluate_relation_of_one_image` and `sgg_eval` classes, and the
`sgbench` package's `match_instances` / `remap_triplets` / `recall`. Each path sees the same chunks of
predictions; only the evaluation itself is timed (building a chunk and its BoxLists is not).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench_eval import peak_rss_mib, reset_peak_rss
from eval_loads import _all_pairs_predictions, _clustered_boxes, _informed, _relations, _softmax_like, _split, _zipf_labels
from results_io import write_result
from sgtool.data.graphs import SceneGraphs, offsets_from_counts
from sgtool.eval import SceneGraphEvaluator

KS = (20, 50, 100)


def dense_ground_truth(images: int, boxes: int, predicates: int, classes: int, seed: int) -> SceneGraphs:
    """Real-like PredCls GT: `boxes` to `boxes` + 8 boxes per image (n (n - 1) >= 60k pairs at 246 boxes)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(boxes, boxes + 9, images)
    box_offsets = offsets_from_counts(counts)
    xyxy = _clustered_boxes(rng, counts)
    labels = _zipf_labels(rng, int(counts.sum()), classes, dominant=0.4)
    rel_counts, pairs, preds = _relations(rng, counts, box_offsets, predicates, per_box=0.5, max_rels=400)
    return _split(box_offsets, xyxy, labels, rel_counts, pairs, preds)


def dense_chunks(gt: SceneGraphs, predicates: int, chunk: int, seed: int):
    """(GT, predictions) of `chunk` consecutive images at a time: softmax-like scores on every ordered pair."""
    rng = np.random.default_rng(seed + 1)
    for i0 in range(0, gt.num_images, chunk):
        part = gt.select(np.arange(i0, min(i0 + chunk, gt.num_images)))
        pred = _all_pairs_predictions(part, part.box_offsets, part.boxes, part.labels, np.ones(len(part.labels)),
                                      lambda n: _softmax_like(rng, n, predicates, background=2.0))
        _informed(rng, part, pred)
        yield part, pred


def time_sgtool(gt, chunks, predicates, groups, seen, sgbench: bool) -> tuple[float, dict]:
    """sgtool's streaming evaluator (with SGBench's metrics when asked) over the chunks."""
    evaluator = SceneGraphEvaluator(gt, task="predcls", num_predicates=predicates, ks=KS, predicate_groups=groups,
                                    seen_triplets=seen, sgbench=sgbench)
    spent = 0.0
    for part, pred in chunks():
        start = time.perf_counter()
        evaluator.process(part, pred)
        spent += time.perf_counter() - start
    start = time.perf_counter()
    result = evaluator.evaluate()
    return spent + time.perf_counter() - start, result.metrics


def minimal_path(gt: SceneGraphs, chunks, predicates: int) -> tuple[float, dict]:
    """numpy argmax / argsort into ranked triplets, then sgbench's per-image recall (R@K, mR@K)."""
    import sgbench

    spent, recalls = 0.0, {f"{m}@{k}": [] for m in ("R", "mR") for k in KS}
    for part, pred in chunks():
        start = time.perf_counter()
        for i in range(part.num_images):
            b0, b1 = part.box_offsets[i], part.box_offsets[i + 1]
            r0, r1 = part.relations.offsets[i], part.relations.offsets[i + 1]
            if r0 == r1:
                continue
            p0, p1 = pred.pair_offsets[i], pred.pair_offsets[i + 1]
            probs = pred.rel_scores[p0:p1, 1:]
            best = probs.argmax(1)
            top = np.argsort(-probs[np.arange(len(best)), best], kind="stable")[: max(KS)]
            triplets = np.column_stack([pred.pairs[p0:p1][top] - b0, best[top] + 1])
            gt_triplets = np.unique(np.column_stack([part.relations.pairs[r0:r1] - b0, part.relations.predicates[r0:r1]]), axis=0)
            mapping = sgbench.match_instances(part.boxes[b0:b1], part.labels[b0:b1], pred.boxes[b0:b1], pred.labels[b0:b1])
            matched = sgbench.remap_triplets(mapping, triplets)
            for k in KS:
                recalls[f"R@{k}"].append(sgbench.recall(k, False, gt_triplets, matched, predicates))
                recalls[f"mR@{k}"].append(sgbench.recall(k, True, gt_triplets, matched, predicates))
        spent += time.perf_counter() - start
    with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        metrics = {name: float(np.nanmean(np.nanmean(np.stack(v), axis=0)[1:])) if name.startswith("mR")
                   else float(np.mean(v)) for name, v in recalls.items()}
    return spent, metrics


def community_loop(gt: SceneGraphs, chunks, predicates: int, src: Path, seen: np.ndarray) -> tuple[float, dict]:
    """The community benchmark's per-image loop (its own code, imported from `src`) on the same chunks."""
    import torch

    sys.path.insert(0, str(src))
    from maskrcnn_benchmark.data.datasets.evaluation.vg import sgg_eval
    from maskrcnn_benchmark.data.datasets.evaluation.vg.vg_eval import evaluate_relation_of_one_image
    from maskrcnn_benchmark.structures.bounding_box import BoxList

    result_dict, mode = {}, "predcls"
    names = [f"p{i}" for i in range(predicates)]
    evaluators = {"eval_recall": sgg_eval.SGRecall(result_dict), "eval_nog_recall": sgg_eval.SGNoGraphConstraintRecall(result_dict),
                  "eval_zeroshot_recall": sgg_eval.SGZeroShotRecall(result_dict),
                  "eval_ng_zeroshot_recall": sgg_eval.SGNGZeroShotRecall(result_dict),
                  "eval_pair_accuracy": sgg_eval.SGPairAccuracy(result_dict),
                  "eval_mean_recall": sgg_eval.SGMeanRecall(result_dict, predicates, names, print_detail=False),
                  "eval_ng_mean_recall": sgg_eval.SGNGMeanRecall(result_dict, predicates, names, print_detail=False)}
    for evaluator in evaluators.values():
        evaluator.register_container(mode)
    unseen = np.array([[s, o, p] for s, p, o in seen[:0]] or [[0, 0, 0]])  # every GT triplet seen: zR has no images
    container = {"zeroshot_triplet": unseen, "result_dict": result_dict, "mode": mode, "multiple_preds": False,
                 "num_rel_category": predicates, "iou_thres": 0.5, "attribute_on": False, "num_attributes": 0}
    spent = 0.0
    for part, pred in chunks():
        pairs = []
        for i in range(part.num_images):
            b0, b1 = part.box_offsets[i], part.box_offsets[i + 1]
            r0, r1 = part.relations.offsets[i], part.relations.offsets[i + 1]
            p0, p1 = pred.pair_offsets[i], pred.pair_offsets[i + 1]
            g = BoxList(torch.from_numpy(part.boxes[b0:b1]), (800, 600))
            g.add_field("labels", torch.from_numpy(part.labels[b0:b1]))
            g.add_field("relation_tuple", torch.from_numpy(np.column_stack([part.relations.pairs[r0:r1] - b0,
                                                                            part.relations.predicates[r0:r1]])))
            scores = pred.rel_scores[p0:p1]
            order = np.argsort(-scores[:, 1:].max(1), kind="stable")  # the benchmark is handed ranked pairs
            p = BoxList(torch.from_numpy(pred.boxes[b0:b1]), (800, 600))
            p.add_field("pred_labels", torch.from_numpy(pred.labels[b0:b1]))
            p.add_field("pred_scores", torch.ones(b1 - b0))
            p.add_field("rel_pair_idxs", torch.from_numpy(pred.pairs[p0:p1][order] - b0))
            p.add_field("pred_rel_scores", torch.from_numpy(scores[order]))
            pairs.append((g, p))
        start = time.perf_counter()
        for g, p in pairs:
            evaluate_relation_of_one_image(g, p, container, evaluators)
        spent += time.perf_counter() - start
    start = time.perf_counter()
    evaluators["eval_mean_recall"].calculate_mean_recall(mode)
    evaluators["eval_ng_mean_recall"].calculate_mean_recall(mode)
    spent += time.perf_counter() - start
    metrics = {f"R@{k}": float(np.mean(result_dict[mode + "_recall"][k])) for k in KS}
    metrics.update({f"mR@{k}": float(result_dict[mode + "_mean_recall"][k]) for k in KS})
    return spent, metrics


def versus_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="sgtool eval vs the community loop and a minimal R/mR path")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--boxes", type=int, default=246, help="boxes per image, at least (246: >= 60,270 pairs)")
    parser.add_argument("--predicates", type=int, default=16, help="including background")
    parser.add_argument("--classes", type=int, default=30)
    parser.add_argument("--chunk", type=int, default=8, help="images per streamed chunk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--community-src", type=Path, default=None)
    parser.add_argument("--sgbench-src", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch  # noqa: F401  (the engine's row maximum uses torch: imported before any timing)

    if args.sgbench_src:
        sys.path.insert(0, str(args.sgbench_src))
    gt = dense_ground_truth(args.images, args.boxes, args.predicates, args.classes, args.seed)
    chunks = lambda: dense_chunks(gt, args.predicates, args.chunk, args.seed)  # noqa: E731
    rels = gt.relations
    seen = np.stack([gt.labels[rels.pairs[:, 0]], rels.predicates, gt.labels[rels.pairs[:, 1]]], 1)
    groups = np.array([-1] + [i * 3 // (args.predicates - 1) for i in range(args.predicates - 1)])
    resettable = reset_peak_rss()
    sg_s, sg_metrics = time_sgtool(gt, chunks, args.predicates, groups, seen, sgbench=False)
    sg_peak = peak_rss_mib() if resettable else float("nan")
    all_s, all_metrics = time_sgtool(gt, chunks, args.predicates, groups, seen, sgbench=True)
    numbers = {"sgtool_s": round(sg_s, 3), "sgtool_images_per_s": round(args.images / sg_s, 1),
               "sgtool_metrics": len(sg_metrics), "sgtool_peak_rss_mib": round(sg_peak, 1),
               "sgtool_R@100": sg_metrics["R@100"], "sgtool_mR@100": sg_metrics["mR@100"],
               "sgtool_with_sgbench_s": round(all_s, 3), "sgtool_with_sgbench_metrics": len(all_metrics),
               "sgtool_sgbench-R@100": all_metrics["sgbench-R@100"]}
    print(f"sgtool, all {len(sg_metrics)} metrics streamed: {sg_s:.2f} s ({args.images / sg_s:.1f} images/s), "
          f"peak RSS {sg_peak:.0f} MiB; with SGBench's too ({len(all_metrics)} metrics): {all_s:.2f} s", flush=True)
    references = []
    if args.sgbench_src or _importable("sgbench"):
        references.append(("minimal_numpy_sgbench_R_mR", lambda: minimal_path(gt, chunks, args.predicates)))
    if args.community_src:
        references.append(("community_loop", lambda: community_loop(gt, chunks, args.predicates, args.community_src, seen)))
    for name, run in references:
        spent, metrics = run()
        numbers[f"{name}_s"] = round(spent, 3)
        numbers[f"{name}_images_per_s"] = round(args.images / spent, 1)
        numbers[f"{name}_R@100"] = metrics["R@100"]
        for label, ours in (("all_metrics", sg_s), ("all_metrics_with_sgbench", all_s)):
            numbers[f"ratio_{name}_over_sgtool_{label}"] = round(spent / ours, 2)
            print(f"{name}: {spent:.2f} s; sgtool ({label}) is {spent / ours:.2f}x its speed", flush=True)
    numbers.update({"images": args.images, "pairs_per_image_min": int(np.diff(gt.box_offsets).min() * (np.diff(gt.box_offsets).min() - 1)),
                    "predicates": args.predicates, "gt_relations": len(rels), "chunk_images": args.chunk,
                    "load_average_1min": round(os.getloadavg()[0], 2)})
    write_result("bench_eval_versus", budgets={"images": args.images, "boxes_min": args.boxes}, seeds=[args.seed],
                 numbers=numbers, sources=["sgtool/eval"],
                 notes="one run; the reference evaluators imported from their fetched sources / the sgbench package")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
