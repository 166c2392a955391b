"""Image files in and out: the two ends of every job (corpus photos, LR inputs, rendered outputs).

Lives beside the field (see ARCHITECTURE.md, "Packages and who imports whom") because both stage 1 (fitting)
and the model need one decoder with the same conversions, and no package below them may host it. Pillow, OpenCV
(16-bit PNG) and tifffile (TIFF) are imported lazily.

Files are read as photographers have them: the EXIF orientation is applied (a phone photo tagged "rotate 90"
comes out upright), and the ICC profile, the alpha channel and the bit depth are kept beside the pixels
(`read_image_file`), so that outputs can carry them. `read_image` gives only the colour: float32 RGB in [0, 1],
HxWx3, grayscale replicated, palette expanded, 16-bit scaled by 1/65535. Writing is atomic (temporary file,
then rename), so a failed or interrupted write never leaves a partial image behind.

File names need not be UTF-8: OpenCV gets bytes (`imdecode`, and `imencode` for such names), never a path it
cannot convert, because its path conversion crashes on surrogate-escaped names.

Every file is opened through `open_image`, the one guarded reader (`read_image_file` and the header reader
`probe_image` are the only ways in): it reads the header (Pillow's format plugins, or tifffile for a TIFF, whatever
the name says), refuses a size over `P2G_MAX_IMAGE_PIXELS` (default about 179 MP, what Pillow refuses by default;
'none' lifts it) with one ImageTooLargeError line naming the file, its size, the limit and the setting, and only
then decodes, so a small file claiming 40000 x 40000 pixels costs a header read, in every format. Decoder
failures become one ImageReadError line; tifffile's log and OpenCV's are kept off the terminal.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import zlib
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gaussian_field.integrity import first_line

#: Suffixes scanned as images (lower case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
#: EXIF/TIFF tag numbers.
ORIENTATION_TAG, ICC_TAG = 0x0112, 34675
#: Quality of lossy outputs when none is asked for.
DEFAULT_QUALITY = 95


def find_image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files (by suffix) under `folder`, recursively, sorted.

    Hidden files and folders (a leading dot) are skipped: they hold editor, OS (macOS ``._photo.jpg``) and
    partial-write files (`write_image`'s ``.name.partial.png``), never the photos a user means.
    """
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in files:
            path = Path(root) / name
            if not name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                found.append(path)
    return sorted(found)


class ImageReadError(ValueError):
    """A file that is not a readable image; the message says why."""


@dataclass(frozen=True)
class ImageFile:
    """A decoded image: colour float32 (H, W, 3) and alpha float32 (H, W) or None, both in [0, 1], upright;
    the file's ICC profile when it describes RGB (else None) and its bits per channel (8, 16, or 32 for float)."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    icc_profile: bytes | None = None
    bits: int = 8


@dataclass(frozen=True)
class ImageProbe:
    """What an image file's header says, upright: size (H, W), bits per channel, alpha, an ICC profile."""

    height: int
    width: int
    bits: int
    has_alpha: bool
    has_icc: bool

    @property
    def size(self) -> tuple[int, int]:
        """(height, width), upright: what plans and pairings need from a header."""
        return self.height, self.width


@dataclass(frozen=True)
class OutputFormat:
    """An output format: bit depths it holds, its limit on width and height, whether it holds an alpha channel,
    whether it is lossy (--quality), and whether its encoder takes BGR (OpenCV) rather than RGB."""

    name: str
    bits: tuple[int, ...]
    max_side: int
    alpha: bool
    lossy: bool
    bgr: bool


