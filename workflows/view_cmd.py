"""`p2g view IMAGE|FIELD.npz`: encode once (or load a field), then zoom and pan it live in the browser."""

from __future__ import annotations

import threading
import webbrowser
from pathlib import Path

import click

from workflows.cli import Terminated
from workflows.options import device_option, resolve_device


def size_text(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count / 2**10:.1f} KiB"


def describe(content, url: str) -> list[str]:
    """The lines printed before serving."""
    header = content.packed.header()
    lines = [
        f"{content.info.get('title', 'field')}  {header['w']}x{header['h']} LR, {header['count']} Gaussians, "
        f"sent as {header['dtype']} ({size_text(len(content.packed.data))})"
    ]
    if "encode_ms" in content.info:
        lines[0] += f", encode {content.info['encode_ms']:.1f} ms"
    if content.info.get("note"):
        lines.append(f"notice: {content.info['note']}")
    lines.append(f"viewer at {url}  (Ctrl-C to stop)")
    return lines


@click.command("view")
@click.argument("source", metavar="IMAGE|FIELD.npz", type=click.Path(path_type=Path))
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="Model file that encodes IMAGE (export, checkpoint or official .pth) [default: the bundled lite weights].",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port on 127.0.0.1; 0 picks a free one.",
)
@click.option("--no-browser", is_flag=True, help="Only print the URL; do not open a browser.")
@device_option()
@click.option("--tile", type=int, metavar="N", help="Encode on tiles of N x N LR pixels (for large images).")
@click.option(
    "--lr",
    "lr_image",
    type=click.Path(path_type=Path),
    metavar="IMAGE",
    help="With a FIELD.npz: the LR image for the bicubic half [default: the field rendered at x1].",
)
def command(
    source: Path,
    checkpoint: Path | None,
    port: int,
    no_browser: bool,
    device: str,
    tile: int | None,
    lr_image: Path | None,
) -> None:
    """Show IMAGE (encoded once by the model) or a saved FIELD.npz in the browser, rendered live by WebGL2.

    Wheel or pinch zooms, dragging pans, the split view shows bicubic of the same LR beside the field, and
    "save view" writes the view as a PNG. The server listens on 127.0.0.1 only and serves nothing but the page
    and this field.
    """
    from workflows.viewer.content import load_view_content
    from workflows.viewer.server import ViewerServer

    content = load_view_content(source, checkpoint, resolve_device(device), tile, lr_image)
    server = ViewerServer(content, port)
    for line in describe(content, server.url):
        click.echo(line)
    if not no_browser:
        threading.Timer(0.2, webbrowser.open, (server.url,)).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt as err:
        if isinstance(err, Terminated):  # SIGTERM: exit 143 as every verb does; Ctrl-C is the way to stop (exit 0)
            err.args = ("viewer stopped",)
            raise
        click.echo("viewer stopped")
    finally:
        server.server_close()
