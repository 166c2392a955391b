"""The GPU renderer ("triton"): Triton kernels for CUDA tensors, forward and backward.

Registers itself with `gaussian_field.render` on import, without importing triton (a CPU-only process pays
nothing); the kernels (`_triton_kernels`) are imported the first time a CUDA field asks for this backend. With
TRITON_INTERPRET=1 set before triton is first imported, the same kernels run on CPU tensors through Triton's
interpreter: that is how the tests check them without a GPU. It agrees with `torch_reference` as the CPU backend
does (same sample points, neighbourhood, cut decisions and summation order; exp() differs in the last bits).
A forward render is four launches and no host synchronisation: zero the reach maxima, reduce them over the
field, render, and the output allocation. The backward does not synchronise either: the neighbourhood, the runs of
pixels per lattice row/column and the longest run stay on the device, and the kernel reads its loop bounds there,
so a fitting loop can queue step after step.
"""

from __future__ import annotations

import math
import os
import struct

import torch

from gaussian_field import torch_reference
from gaussian_field.field import GaussianField
from gaussian_field.lattice import CUT_MAHALANOBIS_SQ, REACH_GROWTH, REACH_PAD
from gaussian_field.render import Backend, register_backend

#: Output tile of one forward program (rows x cols) and its warps; the backward's Gaussians per program.
#: 2x64 with 2 warps was the fastest of the shapes tried at x4, 256x256 -> 1024x1024 (compare them with
#: `benchmarks/render_speed.py --triton-tiles ...`). See FAST_FORWARD below.
TILE_H = 2
TILE_W = 64
FORWARD_WARPS = 2
#: The forward's FAST variant (reciprocals, exact divisions only near the cut; same decisions): slower than the
#: exact forward at every tile tried on a GPU, so off.
FAST_FORWARD = False
#: Under the interpreter every program and loop step costs Python time, so one big tile does the whole window.
INTERPRETER_TILE = (64, 64, 4)
BACKWARD_BLOCK = 128
BACKWARD_WARPS = 4
_REACH_BLOCK = 1024

_kernels = None
_import_error: Exception | None = None


def _load_kernels():
    """The kernel module, or None when triton cannot be imported here."""
    global _kernels, _import_error
    if _kernels is None and _import_error is None:
        try:
            from gaussian_field import _triton_kernels

            _kernels = _triton_kernels
        except Exception as err:  # triton missing or broken: the backend is simply unavailable
            _import_error = err
    return _kernels


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def is_available(device: str | torch.device) -> bool:
    """CUDA tensors when triton imports; CPU tensors only under TRITON_INTERPRET=1 (tests)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and _load_kernels() is not None
    if device.type == "cpu" and interpreting():
        return _load_kernels() is not None
    return False


def _bits(value: float) -> int:
    """The int64 bit pattern of a float64 (Triton passes Python floats as float32)."""
    return struct.unpack("<q", struct.pack("<d", float(value)))[0]


def _launch_options(num_warps: int) -> dict:
    return {} if interpreting() else {"num_warps": num_warps, "enable_fp_fusion": False}


def reach_maxima(field: GaussianField, means: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """(4,) int64 on the device: float64 bit patterns of max drift x, y and max extent x, y."""
    kernels = _load_kernels()
    out = torch.zeros(4, dtype=torch.int64, device=means.device)
    total = means.shape[0] * means.shape[1]
    grid = (triton_cdiv(total, _REACH_BLOCK),)
    kernels.reach_kernel[grid](
        means,
        chol,
        out,
        total,
        means.shape[1],
        field.k * field.w,
        field.k,
        _bits(math.sqrt(CUT_MAHALANOBIS_SQ)),
        BLOCK=_REACH_BLOCK,
        **_launch_options(4),
    )
    return out


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def forward(
    field: GaussianField,
    means,
    chol,
    colors,
    scale_hw,
    width: int,
    row_start: int,
    row_stop: int,
    tile: tuple[int, int, int] | None = None,
    fast: bool | None = None,
    y_origin: int = 0,
) -> torch.Tensor:
    """(B, 3, rows, W) by the forward kernel; `tile` = (rows, cols, warps) and `fast` (the kernel's FAST
    variant) override the defaults, for benchmarks."""
    kernels = _load_kernels()
    tile_h, tile_w, warps = tile or (INTERPRETER_TILE if interpreting() else (TILE_H, TILE_W, FORWARD_WARPS))
    fast = FAST_FORWARD if fast is None else fast
    s_h, s_w = scale_hw
    rows = row_stop - row_start
    out = torch.empty(field.batch_size, 3, rows, width, dtype=means.dtype, device=means.device)
    if rows == 0 or width == 0:
        return out
    reach = reach_maxima(field, means, chol)
    grid = (triton_cdiv(width, tile_w), triton_cdiv(rows, tile_h), field.batch_size)
    kernels.forward_kernel[grid](
        means,
        chol,
        colors,
        reach,
        out,
        means.shape[1],
        field.k * field.h,
        field.k * field.w,
        field.k,
        rows,
        width,
        row_start,
        y_origin,
        _bits(s_h),
        _bits(s_w),
        _bits(CUT_MAHALANOBIS_SQ),
        _bits(REACH_GROWTH),
        _bits(REACH_PAD),
        BH=tile_h,
        BW=tile_w,
        F64=means.dtype == torch.float64,
        FAST=fast,
        **_launch_options(warps),
    )
    return out


def device_reach(field: GaussianField, means: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """(4,) int64 on the device: (dy_lo, dy_hi, dx_lo, dx_hi), computed from the reach maxima with the float64
    operations of lattice.neighbourhood_reach, without reading anything back to the host."""
    maxima = reach_maxima(field, means, chol).view(torch.float64)
    reach = maxima[0:2] + maxima[2:4]  # (x, y)
    reach = reach * REACH_GROWTH
    reach = reach + REACH_PAD
    scaled = reach * float(field.k)
    rx, ry = scaled[0], scaled[1]
    return torch.stack([-torch.floor(ry), torch.ceil(ry), -torch.floor(rx), torch.ceil(rx)]).to(torch.int64)


def _runs(
    coords: torch.Tensor, k: int, count: int, lo: torch.Tensor | int, hi: torch.Tensor | int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per lattice index g, the run [start, stop) of samples whose neighbourhood [cell + lo, cell + hi] holds g."""
    cells = torch.floor(coords.double() * k).long()
    g = torch.arange(count, dtype=torch.int64, device=coords.device)
    start = torch.searchsorted(cells, g - hi, right=False)
    stop = torch.searchsorted(cells, g - lo, right=True)
    return start.to(torch.int32).contiguous(), stop.to(torch.int32).contiguous()


