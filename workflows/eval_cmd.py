"""`p2g eval [--checkpoint MODEL|bicubic] --images DIR... --scales 2,3,4`: PSNR/SSIM against the bicubic baseline."""

from __future__ import annotations

from pathlib import Path

import click

from workflows.options import device_option, resolve_device


def _progress(items):
    from tqdm import tqdm

    return tqdm(items, desc="eval", unit="image", disable=None, leave=False)


@click.command("eval")
@click.argument("more_images", nargs=-1, type=click.Path(path_type=Path), metavar="[DIR...]")
@click.option(
    "--checkpoint",
    help="Model file (.safetensors export, .pt checkpoint, official .pth), or 'bicubic' "
    "for the baseline alone [default: the bundled lite weights].",
)
@click.option(
    "--images",
    "images",
    multiple=True,
    type=click.Path(path_type=Path),
    help="HR image folder (searched recursively) or file; repeatable, or list several after it.",
)
@click.option(
    "--scales",
    default="2,3,4",
    show_default=True,
    help="Comma-separated scales, e.g. 2,3,4,6,8,12 (with --lr-images: only these of the files' scales).",
)
@click.option(
    "--lr-images",
    "lr_images",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Existing LR images (folder, recursive, or file; repeatable) instead of MATLAB bicubic LR: each "
    "paired with the HR image of its name (0801.png or 0801x4.png), the scale from the sizes.",
)
@click.option(
    "--save-images",
    "save_dir",
    type=click.Path(path_type=Path),
    help="Write every super-resolved image here as NAME_xS.png (the model's; bicubic's without one).",
)
@click.option(
    "--protocol",
    type=click.Choice(["benchmark", "div2k"]),
    default="benchmark",
    show_default=True,
    help="benchmark: Y channel, shave = scale; div2k: RGB, shave = scale + 6.",
)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Write per_image.csv and summary.md here.")
@device_option()
@click.pass_context
def command(
    ctx: click.Context,
    more_images,
    checkpoint: str | None,
    images,
    scales: str,
    lr_images,
    save_dir: Path | None,
    protocol: str,
    out_dir: Path | None,
    device: str,
) -> None:
    """Evaluate a checkpoint (and the bicubic baseline) on HR images: LR by MATLAB bicubic, BasicSR PSNR/SSIM.

    HR images are mod-cropped to a multiple of each scale; per-image results go to OUT/per_image.csv, the
    summary table (mean per scale, encode and render time) to stdout and OUT/summary.md. Benchmark folders as
    they are: --images DIV2K/HR --lr-images DIV2K/LR_bicubic/X4.
    """
    from click.core import ParameterSource

    from sr_model.api import check_device
    from sr_model.evaluation.evaluate import evaluate, load_eval_model, parse_scales, summary_markdown, write_report
    from sr_model.files.model_files import load_file

    sources = list(images) + list(more_images)
    if not sources:
        raise click.UsageError("give HR images with --images DIR")
    scale_list = parse_scales(scales)
    if lr_images and ctx.get_parameter_source("scales") == ParameterSource.DEFAULT:
        scale_list = None  # every scale the LR files have
    device = resolve_device(device)
    check_device(device)  # before any image is read, also for the bicubic baseline
    if checkpoint is None:
        loaded = load_file(None, check_device(device))
        click.echo(loaded.note, err=True)
        model, checkpoint = loaded.model, loaded.origin
    else:
        model = load_eval_model(checkpoint, device)
    rows = evaluate(
        sources,
        scale_list,
        protocol,
        model,
        device,
        progress=_progress,
        lr_sources=lr_images or None,
        save_dir=save_dir,
        notice=lambda line: click.echo(f"notice: {line}", err=True),
    )
    title = "bicubic baseline" if model is None else f"{checkpoint} vs bicubic"
    lr_from = "from the --lr-images files" if lr_images else ""
    click.echo(summary_markdown(rows, protocol, title, lr_from), nl=False)
    if save_dir is not None:
        click.echo(f"saved {len({(r.image, r.scale) for r in rows})} super-resolved image(s) in {save_dir}")
    if out_dir is not None:
        for path in write_report(rows, out_dir, protocol, title, lr_from):
            click.echo(f"wrote {path}")
