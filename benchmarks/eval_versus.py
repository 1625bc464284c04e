"""`bench_eval.py --versus`: sgtool's evaluator against the community loop and a minimal R/mR path, in one run.

The reference evaluators are imported from their own sources at run time (nothing of theirs is copied
here): the community benchmark's `evaluate_relation_of_one_image` and `sgg_eval` classes, and the
`sgbench` package's `match_instances` / `remap_triplets` / `recall`. Each path sees the same chunks of
predictions, in turn chunk by chunk (so a change in the machine's load touches every path alike); only
the evaluation itself is timed (building a chunk and the community's BoxLists is not).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from bench_eval import peak_rss_mib, reset_peak_rss  # noqa: E402
from eval_loads import _all_pairs_predictions, _clustered_boxes, _informed, _relations, _softmax_like, _split, _zipf_labels
from results_io import write_result
from sgtool.data.graphs import SceneGraphs, offsets_from_counts
from sgtool.eval import SceneGraphEvaluator

KS = (20, 50, 100)
SOURCES = ["sgtool/eval/evaluator.py", "sgtool/eval/metrics.py", "sgtool/eval/ranking.py", "sgtool/eval/matching.py",
           "sgtool/eval/sgbench.py", "sgtool/geometry.py", "sgtool/data/graphs.py"]  # what the timed paths run


class Clock:
    """Wall and CPU seconds of what runs between `start()` and `stop()` (CPU time: this process only, so
    it is steadier than wall time on a machine shared with other work; every path is single-threaded)."""

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


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


class SgtoolPath:
    """sgtool's streaming evaluator (with SGBench's metrics when asked)."""

    def __init__(self, gt: SceneGraphs, predicates: int, groups: np.ndarray, seen: np.ndarray, sgbench: bool) -> None:
        self.evaluator = SceneGraphEvaluator(gt, task="predcls", num_predicates=predicates, ks=KS,
                                             predicate_groups=groups, seen_triplets=seen, sgbench=sgbench)

    def step(self, part: SceneGraphs, pred) -> tuple[float, float]:
        clock = Clock()
        clock.start()
        self.evaluator.process(part, pred)
        return clock.stop()

    def finish(self) -> tuple[tuple[float, float], dict]:
        clock = Clock()
        clock.start()
        metrics = self.evaluator.evaluate().metrics
        return clock.stop(), metrics


class MinimalPath:
    """numpy argmax / argsort into ranked triplet lists, then the sgbench package's per-image R@K / mR@K."""

    def __init__(self, predicates: int) -> None:
        import sgbench

        self.sgbench, self.predicates = sgbench, predicates
        self.recalls = {f"{m}@{k}": [] for m in ("R", "mR") for k in KS}

    def step(self, part: SceneGraphs, pred) -> tuple[float, float]:
        clock = Clock()
        clock.start()
        for i in np.flatnonzero(part.relations.counts() > 0):
            b0, b1 = part.box_offsets[i], part.box_offsets[i + 1]
            r0, r1 = part.relations.offsets[i], part.relations.offsets[i + 1]
            p0, p1 = pred.pair_offsets[i], pred.pair_offsets[i + 1]
            probs = pred.rel_scores[p0:p1, 1:]
            best = probs.argmax(1)
            top = np.argsort(-probs[np.arange(len(best)), best], kind="stable")[: max(KS)]
            triplets = np.column_stack([pred.pairs[p0:p1][top] - b0, best[top] + 1])
            gt_triplets = np.unique(np.column_stack([part.relations.pairs[r0:r1] - b0, part.relations.predicates[r0:r1]]), axis=0)
            mapping = self.sgbench.match_instances(part.boxes[b0:b1], part.labels[b0:b1], pred.boxes[b0:b1], pred.labels[b0:b1])
            matched = self.sgbench.remap_triplets(mapping, triplets)
            for k in KS:
                self.recalls[f"R@{k}"].append(self.sgbench.recall(k, False, gt_triplets, matched, self.predicates))
                self.recalls[f"mR@{k}"].append(self.sgbench.recall(k, True, gt_triplets, matched, self.predicates))
        return clock.stop()

    def finish(self) -> tuple[tuple[float, float], dict]:
        clock = Clock()
        clock.start()
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metrics = {name: float(np.nanmean(np.nanmean(np.stack(v), axis=0)[1:])) if name.startswith("mR")
                       else float(np.mean(v)) for name, v in self.recalls.items()}
        return clock.stop(), metrics