def backward(
    field: GaussianField,
    means,
    chol,
    colors,
    scale_hw,
    width: int,
    row_start: int,
    row_stop: int,
    grad_out: torch.Tensor,
    y_origin: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    kernels = _load_kernels()
    s_h, s_w = scale_hw
    rows = row_stop - row_start
    dtype, device, k = means.dtype, means.device, field.k
    grads = torch.zeros_like(means), torch.zeros_like(chol), torch.zeros_like(colors)
    if rows == 0 or width == 0:
        return grads
    dy_lo, dy_hi, dx_lo, dx_hi = device_reach(field, means, chol).unbind()
    ys = torch_reference.sample_axis(rows, row_start, s_h, dtype, device) - y_origin
    xs = torch_reference.sample_axis(width, 0, s_w, dtype, device)
    rs, re = _runs(ys, k, k * field.h, dy_lo, dy_hi)
    cs, ce = _runs(xs, k, k * field.w, dx_lo, dx_hi)
    longest = torch.stack([(re - rs).max(), (ce - cs).max()]).clamp(min=0).to(torch.int32).contiguous()
    grid = (triton_cdiv(means.shape[1], BACKWARD_BLOCK), field.batch_size)
    kernels.backward_kernel[grid](
        means,
        chol,
        colors,
        grad_out.to(dtype).contiguous(),
        rs,
        re,
        cs,
        ce,
        *grads,
        longest,
        means.shape[1],
        k * field.w,
        rows,
        width,
        row_start,
        y_origin,
        _bits(s_h),
        _bits(s_w),
        _bits(CUT_MAHALANOBIS_SQ),
        BLOCK=BACKWARD_BLOCK,
        F64=dtype == torch.float64,
        **_launch_options(BACKWARD_WARPS),
    )
    return grads


class _RenderFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, chol, colors, field, scale_hw, width, row_start, row_stop, y_origin):
        ctx.save_for_backward(means, chol, colors)
        ctx.geometry = (field, scale_hw, width, row_start, row_stop, y_origin)
        return forward(field, means, chol, colors, scale_hw, width, row_start, row_stop, y_origin=y_origin)

    @staticmethod
    def backward(ctx, grad_out):
        means, chol, colors = ctx.saved_tensors
        field, scale_hw, width, row_start, row_stop, y_origin = ctx.geometry
        grads = backward(field, means, chol, colors, scale_hw, width, row_start, row_stop, grad_out, y_origin)
        return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad[:3])) + (None,) * 6


def render_window(
    field: GaussianField,
    scale_hw: tuple[float, float],
    width: int,
    row_start: int,
    row_stop: int,
    y_origin: int = 0,
) -> torch.Tensor:
    """Rows [row_start, row_stop) of the W-wide render at (s_h, s_w), as (B, 3, rows, W); see render.Backend."""
    if field.dtype not in (torch.float32, torch.float64):
        return torch_reference.render_window(field, scale_hw, width, row_start, row_stop, y_origin)
    means, chol, colors = (t.contiguous() for t in (field.means, field.chol, field.colors))
    if torch.is_grad_enabled() and any(t.requires_grad for t in (means, chol, colors)):
        return _RenderFunction.apply(means, chol, colors, field, scale_hw, width, row_start, row_stop, y_origin)
    detached = means.detach(), chol.detach(), colors.detach()
    return forward(field, *detached, scale_hw, width, row_start, row_stop, y_origin=y_origin)


register_backend(Backend("triton", render_window, is_available))
