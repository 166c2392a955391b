"""Render a field straight to an image file, band of rows by band of rows, so the output size is not bounded
by memory.

Each band is rendered (`render(..., rows=(r0, r1))`), clipped and rounded to 8 or 16 bits (or kept as float32 for
a 32-bit TIFF), and stored in a pixel array that lives in memory for ordinary outputs and in a memory-mapped
scratch file beside the output for large ones; an alpha channel, upscaled with bicubic beside the colour field,
is its fourth channel. The array is then encoded by OpenCV (PNG), tifffile (TIFF, BigTIFF past 4 GiB) or Pillow
(JPEG, WebP), with the source's ICC profile (`gaussian_field.image_io.encode_pixels`). OpenCV and tifffile read
it sequentially, so a memory-mapped array is paged through rather than loaded. The encoded file is written under a
temporary name and renamed, and scratch files are removed whatever happens: a failed or interrupted render never
leaves a partial image.

Before anything is allocated the output is checked against the format's size limits and the free disk space.
"""

from __future__ import annotations

import mmap
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gaussian_field.field import GaussianField
from gaussian_field.image_io import (
    FORMATS,
    OutputFormat,
    encode_pixels,
    output_format,
    quantize,
    quantize_levels,
    resize_alpha,
)
from gaussian_field.memory import memory_budget, memory_size
from gaussian_field.render import render, resolve_geometry

__all__ = [
    "FORMATS",
    "BandedImage",
    "OutputFormat",
    "OutputTooLargeError",
    "WrittenImage",
    "check_output",
    "output_format",
    "render_to_file",
]

#: Float working set of one rendered band (bytes); the band height follows from the output width.
BAND_BYTES = 64 * 2**20
#: Pixel arrays up to this size stay in memory; larger ones are memory-mapped scratch files.
IN_MEMORY_BYTES = 512 * 2**20
#: Formats whose encoder (Pillow) takes the whole image at once: their pixels and Pillow's copy of them are resident
#: together, so such an output must fit the memory budget twice over (PNG and TIFF read a scratch file in rows).
WHOLE_IMAGE_ENCODERS = ("JPEG", "WebP")


@dataclass(frozen=True)
class WrittenImage:
    """An image `render_to_file` wrote: its size (H, W), the render time and the quantise + encode time."""

    path: Path
    size: tuple[int, int]
    render_seconds: float
    write_seconds: float


class OutputTooLargeError(ValueError):
    """An output that the format or the disk cannot hold; the message says which limit and what to do."""


