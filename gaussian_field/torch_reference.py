"""The reference renderer in plain torch: the documentation of the maths, exact and differentiable.

Every output pixel (r, c) samples the LR point ((c + 0.5) / s_w, (r + 0.5) / s_h) and sums
colour_n * exp(-0.5 * m_n) over the Gaussians of a fixed lattice neighbourhood, m_n being the squared
Mahalanobis distance, with terms of m_n > 2 ln 255 dropped (ARCHITECTURE.md). The neighbourhood comes from
`lattice.neighbourhood_reach`, so no Gaussian that reaches a pixel is ever left out; there is no sort and
no tile list. Work goes in bands of output rows, one neighbour offset at a time, so memory stays bounded
by the band whatever the output size.
"""

from __future__ import annotations

import torch

from gaussian_field.field import GaussianField
from gaussian_field.lattice import CUT_MAHALANOBIS_SQ, neighbourhood_reach

#: Working-set budget per band (bytes); the band height follows from it.
BAND_BYTES = 64 * 2**20
#: Temporaries of one (band x width) plane per neighbour step, counted generously.
_PLANES_PER_STEP = 24


def sample_axis(count: int, start: int, scale: float, dtype: torch.dtype, device) -> torch.Tensor:
    """LR coordinates (start + arange(count) + 0.5) / scale, computed in float64 then cast."""
    idx = torch.arange(start, start + count, dtype=torch.float64, device=device)
    return ((idx + 0.5) / scale).to(dtype)


def band_rows(batch: int, width: int, itemsize: int, budget: int = BAND_BYTES) -> int:
    """How many output rows one band may hold within `budget` bytes of temporaries."""
    per_row = max(1, batch * width * itemsize * _PLANES_PER_STEP)
    return max(1, budget // per_row)


def render_window(
    field: GaussianField,
    scale_hw: tuple[float, float],
    width: int,
    row_start: int,
    row_stop: int,
    y_origin: int = 0,
    band_bytes: int = BAND_BYTES,
) -> torch.Tensor:
    """Rows [row_start, row_stop) of the W-wide render at (s_h, s_w), as (B, 3, rows, W); the field covers LR rows
    from `y_origin` of the image (`render`)."""
    s_h, s_w = scale_hw
    bsz, dtype, device = field.batch_size, field.dtype, field.device
    reach = neighbourhood_reach(field.means, field.chol, field.h, field.w, field.k)
    xs = sample_axis(width, 0, s_w, dtype, device)
    bands = []
    step = band_rows(bsz, width, field.means.element_size(), band_bytes)
    for start in range(row_start, row_stop, step):
        stop = min(row_stop, start + step)
        ys = sample_axis(stop - start, start, s_h, dtype, device) - y_origin
        bands.append(_render_band(field, xs, ys, reach))
    if not bands:
        return torch.zeros(bsz, 3, 0, width, dtype=dtype, device=device)
    return torch.cat(bands, dim=2) if len(bands) > 1 else bands[0]


def _render_band(field: GaussianField, xs: torch.Tensor, ys: torch.Tensor, reach) -> torch.Tensor:
    k, kh, kw = field.k, field.k * field.h, field.k * field.w
    bsz, rows, cols = field.batch_size, ys.numel(), xs.numel()
    dy_lo, dy_hi, dx_lo, dx_hi = reach
    gy = torch.floor(ys.double() * k).long()
    gx = torch.floor(xs.double() * k).long()
    l11_all, l21_all, l22_all = field.chol.unbind(-1)
    out = torch.zeros(bsz, 3, rows * cols, dtype=field.dtype, device=field.device)
    px = xs.view(1, 1, cols)
    py = ys.view(1, rows, 1)
    for dy in range(dy_lo, dy_hi + 1):
        lat_r = gy + dy
        row_ok = (lat_r >= 0) & (lat_r < kh)
        if not bool(row_ok.any()):
            continue
        for dx in range(dx_lo, dx_hi + 1):
            lat_c = gx + dx
            col_ok = (lat_c >= 0) & (lat_c < kw)
            if not bool(col_ok.any()):
                continue
            idx = (lat_r.clamp(0, kh - 1).view(rows, 1) * kw + lat_c.clamp(0, kw - 1).view(1, cols)).reshape(-1)
            inside = (row_ok.view(rows, 1) & col_ok.view(1, cols)).reshape(1, -1)
            mean = field.means[:, idx]  # (B, P, 2)
            l11, l21, l22 = l11_all[:, idx], l21_all[:, idx], l22_all[:, idx]
            ok = (l11 > 0) & (l22 > 0) & inside
            l11 = torch.where(ok, l11, torch.ones_like(l11))
            l22 = torch.where(ok, l22, torch.ones_like(l22))
            ddx = (px - mean[..., 0].view(bsz, rows, cols)).reshape(bsz, -1)
            ddy = (py - mean[..., 1].view(bsz, rows, cols)).reshape(bsz, -1)
            z1 = ddx / l11
            z2 = (ddy - l21 * z1) / l22
            maha = z1 * z1 + z2 * z2
            keep = ok & (maha <= CUT_MAHALANOBIS_SQ)
            weight = torch.where(keep, torch.exp(-0.5 * maha), torch.zeros_like(maha))
            out = out + weight.unsqueeze(1) * field.colors[:, idx].transpose(1, 2)
    return out.view(bsz, 3, rows, cols)
