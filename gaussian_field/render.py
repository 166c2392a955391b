"""`render`: the one place that turns a field plus a scale or size into pixels, and picks the backend.

Callers never name a backend module: fast backends (CPU kernel, Triton) register here beside the torch
reference and `backend="auto"` picks the fastest available for the field's device.
"""

from __future__ import annotations

import importlib
import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from gaussian_field import torch_reference
from gaussian_field.backend_table import BACKENDS, backend_entry
from gaussian_field.field import GaussianField, _scale_pair

#: Default cap on one render's output tensor; override with P2G_MAX_RENDER_BYTES or `max_output_bytes`.
DEFAULT_MAX_OUTPUT_BYTES = 8 * 2**30

# A backend renders rows [row_start, row_stop) of a W-wide output sampled at (s_h, s_w): (B, 3, rows, W). The last
# argument, y_origin, is the LR row of the image where the field's first row lies (0 but for a window of a larger
# image, whose means are then relative to that row): every sample y is computed for the image, then y_origin is
# subtracted (exactly: an integer), so a window renders the numbers the whole field would.
RenderFn = Callable[[GaussianField, tuple[float, float], int, int, int, int], torch.Tensor]


@dataclass(frozen=True)
class Backend:
    """A loaded backend: its band renderer and where it runs; its priority and differentiability are its entry's
    in `gaussian_field.backend_table`, so that they are written once."""

    name: str
    render_window: RenderFn
    is_available: Callable[[torch.device], bool]

    @property
    def priority(self) -> int:
        """Higher wins under backend="auto" among the available ones."""
        return backend_entry(self.name).priority

    @property
    def differentiable(self) -> bool:
        return backend_entry(self.name).differentiable


_BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> None:
    """Add a backend (fast CPU or GPU kernels do this on import); its name must be in the backend table."""
    try:
        backend_entry(backend.name)
    except KeyError:
        raise ValueError(
            f"render backend {backend.name!r} is not in gaussian_field/backend_table.py; add its entry there"
        ) from None
    _BACKENDS[backend.name] = backend


register_backend(Backend("torch", torch_reference.render_window, lambda device: True))


def _load_optional_backends() -> None:
    """Import the module of every table entry not registered yet; one that cannot be imported (numba missing) is
    left out, as unknown."""
    for entry in BACKENDS:
        if entry.name not in _BACKENDS:
            try:
                importlib.import_module(entry.module)
            except ImportError:
                pass


def available_backends(device: str | torch.device = "cpu", differentiable: bool = False) -> list[str]:
    """Names of the backends that can render on `device`, fastest first."""
    _load_optional_backends()
    device = torch.device(device)
    usable = [b for b in _BACKENDS.values() if b.is_available(device) and (b.differentiable or not differentiable)]
    return [b.name for b in sorted(usable, key=lambda b: -b.priority)]


def _pick_backend(name: str, field: GaussianField) -> Backend:
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (field.means, field.chol, field.colors))
    if name == "auto":
        return _BACKENDS[available_backends(field.device, differentiable=needs_grad)[0]]
    _load_optional_backends()
    if name not in _BACKENDS:
        raise ValueError(f"unknown render backend {name!r}; choose one of: auto, {', '.join(sorted(_BACKENDS))}")
    backend = _BACKENDS[name]
    if not backend.is_available(field.device):
        raise ValueError(f"render backend {name!r} is not available for {field.device} tensors; use backend='auto'")
    return backend


