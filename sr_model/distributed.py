"""Where this training process runs: device, and (under `torchrun`) its rank in a DDP group.

`torchrun --nproc_per_node N` (or a multi-node launch) sets WORLD_SIZE, RANK and LOCAL_RANK; `setup` then joins
the process group (NCCL on CUDA, gloo on CPU) and puts each rank on its own GPU (cuda:LOCAL_RANK). A plain
`python`/`p2g` call is a world of one and needs no process group.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Runtime:
    """This process's place in the run."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, metrics and the progress bar."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda (this rank's GPU) when available, else cpu; 'cuda' under torchrun -> cuda:LOCAL_RANK."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"device {name!r} is not supported for training; use cpu or cuda")
    return device


def setup(device: str = "auto") -> Runtime:
    """Join the torchrun process group if launched by torchrun, and pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return Runtime(resolved, rank, world_size, local_rank)


def teardown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()


def parameters_checksum(module: torch.nn.Module) -> int:
    """CRC32 of every parameter's bytes: equal on all ranks while DDP keeps them in sync."""
    crc = 0
    for param in module.parameters():
        crc = zlib.crc32(param.detach().cpu().contiguous().numpy().tobytes(), crc)
    return crc


def check_in_sync(runtime: Runtime, module: torch.nn.Module) -> None:
    """Raise if the ranks' parameters differ (a DDP bug would make every later checkpoint meaningless)."""
    if not runtime.distributed:
        return
    sums: list[int | None] = [None] * runtime.world_size
    dist.all_gather_object(sums, parameters_checksum(module))
    if len(set(sums)) != 1:
        raise RuntimeError(f"DDP ranks hold different weights (checksums {sums}); training state is inconsistent")
