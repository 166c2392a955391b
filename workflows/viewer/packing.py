"""A field as the compact little-endian binary the page uploads to the GPU.

Layout of `/field.bin`: offsets from the lattice base (N, 2), Cholesky triplets (N, 3), colours (N, 3), each
array contiguous and in the same dtype. Offsets rather than means travel, because they are bounded (about one LR
pixel) and so keep float16's relative precision at any position in a large image. float16 is used only when
rendering the float16-rounded field stays within one 8-bit level of the exact field at every checked scale;
otherwise float32. The page rebuilds means = base + offset in float32, exactly as `lattice.base_positions`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gaussian_field import GaussianField, render
from gaussian_field.lattice import base_positions

#: Scales at which float16 is checked against the exact field (a non-integer one samples off the lattice).
CHECK_SCALES = (1.7, 3.3)
#: A float16 field may differ from the exact field's render by less than this (one 8-bit level).
FLOAT16_TOLERANCE = 1.0 / 255.0
#: Above this many Gaussians float16 is checked on a centre window only, to keep `p2g view` starting quickly.
CHECK_WINDOW = 128


@dataclass(frozen=True)
class PackedField:
    """The bytes of `/field.bin` and what the page needs to read them."""

    data: bytes
    dtype: str  # "float16" or "float32"
    h: int
    w: int
    k: int
    float16_error: float  # max |render(float16 field) - render(field)| over the checked scales

    def header(self) -> dict:
        n = self.h * self.w * self.k * self.k
        return {
            "h": self.h,
            "w": self.w,
            "k": self.k,
            "count": n,
            "dtype": self.dtype,
            "arrays": ["offsets", "chol", "colors"],
            "float16_error": self.float16_error,
        }


def field_arrays(field: GaussianField) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, chol, colours) of a one-image field as float32 numpy arrays."""
    if field.batch_size != 1:
        raise ValueError(f"the viewer shows one field, this one holds {field.batch_size}")
    detached = field.detach().to("cpu", torch.float32)
    return tuple(np.ascontiguousarray(t[0].numpy()) for t in (detached.offsets(), detached.chol, detached.colors))


def centre_window(field: GaussianField, size: int = CHECK_WINDOW) -> GaussianField:
    """The sub-field of at most size x size LR pixels at the centre (lattice cells keep their Gaussians)."""
    if field.h <= size and field.w <= size:
        return field
    hh, ww = min(field.h, size), min(field.w, size)
    top, left = (field.h - hh) // 2, (field.w - ww) // 2
    k = field.k
    rows = torch.arange(k * top, k * (top + hh))
    cols = torch.arange(k * left, k * (left + ww))
    idx = (rows.view(-1, 1) * (k * field.w) + cols.view(1, -1)).reshape(-1)
    shift = torch.tensor([left, top], dtype=field.dtype, device=field.device)
    return GaussianField(
        field.means[:, idx] - shift, field.chol[:, idx], field.colors[:, idx], hh, ww, k, validate=False
    )


def float16_render_error(field: GaussianField, scales=CHECK_SCALES) -> float:
    """Largest |render(field rounded to float16) - render(field)| over `scales` (offsets rounded, not means)."""
    exact = centre_window(field.detach().to("cpu", torch.float32))
    base = exact.base_positions()
    rounded = GaussianField(
        (base + exact.offsets().half().float()),
        exact.chol.half().float(),
        exact.colors.half().float(),
        exact.h,
        exact.w,
        exact.k,
        validate=False,
    )
    worst = 0.0
    with torch.no_grad():
        for scale in scales:
            diff = (render(rounded, scale=scale) - render(exact, scale=scale)).abs().max()
            worst = max(worst, float(diff))
    return worst


def pack_field(field: GaussianField, allow_float16: bool = True) -> PackedField:
    """The field as bytes: float16 when that keeps the render within one 8-bit level, else float32."""
    offsets, chol, colors = field_arrays(field)
    error = float16_render_error(field) if allow_float16 else float("inf")
    dtype = np.float16 if error < FLOAT16_TOLERANCE else np.float32
    if dtype == np.float16 and not all(np.isfinite(a.astype(np.float16)).all() for a in (offsets, chol, colors)):
        dtype = np.float32  # a value beyond float16's range (65504)
    data = b"".join(a.astype(np.dtype(dtype).newbyteorder("<")).tobytes() for a in (offsets, chol, colors))
    return PackedField(data, np.dtype(dtype).name, field.h, field.w, field.k, error)


def unpack_field(packed: PackedField) -> GaussianField:
    """The field the page sees (float32), for tests and for checking what travelled."""
    n = packed.h * packed.w * packed.k * packed.k
    flat = np.frombuffer(packed.data, dtype=np.dtype(packed.dtype).newbyteorder("<")).astype(np.float32)
    if flat.size != n * 8:
        raise ValueError(f"packed field holds {flat.size} values, the lattice needs {n * 8}")
    offsets, chol, colors = (torch.from_numpy(a.copy()) for a in np.split(flat, [2 * n, 5 * n]))
    means = base_positions(packed.h, packed.w, packed.k, dtype=torch.float32) + offsets.view(n, 2)
    return GaussianField(means, chol.view(n, 3), colors.view(n, 3), packed.h, packed.w, packed.k)