#: Output formats by suffix. PNG: libpng's default user limit of 1,000,000 px per side; JPEG: 65,500 px;
#: WebP: 16,383 px; TIFF: 2^32 - 1 (float32 with --bits 32). All but BMP carry an ICC profile.
FORMATS = {
    ".png": OutputFormat("PNG", (8, 16), 1_000_000, alpha=True, lossy=False, bgr=True),
    ".jpg": OutputFormat("JPEG", (8,), 65_500, alpha=False, lossy=True, bgr=False),
    ".jpeg": OutputFormat("JPEG", (8,), 65_500, alpha=False, lossy=True, bgr=False),
    ".tif": OutputFormat("TIFF", (8, 16, 32), 2**32 - 1, alpha=True, lossy=False, bgr=False),
    ".tiff": OutputFormat("TIFF", (8, 16, 32), 2**32 - 1, alpha=True, lossy=False, bgr=False),
    ".webp": OutputFormat("WebP", (8,), 16_383, alpha=True, lossy=True, bgr=False),
    ".bmp": OutputFormat("BMP", (8,), 2**31 - 1, alpha=False, lossy=False, bgr=False),
}


def output_format(path: str | os.PathLike, bits: int = 8) -> OutputFormat:
    """The format for `path`'s suffix, checked against the bit depth; ValueError saying what would work."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"cannot write {Path(path).name}: unknown image suffix {suffix!r}; use .png, .jpg, .tif or .webp"
        )
    fmt = FORMATS[suffix]
    if bits not in fmt.bits:
        holders = sorted({s for s, f in FORMATS.items() if bits in f.bits and s in (".png", ".tif")})
        raise ValueError(
            f"{fmt.name} cannot hold {bits}-bit pixels; use {' or '.join(map(str, fmt.bits))} bits"
            + (f" or a {'/'.join(holders)} output" if holders else "")
        )
    return fmt


#: Pillow's own MAX_IMAGE_PIXELS (1024^3 / 4 / 3): Pillow warns above it and refuses twice it.
PILLOW_MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3
#: The pixel limit when P2G_MAX_IMAGE_PIXELS is unset: what Pillow refuses by default (about 179 MP, an 8-bit RGB
#: image of 0.5 GB, 2.1 GB as the float32 that `read_image` returns).
DEFAULT_MAX_IMAGE_PIXELS = 2 * PILLOW_MAX_IMAGE_PIXELS
MAX_PIXELS_ENV = "P2G_MAX_IMAGE_PIXELS"
#: How a TIFF file starts (classic and BigTIFF, both byte orders): such files are read by tifffile/OpenCV.
TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


class ImageTooLargeError(ImageReadError):
    """An image whose header claims more pixels than P2G_MAX_IMAGE_PIXELS allows: refused before decoding."""


def max_image_pixels() -> int | None:
    """The pixel limit: P2G_MAX_IMAGE_PIXELS (a pixel count; 'none' or 0 for no limit), else the default."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip().lower()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    if text in ("none", "0"):
        return None
    try:
        limit = int(float(text))
    except (ValueError, OverflowError):
        limit = -1
    if limit < 0:
        raise ValueError(f"{MAX_PIXELS_ENV} must be a pixel count or 'none', got {text!r}")
    return limit


def configure_pillow():
    """Pillow's Image module, its own bomb check widened to the pixel limit (None for none), so that it never
    warns about or refuses an image the limit allows; `check_pixel_limit` is what refuses."""
    from PIL import Image

    limit = max_image_pixels()
    Image.MAX_IMAGE_PIXELS = None if limit is None else max(limit, PILLOW_MAX_IMAGE_PIXELS)
    return Image


