"""`--batch`: how many crops one fitting step (and one store chunk) holds, resolved once per job.

`auto` sizes it to a device. A step's cost has a fixed part (Python, kernel launches, the optimiser's dispatch)
and a part that grows with the pixels of the batch, so a batch should hold as many pixels as the device can work on
at once, within its memory. On a GPU that is hundreds to thousands of crops; on a CPU the numba kernels already
spread one crop over the threads, so a moderate number of pixels amortises the fixed part.
"""

from __future__ import annotations

import math
from typing import cast

import torch

#: Device bytes one crop needs while it is fitted, per HR pixel of the crop (float32): the target, the render, the
#: loss's temporaries and the render's incoming gradient (about 8 images of 12 bytes per pixel), plus per Gaussian
#: (one per 4 HR pixels at x4, k = 2) the raw parameters, their gradients, Adam's two moments, the bounded field and
#: its gradients (about 60 floats). Doubled for the allocator's slack and the renderer's own buffers.
BYTES_PER_PIXEL = 2 * (8 * 12 + 60 * 4 / 4)
#: Share of the device's free memory a batch may plan to use (the rest: other processes, fragmentation).
MEMORY_SHARE = 0.6
#: HR pixels per batch: enough to fill a large GPU (64 Mpx = 16,384 crops of 64 px, 1,024 of 256 px) ...
GPU_PIXELS = 64 * 2**20
#: ... and on a CPU, where a 64 px crop already keeps the threads busy, enough to amortise a step's fixed cost.
CPU_PIXELS = 2**18
#: Upper bound whatever the memory says (a chunk this large is still a few seconds of store writes).
MAX_BATCH = 16384
#: Crops per chunk (= per task and per fitting batch) when neither --batch nor an existing store says.
DEFAULT_BATCH = 8


def auto_batch(crop: int, device: str | torch.device = "cpu", free_bytes: int | None = None) -> int:
    """Crops per fitting batch for `crop` x `crop` crops on `device`, from its free memory and a pixel budget.

    `free_bytes` overrides the measured free memory (CUDA: `torch.cuda.mem_get_info`; CPU: available RAM).
    """
    if crop < 1:
        raise ValueError(f"crop size must be positive, got {crop}")
    device = torch.device(device)
    if free_bytes is None:
        free_bytes = _free_bytes(device)
    pixels = crop * crop
    by_memory = int(free_bytes * MEMORY_SHARE // (pixels * BYTES_PER_PIXEL))
    by_pixels = max(1, (GPU_PIXELS if device.type == "cuda" else CPU_PIXELS) // pixels)
    return max(1, min(by_memory, by_pixels, MAX_BATCH))


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--batch auto for cuda: this machine sees no CUDA device")
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # psutil comes with distributed; without it, assume a modest machine
        return 4 * 2**30


def spread(batch: int, crops: int, workers: int) -> int:
    """`batch`, lowered so that a corpus of `crops` gives every one of `workers` at least one chunk."""
    return max(1, min(batch, math.ceil(crops / max(1, workers))))


def resolve_batch(
    batch: int | str | None,
    store_chunks: int | None = None,
    measured: int | None = None,
    crops: int = 0,
    workers: int = 1,
) -> int:
    """The one place a job turns `--batch` (a number, "auto" or None) into its chunk size.

    `store_chunks` is an existing store's chunk size (None: a new store); None or "auto" keep it, and a number is
    passed on as asked, to be compared with it when the store is reopened (a store's chunks cannot change). On a new
    store: the number asked, else DEFAULT_BATCH; "auto" takes `measured` (`auto_batch` on the device that fits the
    chunks), lowered so that a corpus of `crops` gives each of `workers` a chunk (`spread`).
    """
    check_requested_batch(batch)
    if batch is not None and batch != "auto":
        return cast(int, batch)  # a number: any other string was refused
    if store_chunks is not None:
        return store_chunks
    if batch is None:
        return DEFAULT_BATCH
    if measured is None:
        raise ValueError("--batch auto on a new store needs the batch measured on the device that fits it")
    return spread(measured, crops, workers)


def check_requested_batch(batch: int | str | None) -> None:
    """Refuse a string other than "auto" (the CLI only passes numbers and "auto"; library callers may not)."""
    if isinstance(batch, str) and batch != "auto":
        raise ValueError(f"batch must be a positive integer or 'auto', got {batch!r}")
