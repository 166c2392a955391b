"""`p2g export MODEL OUT.safetensors`: the weights of any model file as a portable, pickle-free export."""

from __future__ import annotations

from pathlib import Path

import click

from sr_model.networks.presets import OFFSET_INPUTS


@click.command("export")
@click.argument("source", metavar="MODEL", type=click.Path(path_type=Path))
@click.argument("out", metavar="OUT.safetensors", type=click.Path(path_type=Path))
@click.option(
    "--offset-input",
    type=click.Choice(OFFSET_INPUTS),
    help="Official .pth only: the offset head's input (as `p2g import-official`) [default: raw].",
)
@click.option("--force", is_flag=True, help="Replace an existing OUT file.")
def command(source: Path, out: Path, offset_input: str | None, force: bool) -> None:
    """Export MODEL (a checkpoint such as best.pt, an official ContinuousSR .pth, or an export) as safetensors.

    Weights only (no optimiser state), with the model config, the covariance dictionary's provenance and the
    source file's name, hash and training step in the metadata. Every loader (upscale, eval, load_model) reads it;
    best.pt / last.pt stay the format to resume training from.
    """
    from sr_model.files.model_files import export_file  # imports the model stack only when used

    summary = export_file(source, out, overwrite=force, offset_input=offset_input)
    click.echo(
        f"{summary.path}  from {summary.kind} {source.name}, {summary.num_parameters / 1e6:.2f}M parameters, "
        f"{summary.size_bytes / 2**20:.2f} MiB"
    )
