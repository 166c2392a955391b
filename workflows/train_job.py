"""`p2g train --print-job-script`: the SLURM batch script that runs this very training under `srun`.

One task per GPU (or `workers` tasks per node on CPU) across `jobs` nodes; `srun` starts them and
`sr_model.training.distributed` turns SLURM's rank variables into a DDP group, so the script needs no torchrun.
The resources come from the same cluster YAML as `p2g fit-prior --cluster-config`.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence

from dgp_fitting.clusters import ClusterSpec, slurm_memory

#: flags of `p2g train` that shape the script rather than the run (dropped from the srun line), with their arity
SCRIPT_FLAGS = {"--print-job-script": 0, "--cluster-config": 1}


def run_arguments(argv: Sequence[str]) -> list[str]:
    """The `train` arguments of this command line, without the script's own flags."""
    args = list(argv)
    args = args[args.index("train") + 1 :] if "train" in args else args
    kept, skip = [], 0
    for arg in args:
        if skip:
            skip -= 1
            continue
        name = arg.split("=", 1)[0]
        if name in SCRIPT_FLAGS:
            skip = SCRIPT_FLAGS[name] if "=" not in arg else 0
            continue
        kept.append(arg)
    return kept


def train_job_script(spec: ClusterSpec, argv: Sequence[str] | None = None) -> str:
    """A SLURM script for `spec` (jobs = nodes) whose srun line is this process's `p2g train` command."""
    if spec.kind != "slurm":
        raise ValueError(f"--print-job-script writes SLURM scripts; the cluster config says {spec.kind!r}")
    tasks = spec.gpus or spec.workers
    lines = ["#!/usr/bin/env bash", "#SBATCH --job-name=p2g-train", f"#SBATCH --nodes={spec.jobs}"]
    lines.append(f"#SBATCH --ntasks-per-node={tasks}")
    if spec.gpus:
        lines.append(f"#SBATCH --gpus-per-node={spec.gpus}")
    if spec.cores:
        lines.append(f"#SBATCH --cpus-per-task={max(1, spec.cores // tasks)}")
    if spec.memory:
        lines.append(f"#SBATCH --mem={slurm_memory(spec.memory)}")
    for flag, value in (("--time", spec.walltime), ("--partition", spec.queue), ("--account", spec.account)):
        if value:
            lines.append(f"#SBATCH {flag}={value}")
    lines.append("# SIGTERM 2 minutes before the time limit: last.pt is saved; rerun with --resume to continue")
    lines.append("#SBATCH --signal=TERM@120")
    arguments = run_arguments(sys.argv if argv is None else argv)
    lines += ["", "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}"]
    lines.append(shlex.join(["srun", sys.executable, "-m", "workflows.cli", "train", *arguments]))
    return "\n".join(lines) + "\n"