def _check_scale(value: float, what: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return value


#: No output side may exceed this (TIFF's limit, the largest of any format written here): a larger scale is refused
#: before any size arithmetic overflows.
MAX_OUTPUT_SIDE = 2**32 - 1


def output_size_for(lr_size: Sequence[int], scale: float | Sequence[float]) -> tuple[int, int]:
    """Output (H, W) for an LR (h, w) at scale s or (s_h, s_w): round(h * s_h), as the official model."""
    s_h, s_w = (_check_scale(s, "scale") for s in _scale_pair(scale))
    h, w = lr_size
    for side, s in ((h, s_h), (w, s_w)):
        if not side * s <= MAX_OUTPUT_SIDE:  # also catches an infinite product
            raise ValueError(
                f"scale {s:g} makes {side} px into {side * s:.3g} px, over the {MAX_OUTPUT_SIDE} px a side any output "
                "format holds; ask for a smaller scale"
            )
    return max(1, round(h * s_h)), max(1, round(w * s_w))


def resolve_geometry(
    lr_size: Sequence[int], size: Sequence[int] | None, scale: float | Sequence[float] | None
) -> tuple[tuple[float, float], tuple[int, int]]:
    """((s_h, s_w), (H, W)) from a scale, a size, or both (a size with an explicit sampling scale)."""
    out_size = None
    if size is not None:
        if len(size) != 2:
            raise ValueError(f"size must be (H, W), got {size!r}")
        for v in size:
            if int(v) != v or v <= 0:
                raise ValueError(f"output size must be positive integers (H, W), got {tuple(size)!r}")
        out_size = (int(size[0]), int(size[1]))
    if scale is None:
        if out_size is None:
            raise ValueError("give an output size=(H, W) or a scale")
        h, w = lr_size
        return (out_size[0] / h, out_size[1] / w), out_size
    s_h, s_w = (_check_scale(s, "scale") for s in _scale_pair(scale))
    return (s_h, s_w), out_size if out_size is not None else output_size_for(lr_size, (s_h, s_w))


def render(
    field: GaussianField,
    size: Sequence[int] | None = None,
    scale: float | Sequence[float] | None = None,
    *,
    backend: str = "auto",
    rows: tuple[int, int] | None = None,
    max_output_bytes: int | None = None,
    y_origin: int = 0,
) -> torch.Tensor:
    """Render the field to (B, 3, H, W).

    `scale` is s or (s_h, s_w); `size` is (H, W), which alone implies scale (H/h, W/w). HR pixel (r, c) samples
    LR point ((c + .5) / s_w, (r + .5) / s_h). `rows=(r0, r1)` renders only that band of output rows, for
    outputs written to disk piece by piece. The output's memory is estimated first and refused over the limit.

    `y_origin`: the field is a window of LR rows [y_origin, y_origin + h) of a larger image (its means relative to
    row y_origin); `size` and `scale` are then the whole image's, and both must be given.
    """
    if not isinstance(field, GaussianField):
        raise ValueError(f"render needs a GaussianField, got {type(field).__name__}")
    if isinstance(size, numbers.Real) or (isinstance(size, torch.Tensor) and size.ndim == 0):
        raise ValueError(
            f"size is (H, W), got the number {size!r}: for a scale, pass it by name, render(field, scale={size!r})"
        )
    if int(y_origin) != y_origin or y_origin < 0:
        raise ValueError(f"y_origin must be a non-negative whole number of LR rows, got {y_origin!r}")
    if y_origin and (size is None or scale is None):
        raise ValueError("a window of an image (y_origin > 0) renders at the image's size and scale: give both")
    (s_h, s_w), (height, width) = resolve_geometry(field.lr_size, size, scale)
    row_start, row_stop = (0, height) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= row_start <= row_stop <= height:
        raise ValueError(f"rows {rows!r} must lie within 0..{height}")
    limit = (
        max_output_bytes
        if max_output_bytes is not None
        else int(os.environ.get("P2G_MAX_RENDER_BYTES", DEFAULT_MAX_OUTPUT_BYTES))
    )
    needed = field.batch_size * 3 * (row_stop - row_start) * width * field.means.element_size()
    if needed > limit:
        raise ValueError(
            f"output {field.batch_size}x3x{row_stop - row_start}x{width} needs {needed / 2**30:.2f} GiB, over the "
            f"render limit of {limit / 2**30:.2f} GiB; render a smaller size or in row bands (rows=...)"
        )
    chosen = _pick_backend(backend, field)
    return chosen.render_window(field, (s_h, s_w), width, row_start, row_stop, int(y_origin))