class CommunityPath:
    """The community benchmark's per-image loop: its own code, imported from `src`."""

    def __init__(self, predicates: int, src: Path) -> None:
        sys.path.insert(0, str(src))
        from maskrcnn_benchmark.data.datasets.evaluation.vg import sgg_eval
        from maskrcnn_benchmark.data.datasets.evaluation.vg.vg_eval import evaluate_relation_of_one_image
        from maskrcnn_benchmark.structures.bounding_box import BoxList

        self.one_image, self.BoxList, self.result, self.mode = evaluate_relation_of_one_image, BoxList, {}, "predcls"
        names = [f"p{i}" for i in range(predicates)]
        r = self.result
        self.evaluators = {
            "eval_recall": sgg_eval.SGRecall(r), "eval_nog_recall": sgg_eval.SGNoGraphConstraintRecall(r),
            "eval_zeroshot_recall": sgg_eval.SGZeroShotRecall(r), "eval_ng_zeroshot_recall": sgg_eval.SGNGZeroShotRecall(r),
            "eval_pair_accuracy": sgg_eval.SGPairAccuracy(r),
            "eval_mean_recall": sgg_eval.SGMeanRecall(r, predicates, names, print_detail=False),
            "eval_ng_mean_recall": sgg_eval.SGNGMeanRecall(r, predicates, names, print_detail=False)}
        for evaluator in self.evaluators.values():
            evaluator.register_container(self.mode)
        self.container = {"zeroshot_triplet": np.array([[0, 0, 0]]), "result_dict": r, "mode": self.mode,
                          "multiple_preds": False, "num_rel_category": predicates, "iou_thres": 0.5,
                          "attribute_on": False, "num_attributes": 0}

    def _boxlists(self, part: SceneGraphs, pred, i: int) -> tuple:
        import torch

        b0, b1 = part.box_offsets[i], part.box_offsets[i + 1]
        r0, r1 = part.relations.offsets[i], part.relations.offsets[i + 1]
        p0, p1 = pred.pair_offsets[i], pred.pair_offsets[i + 1]
        g = self.BoxList(torch.from_numpy(part.boxes[b0:b1]), (800, 600))
        g.add_field("labels", torch.from_numpy(part.labels[b0:b1]))
        g.add_field("relation_tuple", torch.from_numpy(np.column_stack([part.relations.pairs[r0:r1] - b0,
                                                                        part.relations.predicates[r0:r1]])))
        scores = pred.rel_scores[p0:p1]
        order = np.argsort(-scores[:, 1:].max(1), kind="stable")  # the benchmark is handed ranked pairs
        p = self.BoxList(torch.from_numpy(pred.boxes[b0:b1]), (800, 600))
        p.add_field("pred_labels", torch.from_numpy(pred.labels[b0:b1]))
        p.add_field("pred_scores", torch.ones(b1 - b0))
        p.add_field("rel_pair_idxs", torch.from_numpy(pred.pairs[p0:p1][order] - b0))
        p.add_field("pred_rel_scores", torch.from_numpy(scores[order]))
        return g, p

    def step(self, part: SceneGraphs, pred) -> tuple[float, float]:
        pairs = [self._boxlists(part, pred, i) for i in range(part.num_images)]
        clock = Clock()
        clock.start()
        for g, p in pairs:
            self.one_image(g, p, self.container, self.evaluators)
        return clock.stop()

    def finish(self) -> tuple[tuple[float, float], dict]:
        clock = Clock()
        clock.start()
        self.evaluators["eval_mean_recall"].calculate_mean_recall(self.mode)
        self.evaluators["eval_ng_mean_recall"].calculate_mean_recall(self.mode)
        spent = clock.stop()
        metrics = {f"R@{k}": float(np.mean(self.result[self.mode + "_recall"][k])) for k in KS}
        metrics.update({f"mR@{k}": float(self.result[self.mode + "_mean_recall"][k]) for k in KS})
        return spent, metrics


def run_paths(gt: SceneGraphs, args, paths: dict) -> dict[str, tuple[np.ndarray, dict]]:
    """Every path on each chunk in turn; (wall, CPU) seconds spent and metrics per path."""
    spent = {name: np.zeros(2) for name in paths}
    done, loads = 0, []
    for part, pred in dense_chunks(gt, args.predicates, args.chunk, args.seed):
        for name, path in paths.items():
            spent[name] += path.step(part, pred)
        done += part.num_images
        loads.append(os.getloadavg()[0])
        print(f"{done} images: " + ", ".join(f"{n} {s[0]:.1f} s" for n, s in spent.items()), flush=True)
    out = {}
    for name, path in paths.items():
        extra, metrics = path.finish()
        out[name] = (spent[name] + extra, metrics)
    args.loads = loads
    return out


