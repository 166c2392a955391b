"""`p2g eval --checkpoint CKPT|bicubic --images DIR... --scales 2,3,4`: PSNR/SSIM against the bicubic baseline."""

from __future__ import annotations

from pathlib import Path

import click

from sr_model.api import check_device
from sr_model.evaluation import evaluate, load_eval_model, parse_scales, summary_markdown, write_report


def _progress(items):
    from tqdm import tqdm

    return tqdm(items, desc="eval", unit="image", disable=None, leave=False)


@click.command("eval")
@click.argument("more_images", nargs=-1, type=click.Path(path_type=Path), metavar="[DIR...]")
@click.option("--checkpoint", required=True, help="Model checkpoint, or 'bicubic' for the baseline alone.")
@click.option("--images", "images", multiple=True, type=click.Path(path_type=Path),
              help="HR image folder (searched recursively) or file; repeatable, or list several after it.")
@click.option("--scales", default="2,3,4", show_default=True, help="Comma-separated scales, e.g. 2,3,4,6,8,12.")
@click.option("--protocol", type=click.Choice(["benchmark", "div2k"]), default="benchmark", show_default=True,
              help="benchmark: Y channel, shave = scale; div2k: RGB, shave = scale + 6.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Write per_image.csv and summary.md here.")
@click.option("--device", default="cpu", show_default=True, help="Device for the model: cpu, cuda, cuda:1 ...")
def command(more_images, checkpoint: str, images, scales: str, protocol: str, out_dir: Path | None, device: str) -> None:
    """Evaluate a checkpoint (and the bicubic baseline) on HR images: LR by MATLAB bicubic, BasicSR PSNR/SSIM.

    HR images are mod-cropped to a multiple of each scale; per-image results go to OUT/per_image.csv, the
    summary table (mean per scale, encode and render time) to stdout and OUT/summary.md.
    """
    sources = list(images) + list(more_images)
    if not sources:
        raise click.UsageError("give HR images with --images DIR")
    scale_list = parse_scales(scales)
    check_device(device)  # before any image is read, also for the bicubic baseline
    model = load_eval_model(checkpoint, device)
    rows = evaluate(sources, scale_list, protocol, model, device, progress=_progress)
    title = "bicubic baseline" if model is None else f"{checkpoint} vs bicubic"
    click.echo(summary_markdown(rows, protocol, title), nl=False)
    if out_dir is not None:
        for path in write_report(rows, out_dir, protocol, title):
            click.echo(f"wrote {path}")
