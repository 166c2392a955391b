"""Image files in and out: the two ends of every job (corpus photos, LR inputs, rendered outputs).

Lives beside the field (a deviation from DESIGN.md's "torch, numpy" for this package, noted in the README)
because both stage 1 (fitting) and the model need one decoder with the same conversions, and no package
below them may host it. Pillow and OpenCV (TIFF, 16-bit PNG) are imported lazily.

Reading always gives float32 RGB in [0, 1], HxWx3: grayscale is replicated, palette expanded, alpha
dropped, 16-bit scaled by 1/65535. Writing is atomic (temporary file, then rename), so a failed or
interrupted write never leaves a partial image behind.

File names need not be UTF-8: OpenCV gets bytes (`imdecode`/`imencode`), never a path, because its path
conversion crashes on surrogate-escaped names. Pillow's decompression-bomb check (headers claiming more
than twice `P2G_MAX_IMAGE_PIXELS`, default Pillow's 89.5 MP) becomes an ImageReadError naming the setting.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: Suffixes scanned as images (lower case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")


class ImageReadError(ValueError):
    """A file that is not a readable image; the message says why."""


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
    return Image


def bomb_error(path, err: Exception) -> ImageReadError:
    """The one-line refusal of an image whose header claims more pixels than the decoder allows."""
    text = str(err).split(" could be decompression bomb")[0]
    return ImageReadError(f"{path}: header claims too many pixels to decode safely ({text}); set "
                          "P2G_MAX_IMAGE_PIXELS to a larger pixel count (or 'none') if the file is trusted")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to float32 RGB in [0, 1] with shape (H, W, 3)."""
    from PIL import UnidentifiedImageError

    Image = configure_pillow()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        if path.suffix.lower() in (".tif", ".tiff") or _is_16bit_colour_png(path):
            return _read_with_opencv(path)  # Pillow would cut 16-bit colour to 8 bits
        with Image.open(path) as img:
            img.load()
            if img.mode == "P" or img.mode in ("LA", "PA", "CMYK", "YCbCr", "HSV", "LAB", "1"):
                img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
            return array_to_rgb_float(np.asarray(img))
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not a recognised image file") from None
    except Image.DecompressionBombError as err:
        raise bomb_error(path, err) from None
    except (OSError, SyntaxError, ValueError, IndexError) as err:
        raise ImageReadError(f"{path}: unreadable image ({err})") from None


def _read_with_opencv(path: Path) -> np.ndarray:
    import cv2

    arr = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise OSError("OpenCV could not decode it")
    if arr.ndim == 3:
        arr = arr[..., [2, 1, 0] + ([3] if arr.shape[-1] == 4 else [])]  # BGR(A) -> RGB(A)
    return array_to_rgb_float(arr)


def _is_16bit_colour_png(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(26)
    return head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 26 and head[24] == 16 and head[25] in (2, 6)


def array_to_rgb_float(arr: np.ndarray) -> np.ndarray:
    """Any decoded pixel array (gray, gray+alpha, RGB, RGBA; bool, 8/16-bit, int32, float) to float32 RGB."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):
        arr = arr[..., :-1]  # drop alpha
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"unsupported pixel layout {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16 or (np.issubdtype(arr.dtype, np.integer) and arr.max(initial=0) > 255):
        return np.clip(arr.astype(np.float32) / 65535.0, 0.0, 1.0)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float32) / 255.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


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
    """Clip to [0, 1] and round to uint8 or uint16."""
    if bits not in (8, 16):
        raise ValueError(f"bit depth must be 8 or 16, got {bits}")
    peak = 255 if bits == 8 else 65535
    arr = np.clip(to_hwc_array(image), 0.0, 1.0)
    return np.round(arr * peak).astype(np.uint8 if bits == 8 else np.uint16)


def write_image(path: str | os.PathLike, image, bits: int = 8) -> Path:
    """Write an RGB float image (values clipped to [0, 1]) atomically; format from the suffix.

    8-bit: PNG, JPEG (quality 95), TIFF, WebP, BMP. 16-bit: PNG or TIFF.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"cannot write {path}: unknown image suffix {suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    if bits == 16 and suffix not in (".png", ".tif", ".tiff"):
        raise ValueError(f"16-bit output needs .png or .tif, not {suffix}")
    data = quantize(image, bits)
    tmp = path.with_name(f".{path.name}.partial{suffix}")
    try:
        if bits == 16:
            import cv2

            ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(data[..., ::-1]))
            if not ok:
                raise OSError(f"OpenCV could not encode {path}")
            tmp.write_bytes(encoded.tobytes())
        else:
            from PIL import Image

            kwargs = {"quality": 95} if suffix in (".jpg", ".jpeg") else {}
            Image.fromarray(data, "RGB").save(tmp, **kwargs)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
