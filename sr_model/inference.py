"""Encode an LR image of any size: whole when it fits in memory, else on overlapping tiles stitched exactly.

Each tile's encoder run gives a field on its own lattice; the Gaussians of its core are copied into the
image's lattice (lattice row k*i + a of the image for LR row i of the core), with means moved from tile to
image coordinates. Covariances and colours do not depend on position. With the default context (the
encoder's receptive radius, `sr_model.tiling`) the stitched field equals the untiled one to float rounding.

Memory is estimated before anything is allocated, from the sizes of the model's own layer outputs on a
small probe (see `activation_bytes_per_pixel`); over the budget, the call is refused with a tile size
that fits.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from gaussian_field import GaussianField
from gaussian_field.lattice import base_positions
from sr_model.tiling import Tile, default_context, plan_tiles, tile_alignment

#: Fraction of the free memory an encode may plan to use (the rest is for the process and its neighbours).
BUDGET_FRACTION = 0.6
#: Floats per Gaussian in a stitched field: mean (2), Cholesky (3), colour (3).
FIELD_FLOATS_PER_GAUSSIAN = 8
#: Held at once in no-grad inference: a layer's input, its output and one skip tensor, each no larger than
#: the largest layer output.
LIVE_LAYER_OUTPUTS = 3
#: Allocator slack and thread-local buffers on top: measured peaks reached up to 1.02x the estimate without it
#: (benchmarks/tiling_margin.py --memory, README).
SAFETY_FACTOR = 1.25
#: Candidate tile sizes offered in a refusal, largest first.
TILE_CANDIDATES = (4096, 3072, 2048, 1536, 1024, 768, 512, 384, 256, 192, 128, 96, 64, 48, 32, 16)


class EncodeMemoryError(ValueError):
    """An encode that would not fit in memory; the message suggests a --tile that does."""


@dataclass(frozen=True)
class EncodePlan:
    """How one image will be encoded: its tiles (one = untiled), the context, the memory it needs."""

    height: int
    width: int
    tiles: tuple[Tile, ...]
    context: int
    estimate_bytes: int
    budget_bytes: int

    @property
    def tiled(self) -> bool:
        return len(self.tiles) > 1


def parse_bytes(text: str) -> int:
    """'8G', '512M', '1.5GiB', '1000000' -> bytes."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    factor = units.get(value[-1:], 1)
    try:
        number = float(value[:-1] if value[-1:] in units else value)
    except ValueError:
        raise ValueError(f"memory size {text!r} is not a number of bytes (e.g. 8G, 512M)") from None
    if not number > 0:
        raise ValueError(f"memory size {text!r} must be positive")
    return int(number * factor)


def memory_budget(device: str | torch.device = "cpu") -> int:
    """Bytes an encode may use: $P2G_MEMORY_BUDGET if set, else a fraction of the device's free memory."""
    if os.environ.get("P2G_MEMORY_BUDGET"):
        return parse_bytes(os.environ["P2G_MEMORY_BUDGET"])
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        import psutil

        free = psutil.virtual_memory().available
    return int(free * BUDGET_FRACTION)


_PER_PIXEL_CACHE: weakref.WeakKeyDictionary[nn.Module, float] = weakref.WeakKeyDictionary()


def _model_param(model: nn.Module) -> torch.Tensor:
    return next(model.parameters())


def activation_bytes_per_pixel(model: nn.Module) -> float:
    """Peak working memory of one encode per LR pixel, measured on a small probe and scaled by area.

    Every layer's output size grows with the input area, so the probe's largest layer output per pixel, times
    the number of such tensors alive at once, plus the dictionary mixing weights (K per Gaussian, twice:
    logits and softmax, not a layer output) bounds the peak of a larger input.
    """
    if model in _PER_PIXEL_CACHE:
        return _PER_PIXEL_CACHE[model]
    param = _model_param(model)
    side = max(16, 2 * tile_alignment(model.config))
    sizes: list[int] = []

    def record(module, inputs, output):
        outs = output if isinstance(output, (tuple, list)) else (output,)
        sizes.append(sum(t.numel() for t in outs if isinstance(t, torch.Tensor)))

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(record) for m in leaves]
    try:
        with torch.no_grad():
            probe = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
            gaussians = model.gaussians(probe.to(device=param.device, dtype=param.dtype))
    finally:
        for hook in hooks:
            hook.remove()
    pixels = side * side
    dictionary = getattr(model, "dictionary", None)
    mixing = 2 * (0 if dictionary is None else dictionary.shape[0]) * gaussians["color"].shape[1] / pixels
    per_pixel = SAFETY_FACTOR * (LIVE_LAYER_OUTPUTS * max(sizes) / pixels + mixing) * param.element_size()
    _PER_PIXEL_CACHE[model] = per_pixel
    return per_pixel


def estimate_encode_bytes(model: nn.Module, height: int, width: int, tile_outer: tuple[int, int] | None = None) -> int:
    """Bytes to encode an image of height x width: the stitched field plus one encoder run on the largest tile."""
    param = _model_param(model)
    k = 2
    field = FIELD_FLOATS_PER_GAUSSIAN * k * k * height * width * param.element_size()
    th, tw = tile_outer if tile_outer is not None else (height, width)
    return int(field + activation_bytes_per_pixel(model) * th * tw)


