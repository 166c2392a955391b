"""Encode an LR image of any size: whole when it fits in memory, else on overlapping tiles stitched exactly.

Each tile's encoder run gives a field on its own lattice; the Gaussians of its core are copied into the
image's lattice (lattice row k*i + a of the image for LR row i of the core), with means moved from tile to
image coordinates. Covariances and colours do not depend on position. With the default context (the
encoder's receptive radius, `sr_model.inference.tiling`) the stitched field equals the untiled one to float rounding.

Memory is planned before anything is allocated, from what the model itself takes on a 128 px probe
(`encode_cost`: the allocator's peaks in the trunk and in the whole encode, and the resident set beyond them).
Without a tile size, the whole image is encoded when it fits the budget, else the largest tile that does, and the
plan's note says so in one line; `tile=0` asks for one piece, refused over the budget with a tile that fits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gaussian_field import GaussianField
from gaussian_field.lattice import add_base_positions
from gaussian_field.memory import budget_is_set, memory_budget, memory_size
from sr_model.inference.tiling import Tile, default_context, has_global_context, plan_tiles, tile_alignment
from sr_model.networks.model import HEAD_PIECE

log = logging.getLogger(__name__)
#: ... and at most this much of a CPU's memory unless $P2G_MEMORY_BUDGET says otherwise: tiles cost only their
#: context (5 % at 1024 px for `lite`), so a photo-sized encode need not take a laptop's memory.
DEFAULT_CPU_BUDGET = 1 * 2**30
#: Floats per Gaussian in a stitched field: mean (2), Cholesky (3), colour (3).
FIELD_FLOATS_PER_GAUSSIAN = 8
#: The process's memory beyond the tensors during an encode (oneDNN scratch pads, thread buffers, allocator slack)
#: that every encode has: resident-set growth minus the tensors' peak, 0-40 MB for `lite` on a CPU once the probe has
#: run (benchmarks/encode_cost.py; tests/test_encode_memory.py holds the estimate to the resident set).
RUNTIME_OVERHEAD = 24 * 2**20
#: Resident memory the probe's own encode may take beyond its tensors the first time (kernel caches, heap growth:
#: 25-50 MB for `lite`), not counted against later encodes; more than this is the model's and is added.
FIRST_USE_ALLOWANCE = 64 * 2**20
#: Candidate tile sizes, largest first.
TILE_CANDIDATES = (4096, 3072, 2048, 1536, 1024, 768, 512, 384, 256, 192, 128, 96, 64, 48, 32, 16)


class EncodeMemoryError(ValueError):
    """An encode that would not fit in memory; the message suggests a --tile that does."""


@dataclass(frozen=True)
class EncodePlan:
    """How one image will be encoded: its tiles (one = untiled), the context, the memory it needs, and the line
    that says why it is tiled when the caller did not ask for tiles (`note`)."""

    height: int
    width: int
    tiles: tuple[Tile, ...]
    context: int
    estimate_bytes: int
    budget_bytes: int
    note: str | None = None

    @property
    def tiled(self) -> bool:
        return len(self.tiles) > 1


def work_budget(device: str | torch.device = "cpu") -> int:
    """Bytes the encode's own work may use (its tiles' layers, a streamed field's window): $P2G_MEMORY_BUDGET if
    set, else `memory_budget`, on a CPU at most DEFAULT_CPU_BUDGET."""
    total = memory_budget(device)
    if budget_is_set() or torch.device(device).type != "cpu":
        return total
    return min(total, DEFAULT_CPU_BUDGET)


@dataclass(frozen=True)
class EncodeCost:
    """Peak bytes of the tensors of one encode, as a function of its LR pixels (measured on a probe).

    Two phases peak: the trunk (every layer at LR resolution on the whole input: `trunk_per_pixel`), then the tail
    and heads piece by piece (`piece`: one piece's work, less for an input smaller than a piece, plus
    `heads_per_pixel`: the trunk's output and the heads' outputs for every Gaussian, held while the pieces run).
    """

    trunk_per_pixel: float
    piece: float
    heads_per_pixel: float
    piece_pixels: int
    #: the runtime's own memory beyond the tensors (measured on the probe, else RUNTIME_OVERHEAD)
    overhead: int = RUNTIME_OVERHEAD

    def peak(self, pixels: int) -> int:
        piece = self.piece * min(1.0, pixels / self.piece_pixels)
        return int(max(self.trunk_per_pixel * pixels, piece + self.heads_per_pixel * pixels)) + self.overhead


_COST_CACHE: weakref.WeakKeyDictionary[nn.Module, EncodeCost] = weakref.WeakKeyDictionary()


def _model_param(model: nn.Module) -> torch.Tensor:
    return next(model.parameters())


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """The profiler's C++ side prints start/stop lines to the process's stderr: sent to /dev/null meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def allocated_peak(run: Callable[[], object], device: torch.device) -> int:
    """The most bytes of tensors held at once while `run()` runs, above what was held before (torch's allocator
    events: the CUDA caching allocator's statistics, the CPU allocator's through the profiler)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted(
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()  # type: ignore[union-attr]
        if event.name() == "[memory]"
    )
    held = peak = 0
    for _, change in events:
        held += change
        peak = max(peak, held)
    return peak


def resident_peak(run: Callable[[], object]) -> int | None:
    """How far the process's resident set rises above where it was while `run()` runs (Linux: the heap trimmed
    first, then the high-water mark reset through /proc/self/clear_refs), or None where that cannot be read.

    Unlike the allocator's count, this holds what a CPU encode takes beyond its tensors: oneDNN and MKL buffers,
    the heap's fragmentation (for the transformers several times their tensors' peak on a small probe)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        before = _resident_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except (OSError, AttributeError):
        return None
    run()
    return max(0, _resident_kib("VmHWM") - before) * 1024


