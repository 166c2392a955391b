"""A field straight from an image, with no learning: the starting point of per-crop fitting and the demo.

Every Gaussian gets a small isotropic covariance and the image colour (bilinear) at its lattice base,
divided by the lattice's summed kernel weight so that rendering at scale 1 gives back a smoothed image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gaussian_field.field import GaussianField
from gaussian_field.lattice import CUT_MAHALANOBIS_SQ, base_positions


def kernel_sum(k: int, sigma: float) -> float:
    """Summed weight of an infinite k-per-pixel lattice of isotropic Gaussians, seen from an LR pixel centre."""
    reach = math.ceil(math.sqrt(CUT_MAHALANOBIS_SQ) * sigma * k) + 2
    total = 0.0
    for r in range(-reach, reach + 1):
        for c in range(-reach, reach + 1):
            dx, dy = c / k - 0.5, r / k - 0.5
            m = (dx * dx + dy * dy) / (sigma * sigma)
            if m <= CUT_MAHALANOBIS_SQ:
                total += math.exp(-0.5 * m)
    return total


def field_from_image(image: torch.Tensor, k: int = 2, sigma: float = 0.5) -> GaussianField:
    """A field (B fields) for images (B, 3, h, w) or (3, h, w) in [0, 1]; sigma in LR pixels."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, h, w) or (3, h, w), got {tuple(image.shape)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    bsz, _, h, w = image.shape
    dtype = image.dtype if image.is_floating_point() else torch.float32
    image = image.to(dtype)
    base = base_positions(h, w, k, dtype=dtype, device=image.device)
    grid = torch.stack([base[:, 0] / w * 2 - 1, base[:, 1] / h * 2 - 1], -1).view(1, 1, -1, 2)
    colors = F.grid_sample(
        image, grid.expand(bsz, -1, -1, -1), mode="bilinear", padding_mode="border", align_corners=False
    )
    colors = colors.view(bsz, 3, -1).transpose(1, 2) / kernel_sum(k, sigma)
    chol = torch.tensor([sigma, 0.0, sigma], dtype=dtype, device=image.device).expand(bsz, base.shape[0], 3)
    return GaussianField(base.expand(bsz, -1, -1).clone(), chol.clone(), colors.contiguous(), h, w, k)