def _largest_outer(tiles: Iterable[Tile]) -> tuple[int, int]:
    return max((t.outer_size for t in tiles), key=lambda s: s[0] * s[1])


def suggest_tile(model: nn.Module, height: int, width: int, context: int, budget: int) -> int | None:
    """The largest tile size from TILE_CANDIDATES whose encode fits the budget, or None."""
    align = tile_alignment(model.config)
    for tile in TILE_CANDIDATES:
        if tile % align:
            continue
        tiles = plan_tiles(height, width, tile, context, align)
        if estimate_encode_bytes(model, height, width, _largest_outer(tiles)) <= budget:
            return tile
    return None


def plan_encode(
    model: nn.Module,
    height: int,
    width: int,
    tile: int | None = None,
    context: int | None = None,
    budget: int | None = None,
) -> EncodePlan:
    """Choose the tiles for an image and check the memory; raises EncodeMemoryError naming a --tile that fits."""
    config = model.config
    context = default_context(config) if context is None else int(context)
    if context < 0:
        raise ValueError(f"tile context must be >= 0 LR pixels, got {context}")
    budget = memory_budget(_model_param(model).device) if budget is None else int(budget)
    align = tile_alignment(config)
    context = -(-context // align) * align  # as plan_tiles rounds it: on the window grid
    tiles = plan_tiles(height, width, max(height, width) if tile is None else tile, context, align)
    needed = estimate_encode_bytes(model, height, width, _largest_outer(tiles))
    if needed > budget:
        suggestion = suggest_tile(model, height, width, context, budget)
        what = "at once" if tile is None else f"with --tile {tile}"
        if suggestion is not None:
            advice = f"rerun with --tile {suggestion} (tile={suggestion} in Python)"
        elif estimate_encode_bytes(model, height, width, (0, 0)) > budget:
            advice = "the field alone does not fit; free memory or use a smaller input"
        else:
            smallest = TILE_CANDIDATES[-1]
            advice = f"even --tile {smallest} does not fit; free memory or raise $P2G_MEMORY_BUDGET"
        raise EncodeMemoryError(
            f"encoding {width}x{height} px {what} needs about {needed / 2**30:.2f} GiB, over the memory budget of "
            f"{budget / 2**30:.2f} GiB; {advice}"
        )
    return EncodePlan(height, width, tuple(tiles), context, needed, budget)


def encode_tiles(
    model: nn.Module, lr: torch.Tensor, plan: EncodePlan, progress: Callable[[Iterable], Iterable] | None = None
) -> GaussianField:
    """Run the encoder per tile of `plan` and stitch the core Gaussians into one field over the whole image."""
    if lr.dim() != 4 or lr.shape[0] != 1:
        raise ValueError(f"tiled encoding takes one image (1, 3, h, w), got {tuple(lr.shape)}")
    height, width = lr.shape[-2:]
    if (height, width) != (plan.height, plan.width):
        raise ValueError(f"the plan is for {plan.width}x{plan.height} px, the image is {width}x{height}")
    if not plan.tiled:
        return model.encode(lr)
    parts: dict[str, torch.Tensor] = {}
    tiles = progress(plan.tiles) if progress is not None else plan.tiles
    for tile in tiles:
        top, left, bottom, right = tile.outer
        sub = model.encode(lr[..., top:bottom, left:right])
        k = sub.k
        if not parts:
            shape = (1, k * height, k * width)
            parts = {
                name: torch.empty(*shape, dim, dtype=sub.dtype, device=sub.device)
                for name, dim in (("offset", 2), ("chol", 3), ("colors", 3))
            }
        ct, cl, cb, cr = tile.core
        rows, cols = slice(k * (ct - top), k * (cb - top)), slice(k * (cl - left), k * (cr - left))
        lattice = (1, k * (bottom - top), k * (right - left))
        target = (slice(None), slice(k * ct, k * cb), slice(k * cl, k * cr))
        parts["offset"][target] = sub.offsets().view(*lattice, 2)[:, rows, cols]
        parts["chol"][target] = sub.chol.view(*lattice, 3)[:, rows, cols]
        parts["colors"][target] = sub.colors.view(*lattice, 3)[:, rows, cols]
        del sub
    offset = parts.pop("offset").view(1, -1, 2)
    means = base_positions(height, width, k, dtype=offset.dtype, device=offset.device) + offset
    return GaussianField(
        means, parts["chol"].view(1, -1, 3), parts["colors"].view(1, -1, 3), height, width, k, validate=False
    )


def encode(
    model: nn.Module,
    lr: torch.Tensor,
    tile: int | None = None,
    context: int | None = None,
    budget: int | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> GaussianField:
    """LR (1, 3, h, w) in [0, 1] -> field, tiled when `tile` is given; memory checked first (no grad)."""
    if not isinstance(lr, torch.Tensor) or lr.dim() != 4:
        raise ValueError(f"encode takes an LR batch (1, 3, h, w), got {getattr(lr, 'shape', type(lr).__name__)}")
    plan = plan_encode(model, int(lr.shape[-2]), int(lr.shape[-1]), tile, context, budget)
    with torch.no_grad():
        return encode_tiles(model, lr, plan, progress)