def _resident_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def probe_side(model: nn.Module) -> int:
    """The probe's side: two pieces of the heads a side (so that one has context on every side it can), on the
    encoder's window grid."""
    align = tile_alignment(model.config)
    return -(-2 * HEAD_PIECE // align) * align


def encode_cost(model: nn.Module) -> EncodeCost:
    """The model's `EncodeCost`, measured once per model on a probe image of `probe_side` px a side."""
    if model in _COST_CACHE:
        return _COST_CACHE[model]
    param = _model_param(model)
    side = probe_side(model)
    probe = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    probe = probe.to(device=param.device, dtype=param.dtype)
    pixels = side * side
    outputs: list[torch.Tensor] = []
    peaks: list[int] = []
    with torch.no_grad():
        model.encode(probe[..., :16, :16])  # first-use costs (kernel caches, thread pools) outside the measure
        trunk = allocated_peak(lambda: outputs.append(model.encoder.trunk(probe)), param.device)
        trunk_out = outputs.pop()  # the trunk's output, held while the pieces run: its bytes per pixel
        trunk_bytes = trunk_out.numel() * trunk_out.element_size() / pixels
        del trunk_out
        resident = None
        if param.device.type == "cpu":
            resident = resident_peak(lambda: peaks.append(allocated_peak(lambda: model.encode(probe), param.device)))
        else:
            peaks.append(allocated_peak(lambda: model.encode(probe), param.device))
    whole = peaks[0]
    per_pixel = trunk_bytes + FIELD_FLOATS_PER_GAUSSIAN * 4 * param.element_size()
    # the runtime beyond the tensors (oneDNN and MKL buffers, the heap's fragmentation): RUNTIME_OVERHEAD, plus what
    # the resident set rose by beyond the tensors' peak and FIRST_USE_ALLOWANCE, where Linux tells it (0 for `lite`,
    # several hundred MB for the transformer presets)
    excess = 0 if resident is None else max(0, resident - whole - FIRST_USE_ALLOWANCE)
    overhead = RUNTIME_OVERHEAD + excess
    cost = EncodeCost(trunk / pixels, max(0.0, whole - per_pixel * pixels), float(per_pixel), HEAD_PIECE**2, overhead)
    _COST_CACHE[model] = cost
    return cost


def field_bytes(model: nn.Module, height: int, width: int) -> int:
    """Bytes of the field of an image of height x width LR pixels (k = 2: 4 Gaussians of 8 floats per pixel)."""
    return FIELD_FLOATS_PER_GAUSSIAN * 4 * height * width * _model_param(model).element_size()


def work_bytes(model: nn.Module, tile_outer: tuple[int, int]) -> int:
    """Bytes of one encoder run on a tile's outer box (the whole image when untiled, whose field is the heads'
    outputs), with the runtime's overhead."""
    return encode_cost(model).peak(tile_outer[0] * tile_outer[1])


def estimate_encode_bytes(model: nn.Module, height: int, width: int, tile_outer: tuple[int, int] | None = None) -> int:
    """Bytes to encode an image of height x width: one encoder run on the largest tile (`work_bytes`), plus the
    stitched field when tiled."""
    outer = tile_outer if tile_outer is not None else (height, width)
    stitched = 0 if outer == (height, width) else field_bytes(model, height, width)
    return stitched + work_bytes(model, outer)


def _largest_outer(tiles: Iterable[Tile]) -> tuple[int, int]:
    return max((t.outer_size for t in tiles), key=lambda s: s[0] * s[1])


@dataclass(frozen=True)
class _Budget:
    """What a plan must fit: everything (`total`) and the encode's own work (`work`); a streamed field (rendered and
    dropped row of tiles by row of tiles, `sr_model.inference.streaming`) holds one row of tiles plus `window_rows`."""

    total: int
    work: int
    stream: bool = False
    window_rows: int = 0

    def needs(self, model: nn.Module, height: int, width: int, tiles: Sequence[Tile]) -> tuple[int, int]:
        """(work, field) bytes of encoding with `tiles`: work includes a streamed window."""
        work = work_bytes(model, _largest_outer(tiles))
        if len(tiles) == 1:
            return work, 0
        if self.stream:
            top, _, bottom, _ = tiles[0].core
            return work + field_bytes(model, min(height, bottom - top + self.window_rows), width), 0
        return work, field_bytes(model, height, width)

    def fits(self, needs: tuple[int, int]) -> bool:
        work, field = needs
        return work <= self.work and work + field <= self.total


def suggest_tile(model: nn.Module, height: int, width: int, context: int, budget: int | _Budget) -> int | None:
    """The largest tile size from TILE_CANDIDATES whose encode fits the budget, or None."""
    if not isinstance(budget, _Budget):
        budget = _Budget(budget, budget)
    align = tile_alignment(model.config)
    for tile in TILE_CANDIDATES:
        if tile % align:
            continue
        if budget.fits(budget.needs(model, height, width, plan_tiles(height, width, tile, context, align))):
            return tile
    return None


def plan_encode(
    model: nn.Module,
    height: int,
    width: int,
    tile: int | None = None,
    context: int | None = None,
    budget: int | None = None,
    stream_rows: int | None = None,
) -> EncodePlan:
    """Choose the tiles for an image and check the memory.

    `tile=None`: the whole image when it fits the budget, else the largest tile that does (the plan's `note` says
    so in one line); `tile=0`: the whole image; `tile=N`: N x N tiles. What does not fit raises EncodeMemoryError
    naming what would. `budget` (bytes) bounds everything; by default `memory_budget` bounds everything and
    `work_budget` the encode's own work. `stream_rows`: the field is never whole (it is rendered row of tiles by
    row of tiles, `sr_model.inference.streaming`), each row held with this many more LR rows.
    """
    config = model.config
    context = default_context(config) if context is None else int(context)
    if context < 0:
        raise ValueError(f"tile context must be >= 0 LR pixels, got {context}")
    if tile is not None and (int(tile) != tile or tile < 0):
        raise ValueError(f"tile size must be a number of LR pixels (0: the whole image at once), got {tile!r}")
    device = _model_param(model).device
    stream = stream_rows is not None
    limits = (
        _Budget(memory_budget(device), work_budget(device), stream, stream_rows or 0)
        if budget is None
        else _Budget(int(budget), int(budget), stream, stream_rows or 0)
    )
    align = tile_alignment(config)
    context = -(-context // align) * align  # as plan_tiles rounds it: on the window grid
    whole = not tile
    tiles = plan_tiles(height, width, max(height, width) if whole else int(tile), context, align)
    needs = limits.needs(model, height, width, tiles)
    if limits.fits(needs):
        return EncodePlan(height, width, tuple(tiles), context, sum(needs), limits.total)
    suggestion = suggest_tile(model, height, width, context, limits)
    over = _over(needs, limits)
    if tile is None and suggestion is not None:
        tiles = plan_tiles(height, width, suggestion, context, align)
        exact = (
            "not exact: HAT's channel attention sees the whole image"
            if has_global_context(config)
            else f"exact with {context} px of context"
        )
        note = (
            f"encoding {width}x{height} px in {len(tiles)} tiles of {suggestion} px ({exact}): at once it {over} "
            "(set $P2G_MEMORY_BUDGET to change it)"
        )
        estimate = sum(limits.needs(model, height, width, tiles))
        return EncodePlan(height, width, tuple(tiles), context, estimate, limits.total, note)
    what = "at once" if whole else f"with --tile {tile}"
    if suggestion is not None:
        advice = f"rerun with --tile {suggestion} (tile={suggestion} in Python) or without --tile"
    elif not stream and field_bytes(model, height, width) + work_bytes(model, (1, 1)) > limits.total:
        advice = "the field alone does not fit; free memory or use a smaller input"
    else:
        smallest = TILE_CANDIDATES[-1]
        advice = f"even --tile {smallest} does not fit; free memory or raise $P2G_MEMORY_BUDGET"
    raise EncodeMemoryError(f"encoding {width}x{height} px {what} {over}; {advice}")


def _over(needs: tuple[int, int], limits: _Budget) -> str:
    work, field = needs
    if work > limits.work and limits.work < limits.total:
        return f"needs about {memory_size(work)} of working memory, over the budget of {memory_size(limits.work)}"
    return f"needs about {memory_size(work + field)}, over the memory budget of {memory_size(limits.total)}"


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
    return stitch_tiles(model, lr, progress(plan.tiles) if progress is not None else plan.tiles, (0, height))


def stitch_tiles(
    model: nn.Module,
    lr: torch.Tensor,
    tiles: Iterable[Tile],
    rows: tuple[int, int],
    origin: int = 0,
    head: GaussianField | None = None,
) -> GaussianField:
    """Encode `tiles` (whose cores cover LR rows [rows) of the image (1, 3, h, w), every column) and stitch their
    Gaussians into one field, means relative to LR row `origin` (computed in the image's frame, then moved: exact, a
    whole number). `head`, a field of LR rows [origin, rows[0]) relative to `origin`, is copied in front (a streamed
    window's rows still in use: one buffer, no concatenated copy)."""
    top, bottom = rows
    width = lr.shape[-1]
    first = origin if head is not None else top
    if head is not None and (head.h != top - origin or head.w != width):
        raise ValueError(f"the head field covers {head.h}x{head.w} LR px, not rows {origin}..{top} x {width}")
    parts: dict[str, torch.Tensor] = {}
    k = 2
    for tile in tiles:
        o_top, o_left, o_bottom, o_right = tile.outer
        sub = model.encode(lr[..., o_top:o_bottom, o_left:o_right])
        k = sub.k
        if not parts:
            shape = (1, k * (bottom - first), k * width)
            parts = {
                name: torch.empty(*shape, dim, dtype=sub.dtype, device=sub.device)
                for name, dim in (("means", 2), ("chol", 3), ("colors", 3))
            }
        ct, cl, cb, cr = tile.core
        core_rows, core_cols = slice(k * (ct - o_top), k * (cb - o_top)), slice(k * (cl - o_left), k * (cr - o_left))
        lattice = (1, k * (o_bottom - o_top), k * (o_right - o_left))
        target = (slice(None), slice(k * (ct - first), k * (cb - first)), slice(k * cl, k * cr))
        parts["means"][target] = sub.offsets().view(*lattice, 2)[:, core_rows, core_cols]
        parts["chol"][target] = sub.chol.view(*lattice, 3)[:, core_rows, core_cols]
        parts["colors"][target] = sub.colors.view(*lattice, 3)[:, core_rows, core_cols]
        del sub
    band = parts["means"][:, k * (top - first) :]  # the offsets so far: the base added in the image's frame
    add_base_positions(band, lr.shape[-2], width, k, rows=(k * top, k * bottom))
    if origin:
        band[..., 1] -= origin
    if head is not None:
        for name in parts:
            parts[name][:, : k * (top - origin)] = getattr(head, name).view(1, k * (top - origin), k * width, -1)
    flat = {name: part.view(1, -1, part.shape[-1]) for name, part in parts.items()}
    return GaussianField(flat["means"], flat["chol"], flat["colors"], bottom - first, width, k, validate=False)


def encode(
    model: nn.Module,
    lr: torch.Tensor,
    tile: int | None = None,
    context: int | None = None,
    budget: int | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
    notice: Callable[[str], None] | None = None,
) -> GaussianField:
    """LR (1, 3, h, w) in [0, 1] -> field, tiled as `plan_encode` decides (no grad); the plan's note, when it tiles
    by itself, is logged at INFO and given to `notice`."""
    if not isinstance(lr, torch.Tensor) or lr.dim() != 4:
        raise ValueError(f"encode takes an LR batch (1, 3, h, w), got {getattr(lr, 'shape', type(lr).__name__)}")
    plan = plan_encode(model, int(lr.shape[-2]), int(lr.shape[-1]), tile, context, budget)
    if plan.note:
        log.info(plan.note)
        if notice is not None:
            notice(plan.note)
    with torch.no_grad():
        return encode_tiles(model, lr, plan, progress)
