"""The image -> graph -> image auto-encoder for line drawings (and the encoder its supervised baseline uses).

Paper: Chenyang Lu and Gijs Dubbelman, "Image-Graph-Image Translation via Auto-Encoding"
(docs/methods/ae.md maps its equations to this code and lists the deviations).

Coordinates are normalised to [-1, 1] with the align_corners=False convention of `F.grid_sample`:
pixel i of a side of S pixels has its centre at (2i + 1) / S - 1.

Encoder:  residual conv blocks (CoordConv input, dilated blocks for a canvas-wide view) -> one
          attention map per node slot (2-D softmax) -> DSNT coordinates (expected x, y; no weights)
          -> for every node pair the ROI spanned by the two points (plus a margin), ROIAligned to
          16x16 from the image (the paper; `edge_input="image+segment"` adds the decoder's candidate
          segment as a second channel) -> edge classifier -> edge probability.
Decoder:  per pair, a horizontal-line template placed by an affine spatial transformer so it runs
          from node i to node j, weighted by the edge probability, united on a blank canvas
          (1 - prod(1 - p * line)) -> refinement CNN (three 3x3 conv layers, 16 channels, PReLU).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgtool.vision import require_torchvision

ROI_SIZE = 16
EDGE_INPUTS = ("image", "image+segment")
ENCODERS = ("coordconv-dilated", "plain")  # ours; without CoordConv channels and dilations
TEMPLATE_ROWS, TEMPLATE_COLS = 17, 8
TEMPLATE_REACH = 4.0  # the template's half height is this many line sigmas


# ---------------------------------------------------------------- building blocks

def pixel_centres(size: int, device: torch.device | None = None) -> Tensor:
    """(size,) normalised coordinates of pixel centres."""
    return (2 * torch.arange(size, device=device, dtype=torch.float32) + 1) / size - 1


def coord_channels(batch: int, height: int, width: int, device: torch.device) -> Tensor:
    ys, xs = torch.meshgrid(pixel_centres(height, device), pixel_centres(width, device), indexing="ij")
    return torch.stack([xs, ys]).expand(batch, 2, height, width)


def spatial_softmax(logits: Tensor) -> Tensor:
    """(B, K, H, W) logits -> attention maps that each sum to 1 over H x W."""
    b, k, h, w = logits.shape
    return logits.flatten(2).softmax(-1).view(b, k, h, w)


def dsnt(attention: Tensor) -> Tensor:
    """Differentiable spatial to numerical transform: (B, K, H, W) maps -> (B, K, 2) expected (x, y)."""
    _, _, h, w = attention.shape
    x = (attention.sum(2) * pixel_centres(w, attention.device)).sum(-1)
    y = (attention.sum(3) * pixel_centres(h, attention.device)).sum(-1)
    return torch.stack([x, y], dim=-1)


def node_pairs(k: int, device: torch.device | None = None) -> Tensor:
    """(P, 2) slot pairs i < j, P = k (k - 1) / 2."""
    return torch.triu_indices(k, k, 1, device=device).T


class ResBlock(nn.Module):
    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x))


# ---------------------------------------------------------------- encoder

class NodeEncoder(nn.Module):
    """Image -> K node-attention maps at half resolution -> DSNT coordinates. `kind="plain"`: the same
    blocks without the CoordConv channels and with dilation 1 throughout."""

    def __init__(self, max_nodes: int, width: int = 24, kind: str = "coordconv-dilated") -> None:
        super().__init__()
        self.coords = 2 if kind == "coordconv-dilated" else 0
        self.stem = nn.Sequential(nn.Conv2d(1 + self.coords, width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*(ResBlock(width, d if self.coords else 1) for d in (1, 2, 4)))
        self.head = nn.Conv2d(width + self.coords, max_nodes, 1)

    def with_coords(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        return torch.cat([x, coord_channels(b, h, w, x.device)], 1) if self.coords else x

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        x = self.blocks(self.stem(self.with_coords(image)))
        logits = self.head(self.with_coords(x))
        attention = spatial_softmax(logits)
        return attention, dsnt(attention)


class EdgeClassifier(nn.Module):
    """ROI between two nodes -> probability that they are joined. `edge_input="image"` (the paper): the
    ROI is pooled from the image alone, two conv layers of 32 and 16 channels (BN, ReLU, max-pool),
    two FC layers; "image+segment": [image, candidate segment], 16 and 32 channels (the earlier form)."""

    def __init__(self, edge_input: str = "image", margin: float = 3.0) -> None:
        super().__init__()
        self.margin, self.with_segment = margin, edge_input == "image+segment"
        c1, c2 = (16, 32) if self.with_segment else (32, 16)
        self.conv = nn.Sequential(
            nn.Conv2d(1 + self.with_segment, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c2 * (ROI_SIZE // 4) ** 2, 64), nn.ReLU(inplace=True),
                                nn.Linear(64, 1))

    def rois(self, coords: Tensor, pairs: Tensor, size: int) -> Tensor:
        """(B * P, 5) [row, x1, y1, x2, y2] boxes in pixels spanned by each pair's two points, plus a margin."""
        px = (coords.detach() + 1) * size / 2
        a, c = px[:, pairs[:, 0]], px[:, pairs[:, 1]]
        lo, hi = torch.minimum(a, c) - self.margin, torch.maximum(a, c) + self.margin
        boxes = torch.cat([lo, hi], -1).reshape(-1, 4)
        return torch.cat([torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None], boxes], 1)

    def forward(self, image: Tensor, lines: Tensor, coords: Tensor, pairs: Tensor) -> Tensor:
        b, p, h, w = lines.shape
        channels = [image.expand(b, p, h, w), lines.detach()] if self.with_segment else [image.expand(b, p, h, w)]
        stacked = torch.stack(channels, 2).reshape(b * p, len(channels), h, w)
        require_torchvision()
        from torchvision.ops import roi_align

        crops = roi_align(stacked, self.rois(coords, pairs, w), (ROI_SIZE, ROI_SIZE), 1.0, 2, aligned=True)
        return torch.sigmoid(self.fc(self.conv(crops))).view(b, p)


