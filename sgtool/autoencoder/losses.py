"""Losses of the auto-encoder (self-supervised) and of its supervised baseline.

Paper: Lu & Dubbelman, "Image-Graph-Image Translation via Auto-Encoding" (docs/methods/ae.md).

Self-supervised (Eq. 4-6): 1 - MS-SSIM(refined, input) per image (pytorch-msssim) + lambda x the
auxiliary loss on the node-attention maps, applied only to the images whose MS-SSIM is below the
batch mean. `aux="paper"` is Eq. 5: mean over pixels of ReLU(sum of the max-normalised maps - 1)^2;
`aux="overlap"` is the earlier pairwise shared-mass penalty. pytorch-msssim always downsamples 4
times and asserts that the image side exceeds (win_size - 1) * 16, so the Gaussian window is 3
pixels at 64 px, 7 at 128 px (the paper's 11 needs 161+ px); the five default scale weights are kept.

Supervised baseline, `baseline="paper"` (Sec. 4): MSE between the raw channel-summed attention (the
softmax maps as they are, no normalisation) and a ground-truth heat map, `heat_scale` x the pointwise
maximum of Gaussians of `heat_sigma` attention cells at the nodes; then binary cross entropy on the
adjacency of the slots matched to ground-truth nodes (Hungarian, scipy). The attention alone is
trained first (the heat map), then frozen while the edges alone learn (trainee.py).
`baseline="strong"`: KL heat-map loss + 10 x L1 on the matched coordinates + the cross entropy,
nothing frozen.
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
AUX_LOSSES = ("paper", "overlap")
BASELINES = ("paper", "strong")


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


def max_normalised(attention: Tensor) -> Tensor:
    """(B, K, H, W) maps scaled so that each channel's largest cell is 1 (Eq. 5's M_att)."""
    return attention / attention.amax(dim=(2, 3), keepdim=True).clamp(min=1e-12)


def stacking(attention: Tensor) -> Tensor:
    """(B,) Eq. 5 per image: mean over pixels of ReLU(sum_i M_att[i] - 1)^2, M_att max-normalised."""
    return F.relu(max_normalised(attention).sum(1) - 1).pow(2).flatten(1).mean(1)


def auxiliary_loss(attention: Tensor, sim: Tensor, kind: str = "paper") -> Tensor:
    """Eq. 5: the per-image penalty where the image's similarity is below the batch mean, 0 elsewhere;
    the batch mean of that (`kind="overlap"`: the pairwise shared mass, averaged over the images below)."""
    below = (sim < sim.mean()).float().detach()
    if kind == "overlap":
        return (overlap(attention) * below).sum() / below.sum().clamp(min=1)
    return (stacking(attention) * below).mean()


def self_supervised_loss(out: dict[str, Tensor], image: Tensor, *, kind: str = "msssim", on: str = "refined",
                         aux_weight: float = 1.0, aux: str = "paper") -> dict[str, Tensor]:
    sim = similarity(out[on], image, kind)
    recon = 1 - sim
    penalty = auxiliary_loss(out["attention"], sim, aux)
    loss = recon.mean() + aux_weight * penalty if aux_weight else recon.mean()
    return {"loss": loss, "recon": recon.mean().detach(), "aux": penalty.detach(), "msssim": sim.mean().detach()}


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


def gaussian_heatmap(points: list[np.ndarray], size: int, sigma: float, device: torch.device,
                     peak: bool = False) -> Tensor:
    """(B, 1, size, size) Gaussians (sigma in pixels of this map) at each image's nodes: their sum
    normalised to sum 1, or (peak=True) their pointwise maximum, each Gaussian peaking at 1."""
    c = pixel_centres(size, device)
    maps = []
    for pts in points:
        p = torch.as_tensor(pts, dtype=torch.float32, device=device)
        d2 = (c[None, None, :] - p[:, 0, None, None]) ** 2 + (c[None, :, None] - p[:, 1, None, None]) ** 2
        g = torch.exp(-d2 / (2 * (2 * sigma / size) ** 2))
        maps.append(g.amax(0) if peak else g.sum(0) / g.sum())
    return torch.stack(maps)[:, None]


def matched_adjacency(assigned: list[np.ndarray], points: list[np.ndarray], edges: list[np.ndarray],
                      pairs: np.ndarray) -> np.ndarray:
    """(B, P) the temporary ground-truth adjacency of the slot pairs, in the slots' matched order."""
    adjacency = np.zeros((len(assigned), len(pairs)), dtype=np.float32)
    for i, (a, e) in enumerate(zip(assigned, edges)):
        adj = np.zeros((len(points[i]),) * 2, dtype=bool)
        adj[e[:, 0], e[:, 1]] = adj[e[:, 1], e[:, 0]] = True
        adjacency[i] = adj[a[pairs[:, 0]], a[pairs[:, 1]]]
    return adjacency


def paper_heatmap_loss(attention: Tensor, points: list[np.ndarray], sigma: float, scale: float) -> Tensor:
    """The paper baseline's node loss: MSE between the raw channel sum of the attention maps and
    `scale` x unit-peak Gaussians (sigma in attention cells) at the GT nodes."""
    target = scale * gaussian_heatmap(points, attention.shape[-1], sigma, attention.device, peak=True)
    return F.mse_loss(attention.sum(1, keepdim=True), target)


def supervised_loss(out: dict[str, Tensor], points: list[np.ndarray], edges: list[np.ndarray],
                    baseline: str = "paper", frozen: bool = False, heat_sigma: float = 1.0,
                    heat_scale: float = 4.0) -> dict[str, Tensor]:
    """points: per image (n, 2) normalised GT nodes; edges: per image (e, 2) node pairs. The paper
    baseline trains the heat map alone, then (`frozen`: the attention fixed) the edges' cross entropy alone."""
    attention, coords, prob = out["attention"], out["coords"], out["edge_prob"]
    b, k, h, _ = attention.shape
    pairs = node_pairs(k).numpy()
    assigned = [match_slots(c, p) for c, p in zip(coords.detach().cpu().numpy(), points)]
    target = torch.as_tensor(matched_adjacency(assigned, points, edges, pairs), device=prob.device)
    bce = F.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), target)
    if baseline == "paper":
        heat = paper_heatmap_loss(attention, points, heat_sigma, heat_scale)
        loss = bce if frozen else heat
        return {"loss": loss, "heatmap": heat.detach(), "bce": bce.detach()}
    target_map = gaussian_heatmap(points, h, 1.0, attention.device)
    summed = attention.sum(1, keepdim=True) / k
    heat = (target_map * (torch.log(target_map + 1e-8) - torch.log(summed + 1e-8))).flatten(1).sum(1).mean()
    matched = torch.as_tensor(np.stack([p[a] for p, a in zip(points, assigned)]), dtype=torch.float32)
    coord = (coords - matched.to(coords.device)).abs().sum(-1).mean()
    loss = heat + 10 * coord + bce
    return {"loss": loss, "heatmap": heat.detach(), "coord": coord.detach(), "bce": bce.detach()}