def check_pixel_limit(path: str | os.PathLike, height: int, width: int) -> None:
    """Raise ImageTooLargeError if a header's height x width is over the pixel limit (before any decoding)."""
    limit, pixels = max_image_pixels(), int(height) * int(width)
    if limit is not None and pixels > limit:
        raise ImageTooLargeError(
            f"{path}: header claims too many pixels to decode safely ({width}x{height} = {pixels:,} pixels, "
            f"limit {limit:,}); if the file is trusted, set {MAX_PIXELS_ENV}={pixels} (or 'none') to read it"
        )


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to float32 RGB in [0, 1] with shape (H, W, 3), EXIF orientation applied."""
    return read_image_file(path).rgb


def read_image_file(path: str | os.PathLike) -> ImageFile:
    """Decode an image file upright, with its alpha channel, ICC profile and bit depth (see the module doc).

    The header is read and checked against the pixel limit first (`open_image`), so a decompression bomb is
    refused before a pixel is decoded."""
    with open_image(path) as (header, img):
        if img is None:  # TIFF
            try:
                arr = _read_with_opencv(header.path)
            except OSError:
                arr = _tifffile().imread(header.path, key=0)  # e.g. float RGBA, which OpenCV refuses
            icc = header.icc
        elif header.probe.bits == 16 and img.format == "PNG":  # Pillow would cut 16-bit colour to 8 bits
            arr, icc = _read_with_opencv(header.path), header.icc
        else:
            img.load()
            icc = img.info.get("icc_profile")
            if img.mode == "P" or img.mode in ("LA", "PA", "CMYK", "YCbCr", "HSV", "LAB", "1"):
                img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
            arr = np.asarray(img)
        arr = apply_orientation(arr, header.orientation)
    rgb, alpha = split_alpha(arr)
    return ImageFile(rgb, alpha, rgb_profile(icc), _bits_of(arr))


def rgb_profile(icc: bytes | None) -> bytes | None:
    """The ICC profile if it describes RGB pixels; a CMYK or gray one does not fit the RGB we decode to."""
    return icc if icc and icc[16:20] == b"RGB " else None


def probe_image(path: str | os.PathLike, verify: bool = False) -> ImageProbe:
    """An image's upright size, bit depth, alpha and ICC profile from its header (`open_image`, so an image over
    the pixel limit raises ImageTooLargeError): the one header reader of the project.

    `verify` also checks the structure Pillow can check without decoding (every PNG chunk's CRC, so a cut PNG
    is found when a folder is scanned rather than when its pixels are needed)."""
    with open_image(path) as (header, img):
        if verify and img is not None:
            img.verify()
        return header.probe


@dataclass(frozen=True)
class ImageHeader:
    """What `open_image` read before decoding: the probe, the EXIF orientation (1..8) and the raw ICC profile."""

    path: Path
    probe: ImageProbe
    orientation: int
    icc: bytes | None


#: What decoders raise on a damaged file (zlib's and struct's errors are neither OSError nor ValueError).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, IndexError, KeyError, TypeError, EOFError, zlib.error, struct.error)


@contextmanager
def open_image(path: str | os.PathLike):
    """The one guarded way into an image file: yields (ImageHeader, the open Pillow image or None for a TIFF)
    once the header's size has passed `check_pixel_limit`. Within it, decoder errors become one-line
    ImageReadErrors naming the file and the decoders' own messages stay off the terminal."""
    from PIL import UnidentifiedImageError

    Image = configure_pillow()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with _quiet_decoders(), open(path, "rb") as fh:
            if fh.read(4) in TIFF_MAGIC:
                yield _tiff_header(path), None
            else:
                with _open_with_pillow(fh, path) as img:
                    yield _pillow_header(path, img), img
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not a recognised image file") from None
    except Image.DecompressionBombError as err:  # a Pillow plugin checking a size of its own (MPO, GIF frames)
        raise ImageTooLargeError(
            f"{path}: header claims too many pixels to decode safely ({err}); if the file is trusted, set "
            f"{MAX_PIXELS_ENV} to a larger pixel count (or 'none') to read it"
        ) from None
    except DECODE_ERRORS as err:
        raise ImageReadError(f"{path}: unreadable image ({first_line(err)})") from None


