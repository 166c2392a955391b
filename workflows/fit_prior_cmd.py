"""`p2g fit-prior IMAGES... --store STORE`: fit every crop of a photo corpus to a Gaussian field (stage 1)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from dgp_fitting.clusters import CLUSTER_KINDS, cluster_spec, job_script
from dgp_fitting.fit_losses import FIT_LOSSES
from workflows.options import POSITIVE_FLOAT, device_option

#: The names of dgp_fitting.fitting.FIT_PRESETS, repeated so that `--help` does not import torch (tested).
FIT_PRESET_NAMES = ("demo", "fast", "quality")


class BatchSize(click.ParamType):
    """A positive number of crops, or `auto`."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, int):
            return value
        try:
            number = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number of crops nor 'auto'", param, ctx)
        if number < 1:
            self.fail(f"needs at least 1 crop, got {number}", param, ctx)
        return number


@click.command("fit-prior")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--store",
    "store",
    required=True,
    type=click.Path(path_type=Path),
    help="Zarr store to create, or to resume if it exists.",
)
@click.option("--crop", default=256, show_default=True, help="Crop side in HR pixels (multiple of 4).")
@click.option("--stride", type=int, help="Grid stride between crops [default: the crop size].")
@click.option("--crops-per-image", type=int, help="Instead of a grid: this many random crops per image.")
@click.option(
    "--preset",
    type=click.Choice(FIT_PRESET_NAMES),
    default="quality",
    show_default=True,
    help="Fitting settings: quality (real runs), fast (quality's PSNR in 70% of its steps) or demo "
    "(CPU-friendly); the flags below override it.",
)
@click.option("--steps", type=int, help="Optimisation steps per crop [default: the preset's].")
@click.option("--lr", type=POSITIVE_FLOAT, help="Adam learning rate of positions and shapes [default: the preset's].")
@click.option("--color-lr", type=POSITIVE_FLOAT, help="Adam learning rate of colours [default: the preset's].")
@click.option("--loss", type=click.Choice(list(FIT_LOSSES)), help="Fitting loss [default: the preset's].")
@click.option("--seed", default=0, show_default=True, help="Seed of random crops and of every crop's start.")
@click.option(
    "--batch",
    type=BatchSize(),
    help="Crops per task, per fitting batch and per store chunk, or `auto` (sized to a worker's device "
    "memory: hundreds of crops on a large GPU); at most what that memory holds [default: the store's, else 8].",
)
@device_option()
@click.option("--cluster", "kind", type=click.Choice(CLUSTER_KINDS), help="Where to run [default: local].")
@click.option("--scheduler", help="Address of an existing Dask scheduler (tcp://host:8786).")
@click.option("--cluster-config", type=click.Path(path_type=Path), help="YAML file of cluster settings.")
@click.option("--workers", type=int, help="Local worker processes, one thread each [default: 1].")
@click.option("--jobs", type=int, help="SLURM/PBS jobs or Kubernetes pods.")
@click.option("--cores", type=int, help="Cores per job/pod.")
@click.option("--memory", help="Memory per job/pod, e.g. 16GB.")
@click.option("--gpus", type=int, help="GPUs per job/pod (one worker process per GPU).")
@click.option("--walltime", help="Job walltime, e.g. 02:00:00.")
@click.option("--queue", help="Batch queue / partition.")
@click.option(
    "--interface",
    help="Network interface for the scheduler and SLURM/PBS workers (ib0; lo when all jobs run on this host) "
    "[default: the outward address].",
)
@click.option("--print-job-script", is_flag=True, help="Print the SLURM/PBS job script and exit.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.option(
    "--refit-changed",
    is_flag=True,
    help="On resume, refit the crops of images whose contents changed (default: refuse to resume).",
)
def command(
    images,
    store,
    crop,
    stride,
    crops_per_image,
    preset,
    steps,
    lr,
    color_lr,
    loss,
    seed,
    batch,
    device,
    cluster_config,
    print_job_script,
    progress,
    refit_changed,
    **cluster_flags,  # --cluster, --scheduler, --workers, --jobs ...: ClusterSpec fields, given or None
) -> None:
    """Fit crops of IMAGES (files or folders, recursive) to Gaussian fields, into the prior store STORE.

    Rerunning the same command resumes: finished chunks are skipped, the rest fitted; damaged chunks of the
    store are refitted, and images changed since their crops were fitted are refused (see --refit-changed).
    """
    from dgp_fitting.fitting import FIT_PRESETS
    from dgp_fitting.prior_job import run_prior_job

    spec = cluster_spec(cluster_config, **cluster_flags)
    if print_job_script:
        if spec.kind not in ("slurm", "pbs"):
            raise ValueError("--print-job-script needs --cluster slurm or pbs")
        click.echo(job_script(spec))
        return
    chosen = {"steps": steps, "lr": lr, "color_lr": color_lr, "loss": loss, "seed": seed}
    fit = dataclasses.replace(FIT_PRESETS[preset], **{k: v for k, v in chosen.items() if v is not None})
    summary = run_prior_job(
        images,
        store,
        crop=crop,
        stride=stride,
        crops_per_image=crops_per_image,
        fit=fit,
        batch=batch,
        cluster=spec,
        device=device,
        progress=progress,
        echo=click.echo,
        refit_changed=refit_changed,
    )
    for line in summary.lines():
        click.echo(line)
    if summary.errors:
        raise click.ClickException(f"{len(summary.errors)} chunk(s) kept failing; rerun to retry them")
