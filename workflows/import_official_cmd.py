"""`p2g import-official OFFICIAL.pth --out CKPT`: convert a released ContinuousSR checkpoint to ours."""

from __future__ import annotations

from pathlib import Path

import click

from sr_model.networks.presets import OFFSET_INPUTS, RELEASED_OFFSET_INPUT


@click.command("import-official")
@click.argument("official", metavar="OFFICIAL.pth", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Checkpoint to write (.pt).")
@click.option(
    "--offset-input",
    type=click.Choice(OFFSET_INPUTS),
    default=RELEASED_OFFSET_INPUT,
    show_default=True,
    help="Offset head input: raw features (upstream 482ec14, what the released model used) or "
    "leaky_relu features (upstream refactor 2521c53 and later).",
)
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
def command(official: Path, out: Path, offset_input: str, force: bool) -> None:
    """Import an official ContinuousSR checkpoint (SwinIR or HAT encoder) with the official dictionary."""
    from sr_model.files.official_import import import_official  # imports the model stack only when used

    summary = import_official(official, out, offset_input=offset_input, overwrite=force)
    c = summary.config_overrides
    click.echo(
        f"{summary.path}  {summary.encoder} encoder (embed {c['embed_dim']}, depths "
        f"{'x'.join(map(str, c['depths']))}, window {c['window_size']}), "
        f"{summary.num_parameters / 1e6:.2f}M parameters, offset head input: {offset_input}"
    )
