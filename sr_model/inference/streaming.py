"""Upscale an image whose field is never whole: encode a row of tiles, render every output row it completes, drop
the field rows no later output row can see.

A Gaussian reaches at most `reach_bound` LR px from its lattice row in y (its drift is under one LR px and a
dictionary mix is no wider than the widest entry of the dictionary). So once the tiles down to LR row b are
encoded, every output row whose sample y lies at least that far above b sees only Gaussians already encoded, and
field rows that far above the next output row to render are seen by none. The window of field rows in between is
rendered with `render(..., y_origin=...)`, which gives the whole field's pixels bit for bit (tests/
test_render_backends.py), so a streamed output equals a render of the stitched field.

Memory: one row of tiles and the window, instead of the whole field (48 M Gaussians, 1.5 GiB, for a 12 MP photo);
`plan_encode(..., stream_rows=window_rows(model))` counts it so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gaussian_field import GaussianField, render
from gaussian_field.band_writer import BAND_BYTES, BandedImage, band_height
from gaussian_field.lattice import CUT_MAHALANOBIS_SQ
from sr_model.inference.encode import EncodePlan, stitch_tiles
from sr_model.inference.tiling import Tile


def reach_bound(model: nn.Module) -> float | None:
    """LR px in y that any Gaussian this model encodes can reach from its lattice base, or None when no bound holds
    (the free covariance ablation, whose widths are unbounded).

    The drift is tanh-bounded below one LR px (zero for fixed centres). A mixed Cholesky triplet is a convex
    combination of dictionary entries, and the 1/255 ellipse's half height sqrt(T (l21^2 + l22^2)) is a convex
    function of the triplet, so no mix is taller than the tallest entry.
    """
    dictionary = getattr(model, "dictionary", None)
    if dictionary is None:
        return None
    kernels = dictionary.double() / float(model.dictionary_scale)
    height = math.sqrt(CUT_MAHALANOBIS_SQ) * float(torch.sqrt(kernels[:, 1] ** 2 + kernels[:, 2] ** 2).max())
    drift = 1.0 if getattr(model, "offset_head", None) is not None else 0.0
    return drift + height


def window_rows(model: nn.Module) -> int | None:
    """LR rows a streamed window holds besides one row of tiles (`plan_encode`'s `stream_rows`), or None when the
    model cannot be streamed."""
    reach = reach_bound(model)
    return None if reach is None else 2 * math.ceil(reach) + 2


@dataclass
class StreamedOutput:
    """One output of a streamed upscale: its file (entered), geometry, and the next row to render."""

    image: BandedImage
    scale: tuple[float, float]
    done: int = 0

    def rows_ready(self, encoded: int, reach: float, complete: bool) -> int:
        """The row up to which every sample sees only Gaussians of LR rows < `encoded`."""
        if complete:
            return self.image.height
        ready = math.floor((encoded - reach) * self.scale[0] - 0.5) + 1
        return max(self.done, min(self.image.height, ready))

    def first_row_seen(self, reach: float) -> int:
        """The first LR row a Gaussian must lie on to reach this output's next row."""
        if self.done >= self.image.height:
            return 2**62
        return math.floor((self.done + 0.5) / self.scale[0] - reach) - 1


def tile_rows(tiles: Sequence[Tile]) -> list[list[Tile]]:
    """The plan's tiles (row-major) grouped by their core rows."""
    rows: dict[tuple[int, int], list[Tile]] = {}
    for tile in tiles:
        rows.setdefault((tile.core[0], tile.core[2]), []).append(tile)
    return list(rows.values())


def stream_to_files(
    model: nn.Module,
    lr: torch.Tensor,
    plan: EncodePlan,
    outputs: Sequence[StreamedOutput],
    backend: str = "auto",
    progress: Callable[[Iterable], Iterable] | None = None,
    band_bytes: int = BAND_BYTES,
) -> float:
    """Encode `lr` (1, 3, h, w) row of tiles by row of tiles and fill every output; returns the encode seconds."""
    with torch.no_grad():
        return _stream(model, lr, plan, outputs, backend, progress, band_bytes)


def _stream(
    model: nn.Module,
    lr: torch.Tensor,
    plan: EncodePlan,
    outputs: Sequence[StreamedOutput],
    backend: str,
    progress: Callable[[Iterable], Iterable] | None,
    band_bytes: int,
) -> float:
    reach = reach_bound(model)
    if reach is None:
        raise ValueError("this model's Gaussians have no bounded reach (free covariance): its field cannot be streamed")
    height = plan.height
    encode_seconds = 0.0
    window: GaussianField | None = None  # LR rows [origin, encoded) of the field, means relative to `origin`
    origin = 0
    groups = tile_rows(plan.tiles)
    for group in progress(groups) if progress is not None else groups:
        start = time.perf_counter()
        top, bottom = group[0].core[0], group[0].core[2]
        window = stitch_tiles(model, lr, group, (top, bottom), origin, window)
        _sync(lr.device)
        encode_seconds += time.perf_counter() - start
        for output in outputs:
            ready = output.rows_ready(bottom, reach, bottom == height)
            _render_rows(window, origin, output, ready, backend, band_bytes)
        keep = min([bottom, *(output.first_row_seen(reach) for output in outputs)])
        if keep > origin:
            window = window.window(keep - origin, window.h) if keep < bottom else None
            origin = keep if window is not None else bottom
    return encode_seconds


def _render_rows(
    window: GaussianField, origin: int, output: StreamedOutput, stop: int, backend: str, band_bytes: int
) -> None:
    size = (output.image.height, output.image.width)
    step = band_height(output.image.width, window.means.element_size(), band_bytes)
    with torch.no_grad():
        for first in range(output.done, stop, step):
            last = min(stop, first + step)
            start = time.perf_counter()
            pixels = render(window, size=size, scale=output.scale, rows=(first, last), backend=backend, y_origin=origin)
            pixels = pixels[0].cpu()  # waits for the device
            output.image.render_seconds += time.perf_counter() - start
            output.image.put(first, pixels)
    output.done = max(output.done, stop)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