@contextmanager
def _open_with_pillow(fh, path: Path):
    """`PIL.Image.open`'s search of its format plugins, less its decompression-bomb check: `_pillow_header`
    checks the size itself, naming the file and its size in pixels whatever the size is."""
    from PIL import Image, UnidentifiedImageError

    fh.seek(0)
    prefix = fh.read(16)
    for load_plugins in (Image.preinit, Image.init):
        load_plugins()
        for name in Image.ID:
            factory, accept = Image.OPEN[name]
            accepted = accept is None or accept(prefix)
            if isinstance(accepted, str) or not accepted:
                continue
            fh.seek(0)
            try:
                img = factory(fh, os.fspath(path))
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue  # not this format (what Image.open does too)
            with img:
                yield img
            return
    raise UnidentifiedImageError(f"cannot identify image file {path!r}")


def _pillow_header(path: Path, img) -> ImageHeader:
    """The header of a file Pillow opened, its size checked against the limit before anything else is read."""
    width, height = img.size
    check_pixel_limit(path, height, width)
    orientation = _pillow_orientation(img)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    bits = 8
    if img.format == "PNG":
        bits = _png_bit_depth(path) or 8
    elif img.mode in ("I;16", "I", "F"):
        bits = 16
    alpha = "A" in img.mode or "transparency" in img.info
    icc = img.info.get("icc_profile")
    return ImageHeader(path, ImageProbe(height, width, bits, alpha, rgb_profile(icc) is not None), orientation, icc)


