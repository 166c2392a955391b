"""Where to cut an LR image into encoder tiles, and how far an encoder sees (so the cut changes nothing).

A tile has a core (the LR pixels whose Gaussians it contributes; the cores partition the image) and an
outer box (what the encoder reads): the core grown by `context` LR pixels on each side, clipped to the image.
A Gaussian of LR pixel (i, j) depends only on the input pixels within its encoder's receptive radius R
(Chebyshev distance, LR px), so when context >= R every core Gaussian equals the untiled one, and with a
smaller context every Gaussian at least R pixels from its outer box's inner edges still does (the
"margin" of the stitched field). Encoders with window attention also need the cuts aligned to the window grid
(`tile_alignment`): then every window of a tile is a window of the whole image.

`receptive_radius` propagates a single-pixel change through the encoder's layer sequence in one dimension
(convolutions widen it by their radius; a window-attention layer spreads it over every window it touches,
so shifted windows add half a window per layer), which is the exact, tight reach for the CNN and an upper
bound for the transformers. HAT's channel attention pools over the whole input, so HAT has no finite
radius: its radius counts only the local layers and `has_global_context` says so. Measured values per
preset: benchmarks/tiling_margin.py and docs/benchmarks.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sr_model.networks.encoder_specs import Op, encoder_spec
from sr_model.networks.presets import ModelConfig


@dataclass(frozen=True)
class Tile:
    """One encoder tile: boxes (top, left, bottom, right), half-open, in LR pixels of the whole image."""

    core: tuple[int, int, int, int]
    outer: tuple[int, int, int, int]

    @property
    def outer_size(self) -> tuple[int, int]:
        top, left, bottom, right = self.outer
        return bottom - top, right - left


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _axis_spans(length: int, tile: int, context: int) -> list[tuple[int, int, int, int]]:
    spans = []
    for start in range(0, length, tile):
        stop = min(length, start + tile)
        spans.append((start, stop, max(0, start - context), min(length, stop + context)))
    return spans


def plan_tiles(height: int, width: int, tile: int, context: int, align: int = 1) -> list[Tile]:
    """Row-major tiles of `tile` x `tile` cores (the last row/column smaller) with `context` pixels around.

    `tile` and `context` are rounded up to multiples of `align`, so every core and outer box starts on the
    encoder's window grid; a tile at least as large as the image gives one tile (the untiled encode).
    """
    if height < 1 or width < 1:
        raise ValueError(f"cannot tile an empty image of {height}x{width} px")
    if int(tile) != tile or tile < 1:
        raise ValueError(f"tile size must be a positive number of LR pixels, got {tile!r}")
    if int(context) != context or context < 0:
        raise ValueError(f"tile context must be a non-negative number of LR pixels, got {context!r}")
    tile, context = _round_up(int(tile), align), _round_up(int(context), align)
    rows, cols = _axis_spans(height, tile, context), _axis_spans(width, tile, context)
    return [
        Tile((r0, c0, r1, c1), (o_r0, o_c0, o_r1, o_c1)) for r0, r1, o_r0, o_r1 in rows for c0, c1, o_c0, o_c1 in cols
    ]


def tile_alignment(config: ModelConfig) -> int:
    """Tile cuts must be multiples of this (the attention window; 1 for the CNN)."""
    return int(config.window_size) if encoder_spec(config.encoder).window_aligned else 1


def has_global_context(config: ModelConfig) -> bool:
    """True when some layer pools over the whole input (HAT's channel attention): tiling is never exact."""
    return encoder_spec(config.encoder).global_context


def encoder_layers(config: ModelConfig) -> tuple[list[Op], list[Op]]:
    """(LR-resolution layers, 2x-resolution layers) of the encoder plus the covariance head's conv1.

    The LR layers come from the encoder's spec (`sr_model.networks.encoder_specs`, which also lists the layer kinds).
    All encoders end with conv -> PixelShuffle(2) -> conv -> PixelShuffle(2); the model's PixelUnshuffle(2)
    puts lattice row r on the second conv's row r, and the covariance head's 3x3 conv1 runs on that lattice.
    """
    two_x: list[Op] = [("conv2x", 1), ("conv2x", 1)]  # last upsampling conv, covariance head conv1
    return encoder_spec(config.encoder).layers(config), two_x


def _spread(lo: int, hi: int, op: Op) -> tuple[int, int]:
    """The interval [lo, hi] of changed positions after one layer."""
    kind = op[0]
    if kind in ("conv", "conv2x"):
        return lo - op[1], hi + op[1]
    if kind == "window":
        ws, shift = op[1], op[2]
        return (math.floor((lo - shift) / ws) * ws + shift, math.floor((hi - shift) / ws) * ws + shift + ws - 1)
    if kind == "overlap":
        ws, pad = op[1], op[2]
        # window m is changed when [m*ws - pad, (m+1)*ws + pad) meets [lo, hi]
        first = math.ceil((lo - pad - ws + 1) / ws)
        last = math.floor((hi + pad) / ws)
        return min(lo, first * ws), max(hi, last * ws + ws - 1)
    if kind == "branch":
        a = _spread_all(lo, hi, op[1])
        b = _spread_all(lo, hi, op[2])
        return min(a[0], b[0], lo), max(a[1], b[1], hi)
    raise ValueError(f"unknown layer kind {kind!r}")


def _spread_all(lo: int, hi: int, ops) -> tuple[int, int]:
    for op in ops:
        lo, hi = _spread(lo, hi, op)
    return lo, hi


def receptive_radius(config: ModelConfig) -> int:
    """The largest Chebyshev distance (LR px) from an input pixel to a Gaussian it can change.

    Worst case over the pixel's position in the window grid. For HAT this covers the local layers only
    (see `has_global_context`).
    """
    lr_layers, two_x_layers = encoder_layers(config)
    period = max([op[1] for op in lr_layers if op[0] in ("window", "overlap")] + [1])
    radius = 0
    for x0 in range(period):
        lo, hi = _spread_all(x0, x0, lr_layers)
        lo2, hi2 = _spread_all(2 * lo, 2 * hi + 1, two_x_layers)  # LR pixel x covers 2x rows 2x, 2x+1
        radius = max(radius, x0 - lo2 // 2, hi2 // 2 - x0)  # lattice row r belongs to LR row r // 2
    return radius


def default_context(config: ModelConfig) -> int:
    """Context that makes tiling exact: the receptive radius rounded up to the window grid."""
    return _round_up(receptive_radius(config), tile_alignment(config))
