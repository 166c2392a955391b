"""The fast CPU renderer ("cpu"): numba kernels, multi-threaded, forward and backward.

Registers itself with `gaussian_field.render` on import. Its results equal `torch_reference` term by term (same
sample points, same neighbourhood, the cut decided as the reference decides it, same summation order), so only
the last bits of the weights differ. The kernels live in `_numba_kernels` and are compiled once and cached on
disk (numba cache=True; the first render in a fresh checkout compiles for a few seconds).

numba rather than a C++ extension: the same scanline loop written in C and built with gcc -O3 -march=native
was only slightly faster, which does not pay for a compiler at install time; numba ships as a wheel. Both
compilers left those short inner loops scalar. What then halved the float32 forward was the loop's shape, still
in numba: fixed 16-column chunks and a branch-free exp that LLVM vectorises (see `_numba_kernels`); a C++ build of
that shape has not been measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from gaussian_field import _numba_kernels, torch_reference
from gaussian_field.field import GaussianField
from gaussian_field.lattice import CUT_MAHALANOBIS_SQ, reach_bounds
from gaussian_field.render import Backend, register_backend

_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


@dataclass(frozen=True)
class Geometry:
    """Where the pixels of one render window sample the field, and which lattice rows/cols each one sees."""

    xs: np.ndarray  # (W,) sample x in LR pixels, in the field's dtype
    ys: np.ndarray  # (R,) sample y of the window's rows
    s_h: float
    s_w: float
    row0: float  # the window's first output row, less y_origin * s_h: a Gaussian's rows come from its local mean
    kw: int
    row_start: np.ndarray  # (k*h,) output rows [row_start[g], row_stop[g]) see lattice row g
    row_stop: np.ndarray
    col_start: np.ndarray  # (k*w,) output cols [col_start[g], col_stop[g]) see lattice col g
    col_stop: np.ndarray


def sample_axis(count: int, start: int, scale: float, np_dtype) -> np.ndarray:
    """`torch_reference.sample_axis` in numpy: (start + arange(count) + 0.5) / scale in float64, then cast."""
    return ((np.arange(start, start + count, dtype=np.float64) + 0.5) / scale).astype(np_dtype)


def _sees(coords: np.ndarray, k: int, count: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """For each lattice index g < count, the run of samples whose neighbourhood [cell + lo, cell + hi] holds g.

    cell = floor(k * coordinate) (as the reference computes it) is non-decreasing, so that run is contiguous:
    the samples with cell in [g - hi, g - lo].
    """
    cells = np.floor(coords.astype(np.float64) * k).astype(np.int64)
    g = np.arange(count, dtype=np.int64)
    return np.searchsorted(cells, g - hi, side="left"), np.searchsorted(cells, g - lo, side="right")


def geometry(
    field: GaussianField,
    scale_hw: tuple[float, float],
    width: int,
    row_start: int,
    row_stop: int,
    y_origin: int = 0,
) -> Geometry:
    """Sample points and neighbourhood runs of one render window, as `torch_reference` computes them."""
    s_h, s_w = scale_hw
    k = field.k
    np_dtype = _DTYPES[field.dtype]
    xs = sample_axis(width, 0, s_w, np_dtype)
    ys = sample_axis(row_stop - row_start, row_start, s_h, np_dtype) - np_dtype(y_origin)
    dy_lo, dy_hi, dx_lo, dx_hi = fast_reach(field)
    rs, re = _sees(ys, k, k * field.h, dy_lo, dy_hi)
    cs, ce = _sees(xs, k, k * field.w, dx_lo, dx_hi)
    row0 = float(row_start) - float(y_origin) * float(s_h)
    return Geometry(xs, ys, float(s_h), float(s_w), row0, k * field.w, rs, re, cs, ce)


def fast_reach(field: GaussianField) -> tuple[int, int, int, int]:
    """`lattice.neighbourhood_reach` in one compiled pass (same float64 operations, same result)."""
    k = field.k
    drift_x, drift_y, ext_x, ext_y = _numba_kernels.reach_maxima(
        _numpy(field.means), _numpy(field.chol), k, k * field.w, math.sqrt(CUT_MAHALANOBIS_SQ)
    )
    return reach_bounds(drift_x + ext_x, drift_y + ext_y, k)


def _cut(np_dtype):
    # The reference compares a dtype tensor with a Python float: torch does that in the tensor's dtype.
    return np_dtype(CUT_MAHALANOBIS_SQ)


def _band_rows(rows: int) -> int:
    """Rows per parallel job: small enough to balance the threads, large enough to amortise the lattice scan."""
    from numba import get_num_threads

    return max(1, min(16, math.ceil(rows / (8 * get_num_threads()))))


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


#: The leading arguments of every numba kernel, in order (`_kernel_args`).
KernelArgs = tuple[
    np.ndarray,  # means
    np.ndarray,  # chol
    np.ndarray,  # colors
    np.ndarray,  # xs
    np.ndarray,  # ys
    float,  # s_h
    float,  # s_w
    float,  # row0
    int,  # kw
    np.ndarray,  # row_start
    np.ndarray,  # row_stop
    np.ndarray,  # col_start
    np.ndarray,  # col_stop
    np.floating,  # the 1/255 cut, in the field's dtype
]


def _kernel_args(means: np.ndarray, chol: np.ndarray, colors: np.ndarray, geo: Geometry) -> KernelArgs:
    """The leading arguments every numba kernel takes: the field, the sample geometry and the 1/255 cut."""
    return (
        means,
        chol,
        colors,
        geo.xs,
        geo.ys,
        geo.s_h,
        geo.s_w,
        geo.row0,
        geo.kw,
        geo.row_start,
        geo.row_stop,
        geo.col_start,
        geo.col_stop,
        _cut(means.dtype.type),
    )


def forward_numpy(means: np.ndarray, chol: np.ndarray, colors: np.ndarray, geo: Geometry) -> np.ndarray:
    out = np.zeros((means.shape[0], 3, geo.ys.shape[0], geo.xs.shape[0]), dtype=means.dtype)
    args = _kernel_args(means, chol, colors, geo)
    if uses_vector_kernel(means.dtype, geo.xs.shape[0]):
        _numba_kernels.forward_f32(*args, _band_rows(geo.ys.shape[0]), out)
    else:
        _numba_kernels.forward(*args, bool(means.dtype == np.float32), _band_rows(geo.ys.shape[0]), out)
    return out


def uses_vector_kernel(dtype, width: int) -> bool:
    """float32 windows at least one chunk wide get the vectorised forward; float64 and narrow ones the scalar one."""
    cut_hi = float(_cut(np.float32)) * (1.0 + _numba_kernels._CUT_BAND)
    return dtype == np.float32 and width >= _numba_kernels.LANES and cut_hi <= _numba_kernels.EXP_M_MAX


def backward_numpy(means, chol, colors, geo: Geometry, grad_out: np.ndarray):
    grads = np.zeros_like(means), np.zeros_like(chol), np.zeros_like(colors)
    _numba_kernels.backward(
        *_kernel_args(means, chol, colors, geo),
        bool(means.dtype == np.float32),
        grad_out,
        *grads,
    )
    return grads


class _RenderFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, chol, colors, geo):
        arrays = _numpy(means), _numpy(chol), _numpy(colors)
        ctx.geo = geo
        ctx.save_for_backward(means, chol, colors)
        return torch.from_numpy(forward_numpy(*arrays, geo))

    @staticmethod
    def backward(ctx, grad_out):
        means, chol, colors = ctx.saved_tensors
        grads = backward_numpy(_numpy(means), _numpy(chol), _numpy(colors), ctx.geo, _numpy(grad_out.to(means.dtype)))
        wanted = ctx.needs_input_grad
        return tuple(torch.from_numpy(g) if need else None for g, need in zip(grads, wanted)) + (None,)


def render_window(
    field: GaussianField,
    scale_hw: tuple[float, float],
    width: int,
    row_start: int,
    row_stop: int,
    y_origin: int = 0,
) -> torch.Tensor:
    """Rows [row_start, row_stop) of the W-wide render at (s_h, s_w), as (B, 3, rows, W); see render.Backend."""
    if field.dtype not in _DTYPES:  # float16/bfloat16: the reference handles them
        return torch_reference.render_window(field, scale_hw, width, row_start, row_stop, y_origin)
    geo = geometry(field, scale_hw, width, row_start, row_stop, y_origin)
    if row_stop == row_start or width == 0:
        return torch.zeros(field.batch_size, 3, row_stop - row_start, width, dtype=field.dtype)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (field.means, field.chol, field.colors)):
        return _RenderFunction.apply(field.means, field.chol, field.colors, geo)
    return torch.from_numpy(forward_numpy(_numpy(field.means), _numpy(field.chol), _numpy(field.colors), geo))


register_backend(Backend("cpu", render_window, lambda device: torch.device(device).type == "cpu"))
