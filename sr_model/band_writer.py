"""Render a field straight to an image file, band of rows by band of rows, so the output size is not bounded
by memory.

Each band is rendered (`render(..., rows=(r0, r1))`), clipped and rounded to 8 or 16 bits, and stored in a pixel
array that lives in memory for ordinary outputs and in a memory-mapped scratch file beside the output for large
ones; the array is then encoded by OpenCV (PNG, JPEG) or tifffile (TIFF, BigTIFF past 4 GiB). Both read it
sequentially, so a memory-mapped array is paged through rather than loaded. The encoded file is written under a
temporary name and renamed, and scratch files are removed whatever happens: a failed or interrupted render never
leaves a partial image.

Before anything is allocated the output is checked against the format's size limits and the free disk space.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from gaussian_field import GaussianField, render
from gaussian_field.image_io import quantize
from gaussian_field.render import resolve_geometry

#: Float working set of one rendered band (bytes); the band height follows from the output width.
BAND_BYTES = 64 * 2**20
#: Pixel arrays up to this size stay in memory; larger ones are memory-mapped scratch files.
IN_MEMORY_BYTES = 512 * 2**20


@dataclass(frozen=True)
class WrittenImage:
    """An image `render_to_file` wrote: its size (H, W), the render time and the quantise + encode time."""

    path: Path
    size: tuple[int, int]
    render_seconds: float
    write_seconds: float


@dataclass(frozen=True)
class OutputFormat:
    name: str
    bits: tuple[int, ...]
    max_side: int  # the encoder's limit on width and height
    bgr: bool  # OpenCV takes BGR; tifffile RGB


#: Output formats by suffix. PNG: libpng's default user limit of 1,000,000 px per side (OpenCV keeps it);
#: JPEG: 65,500 px per side; TIFF: 2^32 - 1.
FORMATS = {
    ".png": OutputFormat("PNG", (8, 16), 1_000_000, True),
    ".jpg": OutputFormat("JPEG", (8,), 65_500, True),
    ".jpeg": OutputFormat("JPEG", (8,), 65_500, True),
    ".tif": OutputFormat("TIFF", (8, 16), 2**32 - 1, False),
    ".tiff": OutputFormat("TIFF", (8, 16), 2**32 - 1, False),
}
JPEG_QUALITY = 95


class OutputTooLargeError(ValueError):
    """An output that the format or the disk cannot hold; the message says which limit and what to do."""


def output_format(path: str | os.PathLike, bits: int) -> OutputFormat:
    """The format for `path`'s suffix, checked against the bit depth."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot write {Path(path).name}: unknown image suffix {suffix!r}; use .png, .jpg or .tif")
    fmt = FORMATS[suffix]
    if bits not in fmt.bits:
        raise ValueError(f"{fmt.name} cannot hold {bits}-bit pixels; use {' or '.join(map(str, fmt.bits))} bits"
                         + (" or a .png/.tif output" if bits == 16 else ""))
    return fmt


def pixel_bytes(height: int, width: int, bits: int) -> int:
    return height * width * 3 * (bits // 8)


def check_output(path: str | os.PathLike, height: int, width: int, bits: int,
                 in_memory_bytes: int = IN_MEMORY_BYTES) -> bool:
    """Refuse an output the format or the disk cannot hold; returns True when its pixels go to a scratch file."""
    fmt = output_format(path, bits)
    name = Path(path).name
    if max(height, width) > fmt.max_side:
        raise OutputTooLargeError(
            f"output {name} would be {width}x{height} px, over the {fmt.name} limit of {fmt.max_side} px per side; "
            f"ask for a smaller --scale/--size" + ("" if fmt.name == "TIFF" else " or write .tif"))
    raw = pixel_bytes(height, width, bits)
    scratch = raw > in_memory_bytes
    needed = raw * (2 if scratch else 1)  # the encoded file is at most about the raw size (PNG, TIFF)
    folder = Path(path).absolute().parent
    while not folder.exists():  # the output folder may not exist yet: its nearest existing parent's disk
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise OutputTooLargeError(
            f"output {name} would be {width}x{height} px and needs about {needed / 2**30:.1f} GiB on disk, but "
            f"only {free / 2**30:.1f} GiB is free there; ask for a smaller --scale/--size")
    return scratch


def band_height(width: int, itemsize: int, budget: int = BAND_BYTES) -> int:
    """Rows per band so that one band's float render stays within `budget` bytes."""
    return max(1, budget // max(1, 3 * width * itemsize))


def render_to_file(
    field: GaussianField,
    path: str | os.PathLike,
    scale: float | Sequence[float] | None = None,
    size: Sequence[int] | None = None,
    bits: int = 8,
    backend: str = "auto",
    band_bytes: int = BAND_BYTES,
    in_memory_bytes: int = IN_MEMORY_BYTES,
) -> WrittenImage:
    """Render one field (batch of 1) at `scale` or to `size` (H, W) into `path` (see the module doc)."""
    if not isinstance(field, GaussianField) or field.batch_size != 1:
        raise ValueError("render_to_file renders one field (a GaussianField with batch size 1)")
    (s_h, s_w), (height, width) = resolve_geometry(field.lr_size, size, scale)
    path = Path(path)
    fmt = output_format(path, bits)
    scratch = check_output(path, height, width, bits, in_memory_bytes)
    dtype = np.uint8 if bits == 8 else np.uint16
    scratch_path = path.with_name(f".{path.name}.pixels.partial")
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    pixels = None
    try:
        if scratch:
            pixels = np.lib.format.open_memmap(scratch_path, mode="w+", dtype=dtype, shape=(height, width, 3))
        else:
            pixels = np.empty((height, width, 3), dtype=dtype)
        step = band_height(width, field.means.element_size(), band_bytes)
        render_seconds = 0.0
        start = time.perf_counter()
        with torch.no_grad():
            for r0 in range(0, height, step):
                r1 = min(height, r0 + step)
                band_start = time.perf_counter()
                band = render(field, size=(height, width), scale=(s_h, s_w), rows=(r0, r1), backend=backend)
                band = band[0].cpu()  # waits for the device
                render_seconds += time.perf_counter() - band_start
                levels = quantize(band, bits)
                pixels[r0:r1] = levels[..., ::-1] if fmt.bgr else levels
        _encode(pixels, tmp, fmt)
        os.replace(tmp, path)
        written = WrittenImage(path, (height, width), render_seconds, time.perf_counter() - start - render_seconds)
    finally:
        del pixels  # closes the memory map before its file is removed
        tmp.unlink(missing_ok=True)
        scratch_path.unlink(missing_ok=True)
    return written


def _encode(pixels: np.ndarray, tmp: Path, fmt: OutputFormat) -> None:
    if fmt.name == "TIFF":
        import tifffile

        tifffile.imwrite(tmp, pixels, photometric="rgb", bigtiff=pixels.nbytes > 2**32 - 2**25)
        return
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if fmt.name == "JPEG" else []
    try:
        name = str(tmp).encode("utf-8")
    except UnicodeEncodeError:  # OpenCV crashes on such names: encode in memory, write with Python
        name = None
    if name is None:
        ok, encoded = cv2.imencode(tmp.suffix, pixels, params)
        if ok:
            tmp.write_bytes(encoded.tobytes())
    else:
        ok = cv2.imwrite(str(tmp), pixels, params)
    if not ok:
        raise OSError(f"OpenCV could not write {tmp.name} ({fmt.name}, {pixels.shape[1]}x{pixels.shape[0]} px)")