# ---------------------------------------------------------------- decoder

def line_template(rows: int = TEMPLATE_ROWS, cols: int = TEMPLATE_COLS) -> Tensor:
    """(1, 1, rows, cols) a horizontal line: a Gaussian profile across, constant along."""
    v = pixel_centres(rows) * TEMPLATE_REACH
    return torch.exp(-0.5 * v ** 2)[:, None].expand(rows, cols).reshape(1, 1, rows, cols).contiguous()


def segment_affine(start: Tensor, end: Tensor, half_width: float) -> Tensor:
    """(N, 2, 3) theta mapping canvas coordinates to template coordinates: u runs -1 -> 1 from start
    to end, v is the distance across the segment in units of half_width (all normalised)."""
    d = end - start
    mid = (start + end) / 2
    length2 = (d ** 2).sum(-1) + 1e-6
    length = length2.sqrt()
    dx, dy, mx, my = d[:, 0], d[:, 1], mid[:, 0], mid[:, 1]
    row_u = torch.stack([2 * dx, 2 * dy, -2 * (dx * mx + dy * my)], -1) / length2[:, None]
    row_v = torch.stack([-dy, dx, dy * mx - dx * my], -1) / (length * half_width)[:, None]
    return torch.stack([row_u, row_v], 1)


def draw_segments(coords: Tensor, pairs: Tensor, size: int, sigma: float) -> Tensor:
    """(B, K, 2) nodes -> (B, P, size, size) one line image per pair (sigma: line profile, pixels)."""
    b, p = coords.shape[0], pairs.shape[0]
    start = coords[:, pairs[:, 0]].reshape(-1, 2)
    end = coords[:, pairs[:, 1]].reshape(-1, 2)
    theta = segment_affine(start, end, TEMPLATE_REACH * sigma * 2 / size)
    grid = F.affine_grid(theta, [b * p, 1, size, size], align_corners=False)
    template = line_template().to(coords.device).expand(b * p, 1, TEMPLATE_ROWS, TEMPLATE_COLS)
    lines = F.grid_sample(template, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return lines.view(b, p, size, size)


def compose(lines: Tensor, edge_prob: Tensor) -> Tensor:
    """Weighted lines united on a blank canvas: (B, P, H, W), (B, P) -> (B, 1, H, W)."""
    return 1 - torch.prod(1 - lines * edge_prob[:, :, None, None], dim=1, keepdim=True)


class Refiner(nn.Module):
    """Three 3x3 conv layers (16 channels, PReLU) correcting the coarse drawing, in logit space. With
    `sharpen` (ours) they correct a fixed path sigmoid(8 (coarse - 0.5)), their last layer starting at
    zero; without it (the paper's layers alone) the output is sigmoid(layers(coarse)), default init."""

    def __init__(self, sharpen: bool = True) -> None:
        super().__init__()
        self.sharpen = sharpen
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.PReLU(16), nn.Conv2d(16, 16, 3, padding=1),
                                 nn.PReLU(16), nn.Conv2d(16, 1, 3, padding=1))
        if sharpen:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, coarse: Tensor) -> Tensor:
        fixed = 8 * (coarse - 0.5) if self.sharpen else 0
        return torch.sigmoid(fixed + self.net(coarse))


# ---------------------------------------------------------------- the whole model

class GraphAutoEncoder(nn.Module):
    def __init__(self, max_nodes: int = 4, width: int = 24, roi_margin: float = 3.0, edge_input: str = "image",
                 encoder: str = "coordconv-dilated", refiner_sharpen: bool = True) -> None:
        super().__init__()
        self.max_nodes = max_nodes
        self.encoder = NodeEncoder(max_nodes, width, encoder)
        self.edges = EdgeClassifier(edge_input, roi_margin)
        self.refiner = Refiner(refiner_sharpen)
        self.register_buffer("pairs", node_pairs(max_nodes), persistent=False)

    def encode(self, image: Tensor, sigma: float) -> dict[str, Tensor]:
        attention, coords = self.encoder(image)
        lines = draw_segments(coords, self.pairs, image.shape[-1], sigma)
        edge_prob = self.edges(image, lines, coords, self.pairs)
        return {"attention": attention, "coords": coords, "lines": lines, "edge_prob": edge_prob}

    def forward(self, image: Tensor, sigma: float) -> dict[str, Tensor]:
        out = self.encode(image, sigma)
        out["coarse"] = compose(out["lines"], out["edge_prob"])
        out["refined"] = self.refiner(out["coarse"])
        return out
