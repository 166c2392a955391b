"""What `p2g view` shows: a saved field, or an image encoded once, with the LR image the bicubic half uses."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import torch

from gaussian_field import GaussianField, load_field, render
from gaussian_field.image_io import quantize, read_image
from workflows.viewer.packing import pack_field
from workflows.viewer.server import ViewerContent


def png_bytes(rgb_uint8: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb_uint8, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def load_image_model(checkpoint: Path | None, device: str):
    """`sr_model.api.load_model(checkpoint)`: the bundled lite weights when no checkpoint is given."""
    from sr_model.api import load_model

    return load_model(checkpoint, device=device)


def content_for_field(field: GaussianField, lr_rgb: np.ndarray, info: dict) -> ViewerContent:
    """Pack a field beside its LR image (float RGB HxWx3 in [0, 1]) for the server."""
    if lr_rgb.shape[:2] != (field.h, field.w):
        raise ValueError(
            f"the LR image is {lr_rgb.shape[1]}x{lr_rgb.shape[0]} but the field covers "
            f"{field.w}x{field.h} LR pixels; give the LR image the field was made from"
        )
    return ViewerContent(pack_field(field), png_bytes(quantize(lr_rgb, 8)), info)


def load_view_content(
    source: Path,
    checkpoint: Path | None = None,
    device: str = "cpu",
    tile: int | None = None,
    lr_image: Path | None = None,
) -> ViewerContent:
    """A FIELD.npz as saved, or an image encoded once by the model; bad input raises a one-line error.

    The bicubic half of the page shows the image itself, or for a field `lr_image` (same size as the field's
    lattice), else the field rendered at x1.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"nothing to view: {source} does not exist")
    if source.is_dir():
        raise IsADirectoryError(f"{source} is a folder; give one image or one FIELD.npz")
    if source.suffix.lower() == ".npz":
        field = load_field(source)
        if field.batch_size != 1:
            raise ValueError(f"{source} holds {field.batch_size} fields; the viewer shows one")
        if lr_image is not None:
            lr, bicubic_of = read_image(lr_image), f"{Path(lr_image).name}"
        else:
            with torch.no_grad():
                lr = render(field, scale=1)[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy()
            bicubic_of = "the field rendered at x1 (no LR image given: --lr)"
        return content_for_field(field, lr, {"title": source.name, "bicubic_of": bicubic_of})
    if lr_image is not None:
        raise ValueError("--lr is for a FIELD.npz; an image is its own LR image")
    lr = read_image(source)
    model = load_image_model(checkpoint, device)
    start = time.perf_counter()
    encoded = model.encode(lr, tile=tile)
    field = encoded.field
    encode_ms = (time.perf_counter() - start) * 1000
    info = {"title": source.name, "bicubic_of": "the LR image", "encode_ms": round(encode_ms, 1)}
    if encoded.note:
        info["note"] = encoded.note
    return content_for_field(field.to("cpu", torch.float32), lr, info)
