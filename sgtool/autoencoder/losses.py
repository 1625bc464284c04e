"""Losses of the auto-encoder (self-supervised) and of its supervised twin.

Self-supervised: 1 - MS-SSIM(reconstruction, input) per image (pytorch-msssim) + lambda x the
auxiliary overlap loss on the node-attention maps, the latter only for the images whose MS-SSIM
is below the batch mean. pytorch-msssim always downsamples 4 times and asserts that the image
side exceeds (win_size - 1) * 16, so the Gaussian window is 3 pixels at 64 px, 7 at 128 px
(the paper's 11 needs 161+ px); the five default scale weights are kept.

Supervised: the same encoder with ground truth: a Gaussian heat-map loss on the channel-summed
attention, an L1 loss on the coordinates of the node slots matched to ground-truth nodes
(Hungarian, scipy), and binary cross entropy on the adjacency of the matched slots.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim, ssim
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from sgtool.autoencoder.model import node_pairs, pixel_centres

RECON_LOSSES = ("msssim", "ssim")


def window_for(size: int) -> int:
    """The largest odd Gaussian window pytorch-msssim accepts for MS-SSIM at this image side."""
    win = (size - 1) // 16
    win = win if win % 2 == 1 else win - 1
    return max(3, min(11, win))


def similarity(recon: Tensor, target: Tensor, kind: str = "msssim") -> Tensor:
    """(B,) MS-SSIM (or single-scale SSIM) per image, data range 1.

    oneDNN is switched off here: its 1-channel Gaussian window convolutions are several times
    slower on CPU than the native kernels (measured: 0.3 s vs 0.13 s per batch of 32 at 64 px).
    """
    with native_convolutions():
        if kind == "ssim":
            return ssim(recon, target, data_range=1.0, size_average=False, win_size=7)
        return ms_ssim(recon, target, data_range=1.0, size_average=False, win_size=window_for(recon.shape[-1]))


@contextmanager
def native_convolutions() -> Iterator[None]:
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def overlap(attention: Tensor) -> Tensor:
    """(B,) mean over slot pairs of the mass two attention maps share (sum of the pointwise min): 0..1."""
    k = attention.shape[1]
    pairs = node_pairs(k, attention.device)
    flat = attention.flatten(2)
    shared = torch.minimum(flat[:, pairs[:, 0]], flat[:, pairs[:, 1]]).sum(-1)
    return shared.mean(-1)


def self_supervised_loss(out: dict[str, Tensor], image: Tensor, *, kind: str = "msssim", on: str = "refined",
                         aux_weight: float = 1.0) -> dict[str, Tensor]:
    sim = similarity(out[on], image, kind)
    recon = 1 - sim
    below = (sim < sim.mean()).float().detach()
    aux = (overlap(out["attention"]) * below).sum() / below.sum().clamp(min=1)
    loss = recon.mean() + aux_weight * aux if aux_weight else recon.mean()
    return {"loss": loss, "recon": recon.mean().detach(), "aux": aux.detach(), "msssim": sim.mean().detach()}


# ---------------------------------------------------------------- supervised twin

def match_slots(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(K,) the ground-truth node each slot stands for: Hungarian on distance, every slot assigned
    (GT nodes repeated when K > n, so surplus slots duplicate a node and every node gets a slot)."""
    k, n = len(pred), len(gt)
    reps = -(-k // n)
    cost = np.linalg.norm(pred[:, None] - np.tile(gt, (reps, 1))[None], axis=-1)
    rows, cols = linear_sum_assignment(cost)
    assigned = np.empty(k, dtype=np.int64)
    assigned[rows] = cols % n
    return assigned


def gaussian_heatmap(points: list[np.ndarray], size: int, sigma: float, device: torch.device) -> Tensor:
    """(B, 1, size, size) the sum of Gaussians at each image's nodes, normalised to sum 1."""
    c = pixel_centres(size, device)
    maps = []
    for pts in points:
        p = torch.as_tensor(pts, dtype=torch.float32, device=device)
        d2 = (c[None, None, :] - p[:, 0, None, None]) ** 2 + (c[None, :, None] - p[:, 1, None, None]) ** 2
        m = torch.exp(-d2 / (2 * (2 * sigma / size) ** 2)).sum(0)
        maps.append(m / m.sum())
    return torch.stack(maps)[:, None]


def supervised_loss(out: dict[str, Tensor], points: list[np.ndarray], edges: list[np.ndarray]) -> dict[str, Tensor]:
    """points: per image (n, 2) normalised GT nodes; edges: per image (e, 2) node pairs."""
    attention, coords, prob = out["attention"], out["coords"], out["edge_prob"]
    b, k, h, _ = attention.shape
    target = gaussian_heatmap(points, h, 1.0, attention.device)
    summed = attention.sum(1, keepdim=True) / k
    heat = -(target * torch.log(summed + 1e-8)).flatten(1).sum(1).mean() + (target * torch.log(target + 1e-8)).flatten(1).sum(1).mean()
    pairs = node_pairs(k).numpy()
    assigned = [match_slots(c, p) for c, p in zip(coords.detach().cpu().numpy(), points)]
    matched = torch.as_tensor(np.stack([p[a] for p, a in zip(points, assigned)]), dtype=torch.float32)
    coord = (coords - matched.to(coords.device)).abs().sum(-1).mean()
    adjacency = np.zeros((b, len(pairs)), dtype=np.float32)
    for i, (a, e) in enumerate(zip(assigned, edges)):
        adj = np.zeros((len(points[i]),) * 2, dtype=bool)
        adj[e[:, 0], e[:, 1]] = adj[e[:, 1], e[:, 0]] = True
        adjacency[i] = adj[a[pairs[:, 0]], a[pairs[:, 1]]]
    bce = F.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), torch.as_tensor(adjacency, device=prob.device))
    loss = heat + 10 * coord + bce
    return {"loss": loss, "heatmap": heat.detach(), "coord": coord.detach(), "bce": bce.detach()}
