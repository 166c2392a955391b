"""MATLAB-compatible bicubic `imresize` in torch: how the SR literature makes LR images and the bicubic baseline.

Follows MATLAB's `imresize(..., 'bicubic')` as BasicSR's `matlab_functions.imresize` reimplements it (pinned by
tests/golden/matlab_imresize.npz): cubic kernel with a = -0.5; for a downscale (scale < 1) with antialiasing the
kernel is stretched to width 4/scale with weights scale * cubic(scale * x); output pixel x (1-based) reads input
coordinate u = x/scale + 0.5 * (1 - 1/scale); each row of weights is normalised to sum 1; the first/last weight
column is dropped when it holds a zero (BasicSR's rule; they are all-zero in exact arithmetic); borders are
padded symmetrically, edge pixel included (..., 1, 0 | 0, 1, ...); the height pass runs first, then the width.

Unlike the reference loops this is vectorised: one gather-and-multiply per kernel tap over every output row at
once (the width pass runs on the transposed image, so each gather copies whole rows), on any leading batch
dimensions, in float32 or float64 (weights are always computed in float64). Output values are not clipped (a
bicubic overshoot can leave [0, 1]), as MATLAB's for floating-point input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic'); zero for |x| > 2."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1).to(x.dtype)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)).to(x.dtype)
    return near + far


def _mirror(index: torch.Tensor, length: int) -> torch.Tensor:
    """Fold indices outside [0, length) back with edge-including symmetric padding (repeats for tiny inputs)."""
    period = 2 * length
    index = torch.remainder(index, period)
    return torch.where(index >= length, period - 1 - index, index)


def resize_weights(
    in_length: int, out_length: int, scale: float, antialiasing: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, indices), both (out_length, taps): output i = sum_t weights[i, t] * input[indices[i, t]].

    Indices already point into the unpadded input (symmetric padding folded in). Computed in float64.
    """
    if in_length < 1 or out_length < 1:
        raise ValueError(f"imresize needs positive lengths, got input {in_length} and output {out_length}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"imresize scale must be a positive finite number, got {scale!r}")
    kernel_width = 4.0
    stretch = scale < 1 and antialiasing
    if stretch:
        kernel_width = kernel_width / scale
    x = torch.arange(1, out_length + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    distance = u[:, None] - indices
    weights = scale * cubic(distance * scale) if stretch else cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    zeros_per_column = (weights == 0).sum(dim=0)
    keep = torch.ones(taps, dtype=torch.bool)
    if zeros_per_column[0] != 0:
        keep[0] = False
    if zeros_per_column[-1] != 0:
        keep[-1] = False
    weights, indices = weights[:, keep], indices[:, keep]
    # BasicSR indexes 1-based positions into the padded image: position p (1-based) is input p - 1 (0-based).
    return weights.contiguous(), _mirror(indices.long() - 1, in_length)


def _resize_rows(image: torch.Tensor, out_length: int, scale: float, antialiasing: bool) -> torch.Tensor:
    """Resize dimension -2: each tap gathers whole contiguous rows (fast), weighted and accumulated in place."""
    weights, indices = resize_weights(image.shape[-2], out_length, scale, antialiasing)
    weights = weights.to(device=image.device, dtype=image.dtype)
    indices = indices.to(image.device)
    out = image.new_zeros((*image.shape[:-2], out_length, image.shape[-1]))
    for t in range(weights.shape[1]):
        out.addcmul_(image.index_select(-2, indices[:, t]), weights[:, t, None])
    return out


def _pair(value, what: str) -> tuple:
    if isinstance(value, (int, float)):
        return value, value
    value = tuple(value)
    if len(value) != 2:
        raise ValueError(f"{what} must be one number or a pair (height, width), got {value!r}")
    return value


def output_size(in_size: Sequence[int], scale: float | Sequence[float]) -> tuple[int, int]:
    """MATLAB's output size for a scale: ceil(in * scale) per axis."""
    s_h, s_w = _pair(scale, "scale")
    return math.ceil(in_size[0] * s_h), math.ceil(in_size[1] * s_w)


def imresize(
    image: torch.Tensor,
    scale: float | Sequence[float] | None = None,
    size: Sequence[int] | None = None,
    antialiasing: bool = True,
) -> torch.Tensor:
    """Resize the last two dimensions (H, W) of a float tensor (..., H, W) MATLAB-style (bicubic).

    scale (s or (s_h, s_w)) sets the kernel and, unless `size` is given, the output size ceil(in * scale).
    size (H_out, W_out) alone implies scale = size / in per axis, as MATLAB's 'OutputSize'. Give both to fix
    the size exactly while keeping the nominal scale (e.g. 1/4 for a mod-cropped HR image).
    """
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"imresize takes a torch tensor (..., H, W), got {type(image).__name__}")
    if image.dim() < 2:
        raise ValueError(f"imresize needs at least 2 dimensions (..., H, W), got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"imresize needs a floating-point tensor, got {image.dtype}; convert (e.g. x.double()/255)")
    in_h, in_w = image.shape[-2:]
    if scale is None and size is None:
        raise ValueError("imresize needs a scale or an output size")
    if size is not None:
        out_h, out_w = _pair(size, "size")
        if int(out_h) != out_h or int(out_w) != out_w or out_h < 1 or out_w < 1:
            raise ValueError(f"output size must be two positive integers (H, W), got {tuple(_pair(size, 'size'))}")
        out_h, out_w = int(out_h), int(out_w)
    if scale is None:
        s_h, s_w = out_h / in_h, out_w / in_w
    else:
        s_h, s_w = (float(s) for s in _pair(scale, "scale"))
        for s in (s_h, s_w):
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"imresize scale must be a positive finite number, got {scale!r}")
        if size is None:
            out_h, out_w = output_size((in_h, in_w), (s_h, s_w))
    out = _resize_rows(image, out_h, s_h, antialiasing)
    out = _resize_rows(out.transpose(-1, -2).contiguous(), out_w, s_w, antialiasing)  # width pass as rows
    return out.transpose(-1, -2).contiguous()
