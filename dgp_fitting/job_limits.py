"""Upper bounds of every number a prior job is given, from what the machine can hold, checked before anything is
allocated and before the store is created.

A number past its bound is refused in one line that says what it would need, what there is, and the largest value
that fits: a chunk must fit the fitting device's free memory (with the other workers sharing it), the crop plan
this machine's memory, the store its disk, the step count the store's int32 `crops/iterations`, the learning rates
float32 (Adam's first step moves a parameter by lr / (1 - beta1)), the seed 64 bits.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from prior_store.schema import ARRAYS, STRING, StoreConfig

if TYPE_CHECKING:  # torch is imported only where a device is measured: prior-stats does not load it
    import torch

    from dgp_fitting.fitting import FitConfig

#: Largest step count the store records (`crops/iterations` is int32) and largest crop side or stride (boxes are
#: int32 pixel coordinates).
INT32_MAX = 2**31 - 1
#: Seeds are 64-bit, as numpy's and torch's generators take them.
SEED_MAX = 2**63 - 1
#: Adam's first step moves a float32 parameter by lr / (1 - 0.9): beyond this it overflows (a RuntimeError).
LR_MAX = float(np.finfo(np.float32).max) * (1 - 0.9)
#: Client memory per planned crop: the plan's Python lists and tuples, its numpy arrays and the string arrays the
#: store is created from (measured about 250 bytes; doubled for the allocator).
PLAN_BYTES_PER_CROP = 512
#: Resident memory of one local worker process beside its chunk: torch, numba's compiled kernels, dask (860 MiB
#: measured: a worker's resident set after fitting a chunk of eight 32 px crops on the CPU), rounded up.
WORKER_PROCESS_BYTES = 2**30
#: Bytes a per-crop string of the store holds beside its characters (numpy's StringDType entry).
STRING_BYTES = 16


class JobTooLargeError(ValueError):
    """A number of the job beyond what this machine (or its store's disk) can hold."""


def memory_size(count: int) -> str:
    """Sizes in messages: '1.50 TiB', '3.42 GiB', '96.3 MiB', '8.4 KiB', '512 bytes' (never '0.0 GiB')."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}" if unit in ("TiB", "GiB") else f"{count / scale:.1f} {unit}"
    return f"{int(count)} bytes"


def check_fit_numbers(fit: FitConfig) -> None:
    """Refuse fitting settings the store or the float32 optimiser cannot hold, and zero steps."""
    if fit.steps < 1:
        raise JobTooLargeError(
            f"--steps must be at least 1, got {fit.steps}: with no step a crop keeps its unfitted start, which "
            "would be stored as done"
        )
    if fit.steps > INT32_MAX:
        raise JobTooLargeError(f"--steps {fit.steps} is over {INT32_MAX}, the most the store's iteration count holds")
    for name, value in (("--lr", fit.lr), ("--color-lr", fit.color_lr)):
        if value > LR_MAX:
            raise JobTooLargeError(
                f"{name} {value:g} is over {LR_MAX:.3g}: Adam's first step (lr / 0.1) would overflow float32"
            )
    if not 0 <= fit.seed <= SEED_MAX:
        raise JobTooLargeError(f"--seed must lie between 0 and {SEED_MAX} (64 bits), got {fit.seed}")


def check_grid(crop: int, stride: int | None) -> None:
    """Crop sides and strides are int32 pixel coordinates in the store's boxes."""
    for name, value in (("--crop", crop), ("--stride", stride)):
        if value is not None and value > INT32_MAX:
            raise JobTooLargeError(f"{name} {value} is over {INT32_MAX} px, the largest image coordinate a box holds")


def free_memory(device: torch.device | None = None) -> int:
    """Bytes free on `device` now: CUDA's free memory, or (None, cpu) the RAM available to this machine."""
    if device is not None and device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def free_disk(path: str | os.PathLike) -> int | None:
    """Bytes free on the disk that holds (or would hold) `path`; None for object storage."""
    if "://" in str(path):
        return None
    folder = Path(path).absolute()
    while not folder.exists():
        folder = folder.parent
    return int(shutil.disk_usage(folder).free)


def fit_bytes(crop: int, batch: int = 1) -> int:
    """Device bytes `batch` crops of `crop` px take while they are fitted (`batch_size.BYTES_PER_PIXEL`)."""
    from dgp_fitting.batch_size import BYTES_PER_PIXEL

    return int(math.ceil(batch * crop * crop * BYTES_PER_PIXEL))


def _device_name(device: torch.device) -> str:
    return "this machine's memory" if device.type == "cpu" else f"{device}"


def check_batch(batch: int, crop: int, device: torch.device, free: int, sharing: int = 1, store: str = "") -> None:
    """Refuse a chunk of `batch` crops that cannot be fitted in `free` bytes shared by `sharing` workers.

    `store` names an existing store whose chunk size is `batch` (its chunks cannot be changed)."""
    need = fit_bytes(crop, batch) * sharing
    if need <= free:
        return
    fits = free // (fit_bytes(crop) * sharing)
    shared = f" by each of {sharing} workers" if sharing > 1 else ""
    what = f"store {store} has chunks of {batch} crops" if store else f"--batch {batch}"
    advice = (
        f"fit it on a larger device, or start a new --store with --batch {fits} or auto"
        if store and fits >= 1
        else f"use --batch {fits} or auto"
        if fits >= 1
        else f"use a smaller --crop (one {crop} px crop needs {memory_size(fit_bytes(crop) * sharing)})"
    )
    raise JobTooLargeError(
        f"{what}: fitting one chunk of {crop} px crops{shared} needs about {memory_size(need)}, but "
        f"{_device_name(device)} has {memory_size(free)} free; {advice}"
    )


def check_crop(crop: int, device: torch.device, free: int) -> None:
    """Refuse a crop side whose single crop cannot be fitted in `free` bytes."""
    check_grid(crop, None)
    if fit_bytes(crop) > free:
        side = int(math.sqrt(free / (fit_bytes(crop) / crop / crop))) // 4 * 4
        raise JobTooLargeError(
            f"--crop {crop}: fitting one {crop} px crop needs about {memory_size(fit_bytes(crop))}, but "
            f"{_device_name(device)} has {memory_size(free)} free; use --crop {side} or less"
        )


def store_bytes_per_crop(config: StoreConfig, chars: int = 200) -> int:
    """Bytes one crop takes in the store (uncompressed: fitted fields are float noise to a compressor), its
    strings taken as `chars` characters in all."""
    total = 0
    for spec in ARRAYS:
        if spec.dtype is STRING:
            total += STRING_BYTES
        else:
            total += np.dtype(spec.dtype).itemsize * math.prod(config.tail_shape(spec))
    return total + chars


def max_plan_crops(free: int) -> int:
    """The most crops a plan may hold on this machine (`PLAN_BYTES_PER_CROP` of `free` bytes each)."""
    return max(1, free // PLAN_BYTES_PER_CROP)


def check_disk(store: str | os.PathLike, config: StoreConfig, crops: int, free: int | None) -> None:
    """Refuse a job whose `crops` still to fit would not fit the store's disk (`free` bytes; None: not known)."""
    if free is None or crops <= 0:
        return
    per_crop = store_bytes_per_crop(config)
    need = per_crop * crops
    if need <= free:
        return
    raise JobTooLargeError(
        f"store {store} needs about {memory_size(need)} on disk for the {crops} crops left to fit, but its disk "
        f"has {memory_size(free)} free (room for about {free // per_crop} crops); free space, fit fewer crops "
        "(--stride, --crops-per-image, fewer images) or put --store on a larger disk"
    )


def check_local_workers(workers: int, free: int, per_worker: int) -> None:
    """Refuse more local worker processes than this machine's memory holds (`per_worker` bytes each)."""
    need = workers * per_worker
    if need <= free:
        return
    raise JobTooLargeError(
        f"--workers {workers}: {workers} worker processes need about {memory_size(need)} "
        f"({memory_size(per_worker)} each), but this machine has {memory_size(free)} free; use --workers "
        f"{max(1, free // per_worker)} or less"
    )


#: Blocks of the store (`prior_stats.BLOCK_BYTES` each) one statistics thread holds at a time: the block read and
#: the temporaries of its kernels.
STATS_BLOCKS_PER_THREAD = 4
#: Memory per dictionary kernel while it is made (grid: a Python tuple per row before the array, about 180 bytes;
#: sample: twice the kernels drawn per batch, 48 bytes each), rounded up.
DICTIONARY_BYTES_PER_KERNEL = 256
#: The highest PSNR a fitted crop records: `fitting.psnr_of` clamps the squared error at 1e-12.
MAX_PSNR_DB = 120.0


def check_stats_numbers(size: int, min_psnr: float | None, seed: int, threads: int | None, free: int) -> None:
    """Refuse prior-stats numbers past what this machine (`free` bytes of RAM) or the store can hold."""
    from dgp_fitting.prior_stats import BLOCK_BYTES

    if size * DICTIONARY_BYTES_PER_KERNEL > free:
        raise JobTooLargeError(
            f"--size {size}: making {size} kernels needs about {memory_size(size * DICTIONARY_BYTES_PER_KERNEL)}, "
            f"but this machine has {memory_size(free)} free; use --size {free // DICTIONARY_BYTES_PER_KERNEL} or less"
        )
    if min_psnr is not None and min_psnr > MAX_PSNR_DB:
        raise JobTooLargeError(
            f"--min-psnr {min_psnr:g} is over {MAX_PSNR_DB:g} dB, the highest PSNR a fitted crop records"
        )
    if not 0 <= seed <= SEED_MAX:
        raise JobTooLargeError(f"--seed must lie between 0 and {SEED_MAX} (64 bits), got {seed}")
    per_thread = STATS_BLOCKS_PER_THREAD * BLOCK_BYTES
    if threads is not None and threads * per_thread > free:
        raise JobTooLargeError(
            f"--threads {threads}: each thread holds about {memory_size(per_thread)} of the store at a time, "
            f"{memory_size(threads * per_thread)} in all, but this machine has {memory_size(free)} free; use "
            f"--threads {max(1, free // per_thread)} or less"
        )


__all__ = [
    "INT32_MAX",
    "LR_MAX",
    "MAX_PSNR_DB",
    "SEED_MAX",
    "JobTooLargeError",
    "check_batch",
    "check_crop",
    "check_disk",
    "check_fit_numbers",
    "check_grid",
    "check_local_workers",
    "check_stats_numbers",
    "fit_bytes",
    "free_disk",
    "free_memory",
    "max_plan_crops",
    "memory_size",
    "store_bytes_per_crop",
]