def pixel_bytes(height: int, width: int, bits: int, channels: int = 3) -> int:
    return height * width * channels * (bits // 8)


def check_output(
    path: str | os.PathLike,
    height: int,
    width: int,
    bits: int,
    in_memory_bytes: int = IN_MEMORY_BYTES,
    channels: int = 3,
) -> bool:
    """Refuse an output the format or the disk cannot hold; returns True when its pixels go to a scratch file."""
    fmt = output_format(path, bits)
    name = Path(path).name
    if max(height, width) > fmt.max_side:
        raise OutputTooLargeError(
            f"output {name} would be {width}x{height} px, over the {fmt.name} limit of {fmt.max_side} px per side; "
            f"ask for a smaller --scale/--size" + ("" if fmt.name == "TIFF" else " or write .tif")
        )
    raw = pixel_bytes(height, width, bits, channels)
    if fmt.name in WHOLE_IMAGE_ENCODERS and 2 * raw > memory_budget():
        raise OutputTooLargeError(
            f"output {name} would be {width}x{height} px: the {fmt.name} encoder holds the whole image, about "
            f"{memory_size(2 * raw)} with its pixels, over the memory budget of {memory_size(memory_budget())}; "
            "write .png or .tif (written band by band) or ask for a smaller --scale/--size"
        )
    scratch = raw > in_memory_bytes
    needed = raw * (2 if scratch else 1)  # the encoded file is at most about the raw size (PNG, TIFF)
    folder = Path(path).absolute().parent
    while not folder.exists():  # the output folder may not exist yet: its nearest existing parent's disk
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise OutputTooLargeError(
            f"output {name} would be {width}x{height} px and needs about {memory_size(needed)} on disk, but "
            f"only {memory_size(free)} is free there; ask for a smaller --scale/--size"
        )
    return scratch


def band_height(width: int, itemsize: int, budget: int = BAND_BYTES) -> int:
    """Rows per band so that one band's float render stays within `budget` bytes."""
    return max(1, budget // max(1, 3 * width * itemsize))


class BandedImage:
    """One output file filled band of rows by band of rows: its pixel array (in memory, or a memory-mapped scratch file
    for large ones), then the file written whole under a temporary name and renamed. Use as a context manager: an
    error or interrupt removes every partial file. `render_to_file` fills one from one field; a streamed upscale
    fills several from windows of a field that is never whole (`sr_model.inference.streaming`).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        size: tuple[int, int],
        bits: int = 8,
        in_memory_bytes: int = IN_MEMORY_BYTES,
        alpha: np.ndarray | None = None,
        icc_profile: bytes | None = None,
        quality: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.height, self.width = size
        self.bits, self.alpha, self.icc_profile, self.quality = bits, alpha, icc_profile, quality
        self.format = output_format(self.path, bits)
        if alpha is not None and not self.format.alpha:
            raise ValueError(f"{self.format.name} cannot hold an alpha channel; write .png, .tif or .webp")
        self.channels = 3 if alpha is None else 4
        self.scratch = check_output(self.path, self.height, self.width, bits, in_memory_bytes, self.channels)
        self.scratch_path = self.path.with_name(f".{self.path.name}.pixels.partial")
        self.tmp = self.path.with_name(f".{self.path.name}.partial{self.path.suffix}")
        self.pixels: np.ndarray | None = None
        self.render_seconds = 0.0
        self.write_seconds = 0.0  # quantising, storing and encoding: the time spent here, whatever runs between

    def __enter__(self) -> BandedImage:
        dtype = {8: np.uint8, 16: np.uint16, 32: np.float32}[self.bits]
        shape = (self.height, self.width, self.channels)
        if self.scratch:
            self.pixels = np.lib.format.open_memmap(self.scratch_path, mode="w+", dtype=dtype, shape=shape)
        else:
            self.pixels = np.empty(shape, dtype=dtype)
        return self

    def put(self, first_row: int, band: torch.Tensor) -> None:
        """Store rows [first_row, first_row + rows) from a (3, rows, W) float render (on any device)."""
        assert self.pixels is not None, "use BandedImage as a context manager"
        start = time.perf_counter()
        levels = quantize(band.cpu(), self.bits)
        rows = slice(first_row, first_row + levels.shape[0])
        self.pixels[rows, :, :3] = levels[..., ::-1] if self.format.bgr else levels
        if self.scratch:
            self._release(rows)
        self.write_seconds += time.perf_counter() - start

    def _release(self, rows: slice) -> None:
        """Write the rows of a memory-mapped pixel array to its file and drop their pages from this process (they are
        read back from the file when the image is encoded), so a large output does not stay resident band by band."""
        pixels = self.pixels
        mapping = getattr(pixels, "_mmap", None)
        if not isinstance(pixels, np.memmap) or mapping is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        row_bytes = self.width * self.channels * pixels.itemsize
        begin = pixels.offset + rows.start * row_bytes
        end = pixels.offset + rows.stop * row_bytes
        begin -= begin % mmap.PAGESIZE  # whole pages only; a page shared with the next band is read back later
        end -= end % mmap.PAGESIZE
        if end > begin:
            mapping.flush(begin, end - begin)
            mapping.madvise(mmap.MADV_DONTNEED, begin, end - begin)

    def finish(self) -> WrittenImage:
        """Add the alpha plane, encode, and rename into place."""
        assert self.pixels is not None, "use BandedImage as a context manager"
        start = time.perf_counter()
        if self.alpha is not None:
            self.pixels[..., 3] = quantize_levels(resize_alpha(self.alpha, self.height, self.width), self.bits)
        encode_pixels(self.pixels, self.tmp, self.format, self.icc_profile, self.quality)
        os.replace(self.tmp, self.path)
        self.write_seconds += time.perf_counter() - start
        return WrittenImage(self.path, (self.height, self.width), self.render_seconds, self.write_seconds)

    def __exit__(self, *exc) -> None:
        self.pixels = None  # closes the memory map before its file is removed
        self.tmp.unlink(missing_ok=True)
        self.scratch_path.unlink(missing_ok=True)


def render_to_file(
    field: GaussianField,
    path: str | os.PathLike,
    scale: float | Sequence[float] | None = None,
    size: Sequence[int] | None = None,
    bits: int = 8,
    backend: str = "auto",
    band_bytes: int = BAND_BYTES,
    in_memory_bytes: int = IN_MEMORY_BYTES,
    alpha: np.ndarray | None = None,
    icc_profile: bytes | None = None,
    quality: int | None = None,
) -> WrittenImage:
    """Render one field (batch of 1) at `scale` or to `size` (H, W) into `path` (see the module doc).

    `alpha`: the LR image's alpha plane (h, w) in [0, 1], upscaled with bicubic to the output size and written
    as a fourth channel (ValueError if the format has none); `icc_profile` is embedded; `quality` for JPEG/WebP.
    """
    if not isinstance(field, GaussianField) or field.batch_size != 1:
        raise ValueError("render_to_file renders one field (a GaussianField with batch size 1)")
    (s_h, s_w), (height, width) = resolve_geometry(field.lr_size, size, scale)
    with BandedImage(path, (height, width), bits, in_memory_bytes, alpha, icc_profile, quality) as image:
        step = band_height(width, field.means.element_size(), band_bytes)
        with torch.no_grad():
            for r0 in range(0, height, step):
                r1 = min(height, r0 + step)
                band_start = time.perf_counter()
                band = render(field, size=(height, width), scale=(s_h, s_w), rows=(r0, r1), backend=backend)
                band = band[0].cpu()  # waits for the device
                image.render_seconds += time.perf_counter() - band_start
                image.put(r0, band)
        return image.finish()
