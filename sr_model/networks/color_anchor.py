"""Colour anchoring: start every Gaussian from the colour that makes the field render an interpolation of the LR.

The field is an unnormalised sum, I(p) = sum_i c_i w_i(p), so the colour a Gaussian needs for a flat patch of
value v is v / S, where S = sum_j w_j(p) is the summed kernel weight of the lattice around it. S depends on the
predicted covariances (on average about 2.3 for a lattice of 0.3 LR px Gaussians, 0.6 for 0.15 px ones), so a
head that predicts raw colours must learn the inverse of whatever the covariance head does at every step, and
each channel's global colour level is a learned quantity that lags behind. Anchored, a Gaussian's colour is

    c_i = U(base_i) / S_i + residual_i

with U the bicubic interpolation of the LR image at the Gaussian's lattice base and S_i the coverage of
Gaussian i's own covariance (`coverage`: the summed weight of a lattice of such Gaussians averaged over
positions, less near the border). With a zero residual and zero offsets the field renders U, smoothed by the
Gaussians, at every scale and with no colour bias; the network only learns corrections.

Everything is local (U reads the 4x4 LR pixels around a base, S only Gaussian i's own covariance and where the
lattice ends), so tiled encoding stays exact within the encoder's receptive radius.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gaussian_field.lattice import CUT_MAHALANOBIS_SQ, base_positions

#: Diagonals below this are treated as this (a mix landing on the zero kernel would divide by zero).
MIN_DIAGONAL = 1e-4
#: Share of a Gaussian's integral inside its 1/255 ellipse (the renderer drops the rest): 1 - exp(-cut / 2).
INSIDE_CUT = 1.0 - math.exp(-0.5 * CUT_MAHALANOBIS_SQ)


#: Lattice rows per band of `anchor_colors`: its temporaries (about 20 floats per Gaussian) stay bounded.
BAND_GAUSSIANS = 2**16


def coverage(chol: torch.Tensor, k: int, lattice: tuple[int, int], rows: tuple[int, int] | None = None) -> torch.Tensor:
    """S (B, N): the summed kernel weight a lattice of Gaussians shaped like Gaussian n gives, averaged over
    sample positions, near Gaussian n's base.

    `chol` (B, N, 3) holds (l11, l21, l22) in LR px; `lattice` = (rows, cols), N = rows * cols row-major. Away
    from the borders S = k^2 * 2 pi l11 l22 * INSIDE_CUT (the integral of one Gaussian over the area of one lattice
    cell): the average over positions, not the value at a lattice point, so that thin Gaussians (which leave
    dark gaps between lattice points) get no global colour bias. Near a border, S is scaled by the share of the
    Gaussian's mass (per axis, from its marginal widths) that falls on the lattice, which ends half a cell
    beyond the outer bases. Gaussians the renderer drops (a diagonal <= 0) get S = 1. With `rows` = (r0, r1),
    `chol` holds only lattice rows [r0, r1) of the lattice.
    """
    height, cols = lattice
    first, stop = (0, height) if rows is None else rows
    if (stop - first) * cols != chol.shape[-2] or not 0 <= first <= stop <= height:
        raise ValueError(
            f"lattice rows {first}..{stop} of a {height}x{cols} lattice hold {(stop - first) * cols} Gaussians, "
            f"chol has {chol.shape[-2]}"
        )
    l11, l21, l22 = chol.unbind(-1)
    valid = (l11 > 0) & (l22 > 0)
    l11 = torch.where(valid, l11, torch.ones_like(l11)).clamp_min(MIN_DIAGONAL)
    l22 = torch.where(valid, l22, torch.ones_like(l22)).clamp_min(MIN_DIAGONAL)
    sigma_x = l11
    sigma_y = torch.sqrt(l21 * l21 + l22 * l22)
    base = base_positions(height // k, cols // k, k, dtype=chol.dtype, device=chol.device, rows=(first, stop))
    half = 0.5 / k

    def inside(position: torch.Tensor, sigma: torch.Tensor, count: int) -> torch.Tensor:
        lo, hi = (-half - position) / (sigma * math.sqrt(2.0)), (count / k - half - position) / (sigma * math.sqrt(2.0))
        return 0.5 * (torch.erf(hi) - torch.erf(lo))

    share = inside(base[:, 0], sigma_x, cols) * inside(base[:, 1], sigma_y, height)
    total = (k * k * 2.0 * math.pi * INSIDE_CUT) * l11 * l22 * share
    return torch.where(valid, total, torch.ones_like(total))


def interpolate_at_bases(lr: torch.Tensor, k: int, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """(B, N, 3): bicubic interpolation (torch's, a = -0.75, edges replicated) of the LR image (B, 3, h, w) at
    every lattice base (c/k, r/k) LR px (of lattice rows [rows) only, if given), in the image's dtype."""
    bsz, _, h, w = lr.shape
    base = base_positions(h, w, k, dtype=lr.dtype, device=lr.device, rows=rows)
    grid = torch.stack([base[:, 0] / w * 2 - 1, base[:, 1] / h * 2 - 1], -1).view(1, 1, -1, 2)
    values = F.grid_sample(lr, grid.expand(bsz, -1, -1, -1), mode="bicubic", padding_mode="border", align_corners=False)
    return values.view(bsz, 3, -1).transpose(1, 2)


def anchor_colors(lr: torch.Tensor, chol: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N, 3) colours U(base) / S that render the LR's interpolation (chol (B, N, 3) in LR px), at least in
    float32 (under autocast the heads may run in float16)."""
    dtype = torch.promote_types(torch.promote_types(lr.dtype, chol.dtype), torch.float32)
    lr, chol = lr.to(dtype), chol.to(dtype)
    lattice = (k * lr.shape[-2], k * lr.shape[-1])
    step = max(1, BAND_GAUSSIANS // lattice[1])
    bands = []
    for first in range(0, lattice[0], step):
        rows = (first, min(lattice[0], first + step))
        part = chol[:, rows[0] * lattice[1] : rows[1] * lattice[1]]
        bands.append(interpolate_at_bases(lr, k, rows) / coverage(part, k, lattice, rows).unsqueeze(-1))
    return bands[0] if len(bands) == 1 else torch.cat(bands, dim=1)
