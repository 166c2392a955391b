"""LIIF on the `lite` encoder: the INR baseline ContinuousSR is compared with.

Written from the paper's description: Yinbo Chen, Sifei Liu, Xiaolong Wang, "Learning Continuous Image
Representation with Local Implicit Image Function", CVPR 2021 (arXiv:2012.09161). Its four pieces:

- feature unfolding: each LR feature vector is replaced by the concatenation of its 3x3 neighbourhood
  (zero padded at the border), C -> 9C channels;
- local ensemble: a query point is decoded from each of the 4 feature cells around it (the nearest cell
  after shifting the query by half a cell up/down, left/right), and the 4 predictions are blended with the
  area of the rectangle between the query and the *diagonally opposite* cell centre (bilinear weights);
- relative coordinates: the decoder reads the feature and (query - cell centre), measured in [-1, 1] image
  coordinates multiplied by the feature grid's size;
- cell decoding: the decoder also reads the size of the output pixel, (2/H, 2/W) times the grid's size,
  i.e. (2/s_h, 2/s_w) at scale s.

The decoder is the paper's MLP: 5 linear layers, hidden width 256, ReLU. Coordinates follow LIIF: (y, x)
order, pixel centres of an n-pixel side at -1 + (2i + 1)/n. The encoder is our `lite` CNN without its
upsampler (LIIF runs EDSR-baseline without its upsampler too), so both methods see the same features.
Input and target are normalised to [-1, 1] as in the LIIF code's data wrapper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sr_model.networks.encoders import LiteEncoder
from sr_model.networks.presets import ModelConfig, preset

#: The paper's decoder: 4 hidden layers of 256 and the output layer (5 linear layers).
HIDDEN = (256, 256, 256, 256)
#: Queries per decoder call when a whole image is decoded (the LIIF code's eval batch size).
QUERY_CHUNK = 30000


def pixel_centres(n: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Centres of n pixels along one side in [-1, 1] coordinates: -1 + (2i + 1)/n."""
    return -1.0 + (2.0 * torch.arange(n, device=device, dtype=dtype) + 1.0) / n


