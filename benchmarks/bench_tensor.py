"""Tensor-head likelihood: factored CP loss + backward vs building the S×P×O tensor, printed as JSON.

VG150 sizes (151 × 51 × 151), 1,024 pairs, R = 5, float32 on CPU. Each measurement runs in its own
subprocess; memory is that process's peak RSS growth during loss + backward (after a tiny warm-up
that starts the autograd engine), so it counts every tensor really allocated. The full tensor
needs ~5 GB per copy at 1,024 pairs (tens of GB with log, logsumexp and backward), so by default
it is measured at --full-pairs and scaled linearly (it is linear in pairs); the factored form is
measured at both sizes for a like-for-like ratio. Targets: ≥ 10× faster, ≥ 50× less memory.
Also writes benchmarks/results/bench_tensor.json with both targets checked.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from results_io import write_result

from sgtool.losses.tensor import factored_nll, full_tensor_nll

TARGETS = {"speedup": 10, "memory_ratio": 50}


def full_linear_nll(s_scores: torch.Tensor, p_scores: torch.Tensor, o_scores: torch.Tensor,
                    targets: torch.Tensor) -> torch.Tensor:
    """The leanest explicit form (linear space, no stabilisation): a lower bound on the full cost."""
    y = torch.einsum("bri,brj,brk->bijk", s_scores.exp(), p_scores.exp(), o_scores.exp())
    picked = y[torch.arange(len(targets)), targets[:, 0], targets[:, 1], targets[:, 2]]
    return (y.flatten(1).sum(1).log() - picked.log()).mean()


LOSSES = {"factored": factored_nll, "full": full_tensor_nll, "full_linear": full_linear_nll}


def make_inputs(pairs: int, rank: int, sizes: tuple[int, int, int], dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    scores = [torch.randn(pairs, rank, n, generator=gen, dtype=dtype).requires_grad_() for n in sizes]
    targets = torch.stack([torch.randint(0, n, (pairs,), generator=gen) for n in sizes], dim=1)
    return scores, targets


def loss_and_backward(kind: str, scores, targets) -> float:
    for t in scores:
        t.grad = None
    loss = LOSSES[kind](*scores, targets)
    loss.backward()
    return loss.item()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux reports KiB


def worker(kind: str, pairs: int, rank: int, sizes: tuple[int, int, int], repeats: int) -> dict:
    """Runs in a subprocess: time and peak RSS growth of loss + backward."""
    warm, warm_t = make_inputs(2, rank, (3, 3, 3), torch.float32)
    loss_and_backward(kind, warm, warm_t)                      # start autograd, load kernels
    scores, targets = make_inputs(pairs, rank, sizes, torch.float32)
    base = peak_rss_bytes()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loss_and_backward(kind, scores, targets)
        times.append(time.perf_counter() - start)
    return {"seconds": round(statistics.median(times), 4), "peak_rss_growth_bytes": peak_rss_bytes() - base}


def measure(kind: str, pairs: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--pairs", str(pairs), "--rank", str(args.rank),
           "--sizes", *map(str, args.sizes), "--repeats", str(args.repeats), "--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def largest_intermediate_bytes(kind: str, pairs: int, rank: int, sizes: tuple[int, int, int]) -> int:
    """Size of the biggest tensor each form must hold (float32)."""
    s, p, o = sizes
    return 4 * pairs * (s * p * o if kind == "full" else rank * max(sizes))


def float64_check(pairs: int, rank: int, sizes: tuple[int, int, int]) -> dict:
    """Same loss and gradients from the factored and both explicit forms, in float64."""
    scores, targets = make_inputs(pairs, rank, sizes, torch.float64, seed=1)
    values = {}
    for kind, fn in LOSSES.items():
        loss = fn(*scores, targets)
        values[kind] = (loss.detach(), torch.autograd.grad(loss, scores))
    l_f, g_f = values["factored"]
    out: dict = {"pairs": pairs, "loss": l_f.item()}
    for kind in ("full", "full_linear"):
        l_t, g_t = values[kind]
        out[f"loss_max_abs_diff_vs_{kind}"] = (l_f - l_t).abs().item()
        out[f"grad_max_abs_diff_vs_{kind}"] = max((a - b).abs().max().item() for a, b in zip(g_f, g_t))
    return out


def scaled(small: dict, args: argparse.Namespace) -> dict:
    """A full-tensor measurement at --full-pairs scaled linearly to --pairs."""
    scale = args.pairs / args.full_pairs
    return {"seconds": round(small["seconds"] * scale, 4),
            "peak_rss_growth_bytes": int(small["peak_rss_growth_bytes"] * scale),
            "extrapolated_from_pairs": args.full_pairs if scale != 1 else None}


def ratio(slow: dict, fast: dict, key: str) -> float | None:
    """slow / fast, or None when the fast side is 0 (below what peak RSS can resolve)."""
    return round(slow[key] / fast[key], 1) if fast[key] > 0 else None


def run(args: argparse.Namespace) -> dict:
    sizes = tuple(args.sizes)
    fact = measure("factored", args.pairs, args)
    fact_small = measure("factored", args.full_pairs, args)
    full_small = measure("full", args.full_pairs, args)
    lean_small = measure("full_linear", args.full_pairs, args)
    full, lean = scaled(full_small, args), scaled(lean_small, args)
    fact["largest_intermediate_bytes"] = largest_intermediate_bytes("factored", args.pairs, args.rank, sizes)
    full["largest_intermediate_bytes"] = largest_intermediate_bytes("full", args.pairs, args.rank, sizes)
    return {
        "benchmark": "tensor_likelihood", "sizes": list(sizes), "pairs": args.pairs, "rank": args.rank,
        "dtype": "float32", "threads": args.threads, "repeats": args.repeats,
        "factored": fact, "full": full, "full_linear": lean,
        "speedup": ratio(full, fact, "seconds"), "memory_ratio": ratio(full, fact, "peak_rss_growth_bytes"),
        "speedup_vs_full_linear": ratio(lean, fact, "seconds"),
        "memory_ratio_vs_full_linear": ratio(lean, fact, "peak_rss_growth_bytes"),
        "like_for_like_at_full_pairs": {
            "pairs": args.full_pairs, "factored": fact_small, "full": full_small, "full_linear": lean_small,
            "speedup": ratio(full_small, fact_small, "seconds"),
            "memory_ratio": ratio(full_small, fact_small, "peak_rss_growth_bytes")},
        "float64_check": float64_check(args.check_pairs, args.rank, sizes),
        "targets": TARGETS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1024)
    parser.add_argument("--full-pairs", type=int, default=64, help="pairs at which the full tensor is measured")
    parser.add_argument("--rank", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs=3, default=[151, 51, 151], metavar=("S", "P", "O"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--check-pairs", type=int, default=8, help="pairs of the float64 equality check")
    parser.add_argument("--worker", choices=sorted(LOSSES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.pairs, args.rank, tuple(args.sizes), args.repeats)))
        return
    out = run(args)
    print(json.dumps(out, default=float))
    record(out, args)


def record(out: dict, args: argparse.Namespace) -> None:
    """benchmarks/results/bench_tensor.json: one row per form, the ratios, the targets checked."""
    forms = {kind: {"pairs": args.pairs, "seconds": out[kind]["seconds"],
                    "peak_rss_growth_mib": round(out[kind]["peak_rss_growth_bytes"] / 2**20, 2),
                    "measured_at_pairs": out[kind].get("extrapolated_from_pairs") or args.pairs}
             for kind in ("factored", "full", "full_linear")}
    small = out["like_for_like_at_full_pairs"]
    like = {kind: {"pairs": args.full_pairs, "seconds": small[kind]["seconds"],
                   "peak_rss_growth_mib": round(small[kind]["peak_rss_growth_bytes"] / 2**20, 2)}
            for kind in ("factored", "full", "full_linear")}
    ratios = {"vs full (log-space)": {"speedup": out["speedup"], "memory_ratio": out["memory_ratio"]},
              "vs full_linear": {"speedup": out["speedup_vs_full_linear"],
                                 "memory_ratio": out["memory_ratio_vs_full_linear"]},
              "vs full at full_pairs": {"speedup": small["speedup"], "memory_ratio": small["memory_ratio"]}}
    met = {key: out[key] is not None and out[key] >= target for key, target in TARGETS.items()}
    write_result("bench_tensor", budgets={"pairs": args.pairs, "full_pairs": args.full_pairs, "rank": args.rank,
                                          "sizes": list(args.sizes), "repeats": args.repeats, "threads": args.threads},
                 seeds=[0], numbers={"forms": forms, "like_for_like": like, "ratios": ratios,
                                     "float64_check": out["float64_check"],
                                     "targets": {"speedup_at_least": TARGETS["speedup"],
                                                 "memory_ratio_at_least": TARGETS["memory_ratio"],
                                                 "speedup_met": met["speedup"],
                                                 "memory_ratio_met": met["memory_ratio"]}},
                 sources=["sgtool/losses/tensor.py"],
                 notes="Loss + backward, float32 on CPU, median of `repeats`; the full forms are measured at "
                       "full_pairs and scaled linearly to pairs (measured_at_pairs). A ratio is empty when the "
                       "factored form's RSS growth is below what peak RSS resolves.")


if __name__ == "__main__":
    main()
