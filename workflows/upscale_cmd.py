"""`p2g upscale INPUT... [--checkpoint MODEL] --out DIR --scale S ...`: encode each image once, render every scale."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from workflows.options import backend_option, device_option, parse_scale, parse_size, resolve_device, scale_tag

if TYPE_CHECKING:
    from sr_model.inference.upscale_files import ImageResult, RenderRequest

FORMAT_SUFFIXES = {"png": ".png", "jpg": ".jpg", "tif": ".tif", "webp": ".webp"}


def render_requests(scales, sizes) -> list[RenderRequest]:
    """Requests from --scale and --size texts, duplicates dropped; bad values raise a one-line ValueError."""
    from sr_model.inference.upscale_files import RenderRequest

    try:
        parsed = [RenderRequest(scale_tag(s), scale=s) for s in map(parse_scale, scales)]
        parsed += [RenderRequest(f"{w}x{h}", size=(h, w)) for h, w in map(parse_size, sizes)]
    except click.BadParameter as err:
        raise ValueError(err.message) from None
    unique = {}
    for request in parsed:
        unique.setdefault(request.tag, request)
    return list(unique.values())


def describe(result: ImageResult) -> list[str]:
    """The lines printed for one image."""
    h, w = result.lr_size
    tiles = f"{result.tiles} tiles" if result.tiles > 1 else "1 tile"
    lines = [f"{result.source}  {w}x{h}  encode {result.encode_seconds * 1000:.1f} ms ({tiles})"]
    for out in result.outputs:
        lines.append(
            f"  {out.path}  {out.size[1]}x{out.size[0]}  render {out.render_seconds * 1000:.1f} ms, "
            f"write {out.write_seconds * 1000:.1f} ms"
        )
    if result.field_path is not None:
        lines.append(f"  {result.field_path}  field")
    lines += [f"  notice: {notice}" for notice in result.notices]
    return lines


def _progress(items):
    from tqdm import tqdm

    return tqdm(items, desc="upscale", unit="image", disable=None, leave=False)


def _tile_progress(items):
    from tqdm import tqdm

    return tqdm(items, desc="encode", unit="tile", disable=None, leave=False)


def _print(result: ImageResult) -> None:
    from tqdm import tqdm

    for line in describe(result):
        tqdm.write(line)


@click.command("upscale")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="INPUT...")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="Model file: a `p2g export` .safetensors, a checkpoint (.pt) or an official ContinuousSR .pth "
    "[default: the bundled lite weights].",
)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option(
    "--scale",
    "scales",
    multiple=True,
    metavar="S|HxW",
    help="Scale s (any positive number) or HxW (s_h x s_w, e.g. 3x5); repeatable.",
)
@click.option("--size", "sizes", multiple=True, metavar="WxH", help="Exact output size WxH; repeatable.")
@click.option("--save-field", is_flag=True, help="Also write IMAGE_field.npz, for `p2g render`.")
@device_option()
@backend_option()
@click.option("--tile", type=int, metavar="N", help="Encode on tiles of N x N LR pixels (for large images).")
@click.option(
    "--tile-context",
    type=int,
    metavar="C",
    help="LR pixels of context around each tile [default: the encoder's receptive radius: exact].",
)
@click.option(
    "--bits",
    type=click.Choice(["auto", "8", "16", "32"]),
    default="auto",
    show_default=True,
    help="Bits per channel: auto keeps the input's where the format holds it; 16: PNG or TIFF; 32: float TIFF.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(sorted(FORMAT_SUFFIXES)),
    default="png",
    show_default=True,
    help="Output file format (all keep the input's ICC profile; png, tif, webp its transparency).",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    metavar="1-100",
    help="JPEG/WebP quality [default: 95; WebP at 100 is lossless].",
)
@click.option(
    "--skip-existing",
    is_flag=True,
    help="Leave outputs already in OUT alone (outputs are written whole or not at all): resumes a batch.",
)
def command(
    inputs,
    checkpoint: Path | None,
    out_dir: Path,
    scales,
    sizes,
    save_field: bool,
    device: str,
    backend: str,
    tile: int | None,
    tile_context: int | None,
    bits: str,
    fmt: str,
    quality: int | None,
    skip_existing: bool,
) -> None:
    """Super-resolve images: one encode per INPUT (file or folder), one render per --scale/--size.

    Writes OUT/NAME_x4.png, OUT/NAME_x3x5.png, OUT/NAME_640x480.png ... and prints the encode time and each
    render time. Large images: --tile N encodes overlapping tiles (stitched exactly) and outputs are rendered
    to disk in bands; an encode that would not fit in memory is refused with a --tile that does.
    """
    from sr_model.api import check_device
    from sr_model.files.model_files import load_file
    from sr_model.inference.upscale_files import upscale_files

    requests = render_requests(scales, sizes)
    loaded = load_file(checkpoint, check_device(resolve_device(device)))
    if loaded.bundled:
        click.echo(loaded.note, err=True)
    model = loaded.model
    results = upscale_files(
        model,
        inputs,
        out_dir,
        requests,
        suffix=FORMAT_SUFFIXES[fmt],
        bits=None if bits == "auto" else int(bits),
        quality=quality,
        save_field=save_field,
        tile=tile,
        context=tile_context,
        backend=backend,
        progress=_progress,
        tile_progress=_tile_progress,
        on_result=_print,
        field_metadata={"checkpoint": loaded.path.name},
        skip_existing=skip_existing,
    )
    if skip_existing:
        click.echo(f"--skip-existing: {len(results)} image(s) encoded, the others' outputs were all in {out_dir}")
