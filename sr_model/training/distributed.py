"""Where this training process runs: device, and (under `torchrun`) its rank in a DDP group.

`torchrun --nproc_per_node N` (or a multi-node launch) sets WORLD_SIZE, RANK and LOCAL_RANK; `srun -n N p2g train`
sets SLURM's own variables instead, which `launcher_environment` translates (the first node of the step is the
rendezvous, on a port derived from the job ID). `setup` then joins the process group (NCCL on CUDA, gloo on CPU)
and puts each rank on its own GPU (cuda:LOCAL_RANK). A plain `python`/`p2g` call, or a batch script's own
process, is a world of one and needs no process group.
"""

from __future__ import annotations

import os
import re
import subprocess
import zlib
from collections.abc import Mapping
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


def rank_device(name: str, local_rank: int = 0) -> torch.device:
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


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list ("gpu[07-09,12],cpu1" -> "gpu07"), by `scontrol` where it exists."""
    try:
        done = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout.split()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        match = re.match(r"([^,\[]+)(?:\[(\d+))?", nodelist)
        if match is None:
            raise ValueError(f"cannot read the SLURM node list {nodelist!r}") from None
        return match.group(1) + (match.group(2) or "")


def launcher_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The torchrun variables for a process that `srun` started (none when torchrun's are set or not under srun).

    Only an `srun` step sets SLURM_STEP_NUM_TASKS: a batch script's own process (SLURM_NTASKS=2, SLURM_PROCID=0)
    stays a world of one instead of waiting for a rank that never comes.
    """
    if "WORLD_SIZE" in env or int(env.get("SLURM_STEP_NUM_TASKS", "1")) <= 1:
        return {}
    return {
        "WORLD_SIZE": env["SLURM_STEP_NUM_TASKS"],
        "RANK": env["SLURM_PROCID"],
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": env.get("MASTER_ADDR") or first_host(env.get("SLURM_STEP_NODELIST", "localhost")),
        "MASTER_PORT": env.get("MASTER_PORT") or str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000),
    }


def setup(device: str = "auto") -> Runtime:
    """Join the torchrun (or srun) process group if launched by one, and pick this rank's device."""
    os.environ.update(launcher_environment(os.environ))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = rank_device(device, local_rank)
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