def make_coord(height: int, width: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """(height * width, 2) pixel-centre coordinates (y, x), row-major."""
    ys, xs = pixel_centres(height, device=device, dtype=dtype), pixel_centres(width, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([yy.reshape(-1), xx.reshape(-1)], dim=-1)


def make_cell(height: int, width: int, count: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """(count, 2) output pixel size (2/H, 2/W) in [-1, 1] coordinates, the same for every query."""
    return torch.tensor([2.0 / height, 2.0 / width], device=device, dtype=dtype).expand(count, 2)


def unfold_features(feat: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 9C, H, W): channel c's 3x3 neighbourhood (row-major) at 9c .. 9c + 8, zeros outside."""
    b, c, h, w = feat.shape
    return F.unfold(feat, 3, padding=1).view(b, c * 9, h, w)


def nearest_cell(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Index of the cell of a side of `size` cells that holds each coordinate (clamped into the grid)."""
    return ((coord + 1.0) * (size / 2.0)).floor().long().clamp_(0, size - 1)


def ensemble_neighbours(coord: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4 feature cells of the local ensemble for queries `coord` (..., 2) (y, x) on a height x width grid.

    Returns (flat cell indices (4, ...), relative coordinates (4, ..., 2)), in the order (vy, vx) = (-1, -1),
    (-1, +1), (+1, -1), (+1, +1): the query shifted by half a cell (plus 1e-6, as LIIF) and clamped inside the
    image picks the cell; rel = (query - cell centre) * (height, width).
    """
    eps = 1e-6
    half = torch.tensor([1.0 / height, 1.0 / width], device=coord.device, dtype=coord.dtype)
    size = torch.tensor([height, width], device=coord.device, dtype=coord.dtype)
    indices, rels = [], []
    for vy in (-1, 1):
        for vx in (-1, 1):
            shift = torch.tensor([vy, vx], device=coord.device, dtype=coord.dtype) * half + eps
            shifted = (coord + shift).clamp(-1 + eps, 1 - eps)
            row, col = nearest_cell(shifted[..., 0], height), nearest_cell(shifted[..., 1], width)
            centre = torch.stack([-1.0 + (2.0 * row + 1.0) / height, -1.0 + (2.0 * col + 1.0) / width], dim=-1)
            indices.append(row * width + col)
            rels.append((coord - centre.to(coord.dtype)) * size)
    return torch.stack(indices), torch.stack(rels)


def ensemble_weights(rel: torch.Tensor) -> torch.Tensor:
    """(4, ...) blending weights from the relative coordinates (4, ..., 2) of `ensemble_neighbours`.

    Each cell is weighted by the area |dy * dx| of the diagonally opposite cell's rectangle (+1e-9), divided
    by the sum: bilinear interpolation weights when the 4 cells surround the query.
    """
    areas = (rel[..., 0] * rel[..., 1]).abs() + 1e-9
    return areas.flip(0) / areas.sum(dim=0, keepdim=True)


class LIIF(nn.Module):
    """Lite encoder (no upsampler) + LIIF decoder. `encode(lr)` once, `decode(...)` per scale."""

    def __init__(self, config: ModelConfig | None = None, hidden: Sequence[int] = HIDDEN) -> None:
        super().__init__()
        self.config = config or preset("lite")
        lite = LiteEncoder(self.config.lite_channels, self.config.lite_blocks)
        self.head, self.body = lite.head, lite.body  # the upsampler is left out, as LIIF does with EDSR
        channels = self.config.lite_channels
        layers: list[nn.Module] = []
        last = channels * 9 + 2 + 2  # unfolded feature, relative coordinate, cell
        for width in hidden:
            layers += [nn.Linear(last, width), nn.ReLU(inplace=True)]
            last = width
        layers.append(nn.Linear(last, 3))
        self.imnet = nn.Sequential(*layers)

    def encode(self, lr: torch.Tensor) -> torch.Tensor:
        """LR (B, 3, h, w) in [0, 1] -> unfolded features (B, 9C, h, w)."""
        x = self.head((lr - 0.5) / 0.5)
        return unfold_features(self.body(x) + x)

    def decode(self, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] scale (B, Q, 3) at queries `coord` (B, Q, 2) with output pixel sizes `cell` (B, Q, 2)."""
        _b, channels, height, width = feat.shape
        indices, rel = ensemble_neighbours(coord, height, width)  # (4, B, Q), (4, B, Q, 2)
        flat = feat.flatten(2).transpose(1, 2)  # (B, hw, 9C)
        rel_cell = cell * torch.tensor([height, width], device=cell.device, dtype=cell.dtype)
        weights = ensemble_weights(rel)
        out = 0.0
        for i in range(4):
            q_feat = torch.gather(flat, 1, indices[i].unsqueeze(-1).expand(-1, -1, channels))
            pred = self.imnet(torch.cat([q_feat, rel[i].to(feat.dtype), rel_cell], dim=-1))
            out = out + pred * weights[i].unsqueeze(-1)
        return out * 0.5 + 0.5

    def forward(self, lr: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(lr), coord, cell)

    def render(self, feat: torch.Tensor, size: Sequence[int], chunk: int = QUERY_CHUNK) -> torch.Tensor:
        """The whole (B, 3, H, W) image from encoded features, decoded `chunk` queries at a time."""
        height, width = int(size[0]), int(size[1])
        b = feat.shape[0]
        coord = make_coord(height, width, device=feat.device, dtype=feat.dtype)
        cell = make_cell(height, width, coord.shape[0], device=feat.device, dtype=feat.dtype)
        out = torch.empty(b, height * width, 3, device=feat.device, dtype=feat.dtype)
        for start in range(0, coord.shape[0], chunk):
            stop = min(start + chunk, coord.shape[0])
            out[:, start:stop] = self.decode(
                feat, coord[start:stop].expand(b, -1, -1), cell[start:stop].expand(b, -1, -1)
            )
        return out.transpose(1, 2).reshape(b, 3, height, width)

    def upscale(self, lr: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Encode and decode at `size` (H, W)."""
        return self.render(self.encode(lr), size)


def sample_queries(
    hr: torch.Tensor, count: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LIIF's training sample: `count` random HR pixels per image -> (coord, cell, rgb), each (B, count, .)."""
    b, _, height, width = hr.shape
    coord = make_coord(height, width, device=hr.device, dtype=hr.dtype)
    rgb = hr.flatten(2).transpose(1, 2)
    picks = torch.stack([torch.randperm(height * width, generator=generator)[:count] for _ in range(b)]).to(hr.device)
    coords = coord[picks]
    cells = make_cell(height, width, b * count, device=hr.device, dtype=hr.dtype).reshape(b, count, 2)
    return coords, cells, torch.gather(rgb, 1, picks.unsqueeze(-1).expand(-1, -1, 3))
