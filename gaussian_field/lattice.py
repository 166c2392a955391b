"""Lattice layout of a field: where each Gaussian sits and how far it can reach.

A field over an h x w LR image has k x k Gaussians per LR pixel, laid out on a (k*h) x (k*w) grid in
row-major order: Gaussian n = r * (k*w) + c, with r = k*i + a and c = k*j + b for LR pixel (i, j) and
sub-position (a, b). Its base position is (c/k, r/k) in LR pixels (x then y): zero-offset Gaussians sit on
sub-cell corners, as in the official model (the golden files pin this).
"""

from __future__ import annotations

import math

import torch

#: A term whose squared Mahalanobis distance exceeds this (value < 1/255) is dropped.
CUT_MAHALANOBIS_SQ = 2.0 * math.log(255.0)
#: Slack on a reach radius before it is rounded to lattice offsets (r * REACH_GROWTH + REACH_PAD), so that float
#: rounding never leaves out a Gaussian at the edge of its reach; every renderer applies these same two steps.
REACH_GROWTH = 1.0 + 1e-9
REACH_PAD = 1e-9


def base_positions(
    h: int, w: int, k: int, *, dtype=torch.float64, device=None, rows: tuple[int, int] | None = None
) -> torch.Tensor:
    """Base positions (N, 2) of the lattice in LR pixels, x then y; of lattice rows [rows) only, if given."""
    first, stop = (0, k * h) if rows is None else rows
    ys = torch.arange(first, stop, dtype=dtype, device=device) / k
    xs = torch.arange(k * w, dtype=dtype, device=device) / k
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)


def add_base_positions(
    offsets: torch.Tensor, h: int, w: int, k: int, rows: tuple[int, int] | None = None
) -> torch.Tensor:
    """`offsets` (B, N, 2) + `base_positions(..., rows=rows)`, in place and without an (N, 2) base tensor (same
    values); `offsets` may also be the (B, rows, k * w, 2) grid."""
    first, stop = (0, k * h) if rows is None else rows
    grid = offsets.view(offsets.shape[0], stop - first, k * w, 2)
    grid[..., 0].add_(torch.arange(k * w, dtype=offsets.dtype, device=offsets.device) / k)
    grid[..., 1].add_((torch.arange(first, stop, dtype=offsets.dtype, device=offsets.device) / k).view(-1, 1))
    return offsets


def support_half_extents(chol: torch.Tensor) -> torch.Tensor:
    """Axis-aligned half extents (..., 2) of each Gaussian's 1/255 ellipse, in LR pixels.

    The ellipse {d : d^T Sigma^-1 d <= T} spans sqrt(T * Sigma_xx) in x and sqrt(T * Sigma_yy) in y.
    """
    l11, l21, l22 = chol.unbind(-1)
    ex = l11.abs()
    ey = torch.sqrt(l21 * l21 + l22 * l22)
    return torch.stack([ex, ey], dim=-1) * math.sqrt(CUT_MAHALANOBIS_SQ)


def neighbourhood_reach(means: torch.Tensor, chol: torch.Tensor, h: int, w: int, k: int) -> tuple[int, int, int, int]:
    """Lattice offsets (dy_lo, dy_hi, dx_lo, dx_hi) that can reach a sample point.

    A Gaussian at lattice column c reaches a sample at x only if |x - c/k| <= R_x, where R_x is the field's
    largest |mean_x - base_x| + half extent. With g = floor(k*x) that means c - g in [-floor(k R_x), ceil(k R_x)].
    Computed from the field itself, so no Gaussian is ever dropped by the neighbourhood, whatever its shape.
    """
    with torch.no_grad():
        base = base_positions(h, w, k, dtype=torch.float64, device=means.device)
        drift = (means.detach().double() - base).abs().amax(dim=tuple(range(means.dim() - 1)))
        extent = support_half_extents(chol.detach().double()).amax(dim=tuple(range(chol.dim() - 1)))
        reach_x, reach_y = (drift + extent).cpu().tolist()
    return reach_bounds(reach_x, reach_y, k)


def reach_bounds(reach_x: float, reach_y: float, k: int) -> tuple[int, int, int, int]:
    """Lattice offsets (dy_lo, dy_hi, dx_lo, dx_hi) from reach radii in LR pixels, slack added, rounded outward."""
    rx, ry = (r * REACH_GROWTH + REACH_PAD for r in (reach_x, reach_y))
    return -math.floor(k * ry), math.ceil(k * ry), -math.floor(k * rx), math.ceil(k * rx)