def _pillow_orientation(img) -> int:
    """The EXIF orientation from the header. A PNG's EXIF comes before its pixel data (the PNG specification's
    place for eXIf); Pillow would decode the whole image to look for one after them, so none there is read."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    return int(img.getexif().get(ORIENTATION_TAG, 1))


def _tiff_header(path: Path) -> ImageHeader:
    """The first page's header, read by tifffile (which also decodes what OpenCV cannot); checked against the
    pixel limit."""
    with _tifffile().TiffFile(path) as tif:
        page = tif.pages.first
        height, width = int(page.imagelength), int(page.imagewidth)
        check_pixel_limit(path, height, width)
        orientation = int(page.tags.valueof(274, 1))
        icc = page.tags.valueof(ICC_TAG)
        bits = 32 if page.sampleformat == 3 else (16 if page.bitspersample > 8 else 8)
        alpha = page.tags.valueof(338) is not None
    if orientation in (5, 6, 7, 8):
        height, width = width, height
    icc = bytes(icc) if icc is not None else None
    return ImageHeader(path, ImageProbe(height, width, bits, alpha, rgb_profile(icc) is not None), orientation, icc)


def _tifffile():
    import tifffile

    return tifffile


#: Set while `open_image` reads a file in this thread/task: tifffile's log records are dropped meanwhile.
_READING_IMAGE: ContextVar[bool] = ContextVar("reading_image", default=False)


def _not_while_reading(record: logging.LogRecord) -> bool:
    return not _READING_IMAGE.get()


@contextmanager
def _quiet_decoders():
    """tifffile's log records (about a damaged file, which the caller reports in one line) dropped meanwhile, in
    this thread only (a filter reading a context variable, not the logger's level, which threads share)."""
    tifffile_log = logging.getLogger("tifffile")
    if _not_while_reading not in tifffile_log.filters:
        tifffile_log.addFilter(_not_while_reading)
    token = _READING_IMAGE.set(True)
    try:
        yield
    finally:
        _READING_IMAGE.reset(token)


def _read_with_opencv(path: Path) -> np.ndarray:
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # failures come back as None or cv2.error
    # imread never applies the EXIF orientation (the caller does; imdecode may apply it for TIFF). OpenCV's path
    # conversion crashes on names that are not UTF-8, so those are decoded from bytes.
    try:
        if _utf8_path(path):
            arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        else:
            arr = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:  # e.g. its own pixel limit (2^30) when P2G_MAX_IMAGE_PIXELS is 'none'
        raise OSError(f"OpenCV could not decode it: {first_line(err)}") from None
    if arr is None:
        raise OSError("OpenCV could not decode it")
    if arr.ndim == 3:
        arr = arr[..., [2, 1, 0] + ([3] if arr.shape[-1] == 4 else [])]  # BGR(A) -> RGB(A)
    return arr


def _png_bit_depth(path: Path) -> int | None:
    with open(path, "rb") as fh:
        head = fh.read(26)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 26:
        return head[24]
    return None


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a decoded (H, W[, C]) array upright for an EXIF orientation 1..8 (what Pillow's exif_transpose does)."""
    transforms = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: a.swapaxes(0, 1)[:, ::-1],
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: a.swapaxes(0, 1)[::-1],
    }
    transform = transforms.get(int(orientation))
    return arr if transform is None else np.ascontiguousarray(transform(arr))


def _bits_of(arr: np.ndarray) -> int:
    if np.issubdtype(arr.dtype, np.floating):
        return 32
    if arr.dtype == np.uint16 or (np.issubdtype(arr.dtype, np.integer) and arr.max(initial=0) > 255):
        return 16
    return 8


def _to_unit_float(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16 or (np.issubdtype(arr.dtype, np.integer) and arr.max(initial=0) > 255):
        return np.clip(arr.astype(np.float32) / 65535.0, 0.0, 1.0)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float32) / 255.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def split_alpha(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Any decoded pixel array (gray, gray+alpha, RGB, RGBA; bool, 8/16-bit, int32, float) to float32 RGB
    (H, W, 3) and float32 alpha (H, W) or None, both in [0, 1]."""
    arr = np.asarray(arr)
    alpha = None
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):
        unit = _to_unit_float(arr)  # one scale for colour and alpha (a 16-bit file's alpha is 16-bit too)
        return _rgb_layout(unit[..., :-1]), np.ascontiguousarray(unit[..., -1])
    return _rgb_layout(_to_unit_float(arr)), alpha


def _rgb_layout(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"unsupported pixel layout {arr.shape}")
    return arr


def array_to_rgb_float(arr: np.ndarray) -> np.ndarray:
    """Any decoded pixel array (gray, gray+alpha, RGB, RGBA; bool, 8/16-bit, int32, float) to float32 RGB."""
    return split_alpha(arr)[0]


def to_hwc_array(image) -> np.ndarray:
    """Accept (3, H, W) or (H, W, 3) arrays/tensors (torch too), return float HxWx3 numpy."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3) or (3, H, W), got shape {arr.shape}")
    return arr


def quantize(image, bits: int = 8) -> np.ndarray:
    """Clip to [0, 1] and round to uint8 or uint16; bits=32 gives float32 (clipped, not rounded)."""
    if bits not in (8, 16, 32):
        raise ValueError(f"bit depth must be 8, 16 or 32 (float), got {bits}")
    arr = np.clip(to_hwc_array(image), 0.0, 1.0)
    return quantize_levels(arr, bits)


def quantize_levels(arr: np.ndarray, bits: int) -> np.ndarray:
    """Values already in [0, 1] (any shape) to the storage type of `bits` (uint8, uint16, float32)."""
    if bits == 32:
        return np.asarray(arr, dtype=np.float32)
    peak = 255 if bits == 8 else 65535
    return np.round(np.asarray(arr) * peak).astype(np.uint8 if bits == 8 else np.uint16)


def resize_alpha(alpha: np.ndarray, height: int, width: int) -> np.ndarray:
    """An alpha plane (h, w) in [0, 1] upscaled with bicubic (OpenCV, pixel centres as the field's) to (H, W)."""
    import cv2

    if alpha.shape == (height, width):
        return np.asarray(alpha, dtype=np.float32)
    resized = cv2.resize(np.asarray(alpha, dtype=np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(resized, 0.0, 1.0)


def write_image(
    path: str | os.PathLike,
    image,
    bits: int = 8,
    alpha: np.ndarray | None = None,
    icc_profile: bytes | None = None,
    quality: int | None = None,
) -> Path:
    """Write an RGB float image (values clipped to [0, 1]) atomically; format from the suffix.

    8-bit: PNG, JPEG, TIFF, WebP. 16-bit: PNG or TIFF; 32-bit float: TIFF. `alpha` (H, W) in [0, 1] is written
    where the format holds it (ValueError for JPEG: the caller decides what to tell); `icc_profile` is embedded;
    `quality` (1-100, default 95) sets JPEG/WebP compression (WebP at 100 is lossless).
    """
    path = Path(path)
    fmt = output_format(path, bits)
    rgb = quantize(image, bits)
    if alpha is not None:
        if not fmt.alpha:
            raise ValueError(f"{fmt.name} cannot hold an alpha channel; write .png, .tif or .webp")
        rgb = np.concatenate([rgb, quantize_levels(np.clip(alpha, 0.0, 1.0), bits)[..., None]], axis=-1)
    pixels = rgb[..., [2, 1, 0, 3][: rgb.shape[-1]]] if fmt.bgr else rgb
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    try:
        encode_pixels(np.ascontiguousarray(pixels), tmp, fmt, icc_profile, quality)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_quality(quality: int | None) -> None:
    if quality is not None and not 1 <= int(quality) <= 100:
        raise ValueError(f"--quality must be between 1 and 100, got {quality}")


def encode_pixels(
    pixels: np.ndarray, path: Path, fmt: OutputFormat, icc_profile: bytes | None = None, quality: int | None = None
) -> None:
    """Encode (H, W, 3|4) pixels, already in the format's channel order and storage type, into `path`.

    Read sequentially, so a memory-mapped array is paged through rather than loaded (PNG, TIFF).
    """
    check_quality(quality)
    channels = pixels.shape[-1]
    if fmt.name == "TIFF":
        import tifffile

        tifffile.imwrite(
            path,
            pixels,
            photometric="rgb",
            extrasamples=(2,) if channels == 4 else None,
            iccprofile=icc_profile,
            bigtiff=pixels.nbytes > 2**32 - 2**25,
        )
    elif fmt.name == "PNG":
        import cv2

        if _utf8_path(path):
            written = cv2.imwrite(str(path), pixels)
        else:  # OpenCV's path conversion crashes on surrogate-escaped names: encode in memory instead
            written, encoded = cv2.imencode(".png", pixels)
            if written:
                path.write_bytes(encoded.tobytes())
        if not written:
            raise OSError(f"OpenCV could not write {path.name} (PNG, {pixels.shape[1]}x{pixels.shape[0]} px)")
        if icc_profile:
            _insert_png_icc(path, icc_profile)
    else:
        from PIL import Image

        options: dict[str, int | bool | bytes] = {}
        if fmt.lossy:
            options["quality"] = DEFAULT_QUALITY if quality is None else int(quality)
            if fmt.name == "WebP" and options["quality"] == 100:
                options["lossless"] = True
            if icc_profile:
                options["icc_profile"] = icc_profile
        image = Image.fromarray(np.ascontiguousarray(pixels), "RGBA" if channels == 4 else "RGB")
        image.save(path, format=fmt.name.upper(), **options)


def _utf8_path(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _insert_png_icc(path: Path, icc_profile: bytes) -> None:
    """Add an iCCP chunk right after IHDR (OpenCV writes none), streaming the rest of the file."""
    data = b"ICC profile\0\0" + zlib.compress(icc_profile)
    chunk = struct.pack(">I", len(data)) + b"iCCP" + data + struct.pack(">I", zlib.crc32(b"iCCP" + data))
    staged = path.with_name(path.name + ".icc")
    try:
        with open(path, "rb") as src, open(staged, "wb") as dst:
            head = src.read(33)  # signature (8) + IHDR chunk (25)
            if head[12:16] != b"IHDR":
                raise OSError(f"{path.name}: unexpected PNG layout, cannot add the ICC profile")
            dst.write(head + chunk)
            shutil.copyfileobj(src, dst, 16 * 2**20)
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
