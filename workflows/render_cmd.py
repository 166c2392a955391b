"""`p2g render FIELD.npz --scale S ... --out DIR`: render a saved field, one PNG per scale or size."""

from __future__ import annotations

import time
import zipfile
import zlib
from pathlib import Path

import click

from workflows.options import SCALE, SIZE, backend_option, scale_tag


def render_field_file(
    field_path: Path, out_dir: Path, scales=(), sizes=(), backend: str = "auto", bits: int = 8
) -> list[tuple[Path, tuple[int, int], float]]:
    """Render one field file at every scale and size; returns (path, (H, W), seconds) per output."""
    from gaussian_field import load_field, render
    from gaussian_field.image_io import write_image

    if not scales and not sizes:
        raise ValueError("nothing to render: give at least one --scale or --size")
    try:
        field = load_field(field_path)
    except (zipfile.BadZipFile, EOFError, zlib.error) as err:  # truncated or overwritten .npz
        raise ValueError(
            f"{field_path} is not a readable field file ({err}); write it again with "
            "`p2g upscale --save-field` or gaussian_field.save_field"
        ) from None
    if field.batch_size != 1:
        raise ValueError(f"{field_path} holds {field.batch_size} fields; `p2g render` renders one")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    requests = [(scale_tag(s), {"scale": s}) for s in scales]
    requests += [(f"{w}x{h}", {"size": (h, w)}) for h, w in sizes]
    for tag, geometry in requests:
        start = time.perf_counter()
        image = render(field, backend=backend, **geometry)[0]
        seconds = time.perf_counter() - start
        path = write_image(out_dir / f"{field_path.stem}_{tag}.png", image, bits=bits)
        results.append((path, tuple(image.shape[-2:]), seconds))
    return results


@click.command("render")
@click.argument("field_path", metavar="FIELD.npz", type=click.Path(path_type=Path))
@click.option("--scale", "scales", type=SCALE, multiple=True, help="Scale s or HxW (s_h x s_w); repeatable.")
@click.option("--size", "sizes", type=SIZE, multiple=True, help="Output size WxH; repeatable.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
@backend_option("Renderer: auto, torch, or a fast backend.")
@click.option("--bits", type=click.Choice(["8", "16"]), default="8", show_default=True, help="PNG bit depth.")
def command(field_path: Path, scales, sizes, out_dir: Path, backend: str, bits: str) -> None:
    """Render a saved Gaussian field at each scale/size to PNG files."""
    for path, (height, width), seconds in render_field_file(field_path, out_dir, scales, sizes, backend, int(bits)):
        click.echo(f"{path}  {width}x{height}  {seconds * 1000:.1f} ms")
