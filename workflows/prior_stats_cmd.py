"""`p2g prior-stats --store STORE --out DIR`: prior statistics, plots and the covariance dictionary (stage 2)."""

from __future__ import annotations

import math
from pathlib import Path

import click

from workflows.options import FINITE_FLOAT

#: dgp_fitting.dictionary_sampling's METHODS, SPACINGS and DEFAULT_SIZE, repeated so that `--help` does not import
#: dask and zarr (tested).
METHODS = ("grid", "sample")
SPACINGS = ("linear", "quantile")
DEFAULT_SIZE = 730


def parse_quantiles(text: str) -> tuple[float, float]:
    """'0.5,99.5' (percent) -> (0.005, 0.995)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        low, high = (float(p) / 100 for p in parts)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"expected two percentages LOW,HIGH such as 0.5,99.5, got {text!r}") from None
    return low, high


@click.command("prior-stats")
@click.option("--store", required=True, type=click.Path(path_type=Path), help="Prior store written by fit-prior.")
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for summary.json/.md, dictionary.npy/.json and the plots (overwritten).",
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default="grid",
    show_default=True,
    help="grid: n values per element over the quantile interval, all combinations, plus the zero "
    "kernel; sample: kernels drawn from the fitted normal.",
)
@click.option(
    "--size",
    default=DEFAULT_SIZE,
    show_default=True,
    help="Kernels in the dictionary (grid: n^3 + 1, e.g. 344 or 730).",
)
@click.option("--min-psnr", type=FINITE_FLOAT, help="Only use crops whose fitted PSNR reaches this (dB).")
@click.option(
    "--quantiles",
    "quantiles",
    default="0.5,99.5",
    show_default=True,
    callback=lambda c, p, v: parse_quantiles(v),
    help="Quantile interval LOW,HIGH (percent) the dictionary spans.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of --method sample.")
@click.option(
    "--spacing",
    type=click.Choice(SPACINGS),
    default="linear",
    show_default=True,
    help="Grid values evenly spaced in value, or at evenly spaced quantiles.",
)
@click.option(
    "--reuse-stats", is_flag=True, help="Build the dictionary and plots from the statistics already in the store."
)
@click.option(
    "--scheduler",
    help="Address of an existing Dask scheduler (tcp://host:8786) to compute on; its "
    "workers must see the store at the same path. Default: threads on this machine.",
)
@click.option("--threads", type=click.IntRange(min=1), help="Local threads (default: one per core).")
def command(store, out, method, size, min_psnr, quantiles, seed, spacing, reuse_stats, scheduler, threads) -> None:
    """Statistics of the fitted covariances in STORE, the covariance dictionary derived from them, and plots.

    Statistics and dictionary are written into the store (stats/) and into --out; reruns give identical
    numbers and overwrite the plots.
    """
    from dgp_fitting.prior_report import run_prior_stats

    result = run_prior_stats(
        store,
        out,
        method=method,
        size=size,
        min_psnr=min_psnr,
        quantiles=quantiles,
        seed=seed,
        spacing=spacing,
        reuse_stats=reuse_stats,
        scheduler=scheduler,
        threads=threads,
    )
    for line in result.lines():
        click.echo(line)
