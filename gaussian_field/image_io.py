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
cannot convert, because its path conversion crashes on surrogate-escaped names. Pillow's decompression-bomb
check (headers claiming more than twice `P2G_MAX_IMAGE_PIXELS`, default Pillow's 89.5 MP) becomes an
ImageReadError naming the setting.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


#: Pillow's own MAX_IMAGE_PIXELS (1024^3 / 4 / 3), restored whenever P2G_MAX_IMAGE_PIXELS is unset, so a library or
#: script that changed the global earlier in the process does not change what is refused here.
PILLOW_MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3


def configure_pillow():
    """Pillow's Image module with the pixel limit from P2G_MAX_IMAGE_PIXELS (an integer, or "none")."""
    from PIL import Image

    limit = os.environ.get("P2G_MAX_IMAGE_PIXELS", "").strip().lower()
    if limit in ("none", "0"):
        Image.MAX_IMAGE_PIXELS = None
    elif limit:
        try:
            Image.MAX_IMAGE_PIXELS = int(float(limit))
        except ValueError:
            raise ValueError(f"P2G_MAX_IMAGE_PIXELS must be a pixel count or 'none', got {limit!r}") from None
    else:
        Image.MAX_IMAGE_PIXELS = PILLOW_MAX_IMAGE_PIXELS
    return Image


def bomb_error(path, err: Exception) -> ImageReadError:
    """The one-line refusal of an image whose header claims more pixels than the decoder allows."""
    text = str(err).split(" could be decompression bomb")[0]
    return ImageReadError(
        f"{path}: header claims too many pixels to decode safely ({text}); set "
        "P2G_MAX_IMAGE_PIXELS to a larger pixel count (or 'none') if the file is trusted"
    )


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to float32 RGB in [0, 1] with shape (H, W, 3), EXIF orientation applied."""
    return read_image_file(path).rgb


def read_image_file(path: str | os.PathLike) -> ImageFile:
    """Decode an image file upright, with its alpha channel, ICC profile and bit depth (see the module doc)."""
    from PIL import ImageOps, UnidentifiedImageError

    Image = configure_pillow()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            arr, orientation, icc = _read_tiff(path)
            arr = apply_orientation(arr, orientation)
        elif _png_bit_depth(path) == 16:  # Pillow would cut 16-bit colour to 8 bits
            with Image.open(path) as img:
                orientation, icc = img.getexif().get(ORIENTATION_TAG, 1), img.info.get("icc_profile")
            arr = apply_orientation(_read_with_opencv(path), orientation)
        else:
            with Image.open(path) as img:
                img.load()
                icc = img.info.get("icc_profile")
                img = ImageOps.exif_transpose(img)
                if img.mode == "P" or img.mode in ("LA", "PA", "CMYK", "YCbCr", "HSV", "LAB", "1"):
                    img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
                arr = np.asarray(img)
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not a recognised image file") from None
    except Image.DecompressionBombError as err:
        raise bomb_error(path, err) from None
    except (OSError, SyntaxError, ValueError, IndexError, KeyError) as err:
        raise ImageReadError(f"{path}: unreadable image ({err})") from None
    rgb, alpha = split_alpha(arr)
    return ImageFile(rgb, alpha, rgb_profile(icc), _bits_of(arr))


def rgb_profile(icc: bytes | None) -> bytes | None:
    """The ICC profile if it describes RGB pixels; a CMYK or gray one does not fit the RGB we decode to."""
    return icc if icc and icc[16:20] == b"RGB " else None


def probe_image(path: str | os.PathLike) -> ImageProbe:
    """An image's upright size, bit depth, alpha and ICC profile from its header (full decode only where Pillow
    cannot read the header)."""
    from PIL import UnidentifiedImageError

    Image = configure_pillow()
    path = Path(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8):
                width, height = height, width
            bits = 8
            if img.format == "PNG":
                bits = _png_bit_depth(path) or 8
            elif img.format == "TIFF":
                sample_bits = img.tag_v2.get(258, 8)
                sample_bits = max(sample_bits) if isinstance(sample_bits, tuple) else sample_bits
                bits = 32 if img.tag_v2.get(339) in (3, (3,) * 3, (3,) * 4) else (16 if sample_bits > 8 else 8)
            elif img.mode in ("I;16", "I", "F"):
                bits = 16
            alpha = "A" in img.mode or "transparency" in img.info
            if img.format == "TIFF" and img.tag_v2.get(338) is not None:
                alpha = True
            return ImageProbe(height, width, bits, alpha, rgb_profile(img.info.get("icc_profile")) is not None)
    except Image.DecompressionBombError as err:
        raise bomb_error(path, err) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        pass  # a file only OpenCV/tifffile decode: decode it fully, which raises if it is broken
    image = read_image_file(path)
    height, width = image.rgb.shape[:2]
    return ImageProbe(height, width, image.bits, image.alpha is not None, image.icc_profile is not None)


def _read_tiff(path: Path) -> tuple[np.ndarray, int, bytes | None]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        orientation = page.tags.valueof(274, 1)
        icc = page.tags.valueof(ICC_TAG)
    try:
        arr = _read_with_opencv(path)
    except OSError:
        arr = tifffile.imread(path, key=0)  # e.g. float RGBA, which OpenCV refuses
    return arr, int(orientation), bytes(icc) if icc is not None else None


def _read_with_opencv(path: Path) -> np.ndarray:
    import cv2

    # imread never applies the EXIF orientation (the caller does; imdecode may apply it for TIFF). OpenCV's path
    # conversion crashes on names that are not UTF-8, so those are decoded from bytes.
    if _utf8_path(path):
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    else:
        arr = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
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