def versus_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="sgtool eval vs the community loop and a minimal R/mR path")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--boxes", type=int, default=246, help="boxes per image, at least (246: >= 60,270 pairs)")
    parser.add_argument("--predicates", type=int, default=16, help="including background")
    parser.add_argument("--classes", type=int, default=30)
    parser.add_argument("--chunk", type=int, default=4, help="images per streamed chunk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--community-src", type=Path, default=None)
    parser.add_argument("--sgbench-src", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch  # noqa: F401  (the engine's row maximum uses torch: imported before any timing)

    if args.sgbench_src:
        sys.path.insert(0, str(args.sgbench_src))
    gt = dense_ground_truth(args.images, args.boxes, args.predicates, args.classes, args.seed)
    rels = gt.relations
    seen = np.stack([gt.labels[rels.pairs[:, 0]], rels.predicates, gt.labels[rels.pairs[:, 1]]], 1)
    groups = np.array([-1] + [i * 3 // (args.predicates - 1) for i in range(args.predicates - 1)])
    paths = {"sgtool": SgtoolPath(gt, args.predicates, groups, seen, False),
             "sgtool_with_sgbench": SgtoolPath(gt, args.predicates, groups, seen, True)}
    if args.sgbench_src or _importable("sgbench"):
        paths["minimal_numpy_sgbench_R_mR"] = MinimalPath(args.predicates)
    if args.community_src:
        paths["community_loop"] = CommunityPath(args.predicates, args.community_src)
    resettable = reset_peak_rss()
    results = run_paths(gt, args, paths)
    numbers = summary(results, args, gt, peak_rss_mib() if resettable else float("nan"))
    write_result("bench_eval_versus", budgets={"images": args.images, "boxes_min": args.boxes}, seeds=[args.seed],
                 numbers=numbers, sources=SOURCES,
                 notes="one run, the paths in turn on each chunk; the reference evaluators imported from their "
                       "fetched sources / the sgbench package; peak RSS is the whole process (every path); "
                       "ratio_* are of wall seconds, cpu_ratio_* of this process's CPU seconds (steadier when the "
                       "machine is shared: load_average_1min_min/max are the machine's load over the run)")


def summary(results: dict, args, gt: SceneGraphs, peak: float) -> dict:
    numbers = {"images": args.images, "pairs_per_image_min": int(gt.box_counts().min() * (gt.box_counts().min() - 1)),
               "predicates": args.predicates, "gt_relations": len(gt.relations), "chunk_images": args.chunk,
               "peak_rss_mib_all_paths": round(peak, 1), "load_average_1min": round(os.getloadavg()[0], 2)}
    numbers.update(load_average_1min_min=round(min(args.loads), 2), load_average_1min_max=round(max(args.loads), 2))
    for name, (spent, metrics) in results.items():
        wall, cpu = (float(x) for x in spent)
        numbers.update({f"{name}_s": round(wall, 3), f"{name}_cpu_s": round(cpu, 3),
                        f"{name}_images_per_s": round(args.images / wall, 1),
                        f"{name}_images_per_cpu_s": round(args.images / cpu, 1), f"{name}_metrics": len(metrics),
                        f"{name}_R@100": metrics.get("R@100")})
        print(f"{name}: {wall:.2f} s ({cpu:.2f} CPU s), {args.images / wall:.1f} images/s, {len(metrics)} metrics",
              flush=True)
    for reference in ("minimal_numpy_sgbench_R_mR", "community_loop"):
        for ours in ("sgtool", "sgtool_with_sgbench"):
            if reference in results:
                wall, cpu = (float(x) for x in results[reference][0] / results[ours][0])
                numbers[f"ratio_{reference}_over_{ours}"] = round(wall, 2)
                numbers[f"cpu_ratio_{reference}_over_{ours}"] = round(cpu, 2)
                print(f"{ours} is {wall:.2f}x the speed of {reference} (wall; {cpu:.2f}x in CPU time)", flush=True)
    return numbers


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def main() -> None:
    versus_main(sys.argv[1:])


if __name__ == "__main__":
    main()
